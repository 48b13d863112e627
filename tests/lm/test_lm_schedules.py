"""LR schedules: values at every phase boundary, task restarts, the anneal branch."""

import math

import pytest
import torch

from continual.strategies.schedules import (
    BranchLR,
    ConstantSchedule,
    CosineSchedule,
    InfiniteSchedule,
    RepeatedCosineSchedule,
    ScheduledLR,
    WSDSchedule,
    build_schedule,
)
from continual.types import ConfigError

MAX, MIN, CONST = 3e-4, 3e-5, 1.65e-4


def test_constant_warms_up_then_holds():
    s = ConstantSchedule(eta=1e-3, warmup_steps=10)
    assert s.lr(0) == pytest.approx(1e-4)
    assert s.lr(9) == pytest.approx(1e-3)
    assert s.lr(10_000) == pytest.approx(1e-3)


def test_cosine_runs_once_from_max_to_min():
    s = CosineSchedule(warmup_fraction=0.1, task_steps=[50, 50])
    assert s.lr(9) == pytest.approx(MAX)
    assert s.lr(10) == pytest.approx(MAX)
    assert s.lr(99) == pytest.approx(MIN)
    assert s.lr(50) < MAX  # no restart at the second task


def test_repeated_cosine_rewarms_at_each_task():
    s = RepeatedCosineSchedule(warmup_fraction=0.1, task_steps=[100, 200])
    assert s.lr(0) == pytest.approx(MAX / 10)
    assert s.lr(9) == pytest.approx(MAX)
    assert s.lr(99) == pytest.approx(MIN)
    assert s.lr(100) == pytest.approx(MAX / 20)  # task 2: warm-up of 20 steps restarts
    assert s.lr(119) == pytest.approx(MAX)
    assert s.lr(299) == pytest.approx(MIN)


def test_repeated_cosine_midpoint_is_mean_of_max_and_min():
    s = RepeatedCosineSchedule(warmup_fraction=0.0, task_steps=[101])
    assert s.lr(50) == pytest.approx((MAX + MIN) / 2)


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
def test_wsd_phase_boundaries(shape):
    s = WSDSchedule(warmup_fraction=0.1, decay_fraction=0.2, decay_shape=shape, task_steps=[100])
    assert s.lr(9) == pytest.approx(MAX)
    assert s.lr(79) == pytest.approx(MAX)  # last stable step
    assert MIN < s.lr(80) < MAX
    assert s.lr(99) == pytest.approx(MIN)


def test_wsd_per_task_restarts_and_once_does_not():
    per_task = WSDSchedule(warmup_fraction=0.1, decay_fraction=0.2, task_steps=[100, 100])
    once = WSDSchedule(warmup_fraction=0.1, decay_fraction=0.2, per_task=False,
                       task_steps=[100, 100])
    assert per_task.lr(99) == pytest.approx(MIN) and per_task.lr(100) == pytest.approx(MAX / 10)
    assert once.lr(99) == pytest.approx(MAX) and once.lr(199) == pytest.approx(MIN)


def test_infinite_cosine_cooldown_reaches_const_and_stays_across_tasks():
    s = InfiniteSchedule(warmup_fraction=0.1, cooldown_fraction=0.5, task_steps=[100, 100])
    assert s.phase_ends() == (10, 60)
    assert s.lr(9) == pytest.approx(MAX)
    assert s.lr(10) == pytest.approx(MAX)
    assert s.lr(35) == pytest.approx((MAX + CONST) / 2)
    assert s.lr(60) == pytest.approx(CONST)
    assert s.lr(100) == pytest.approx(CONST)  # no re-warm at the next task
    assert s.lr(10_000) == pytest.approx(CONST)


def test_infinite_inverse_sqrt_cooldown_is_monotone_between_max_and_const():
    s = InfiniteSchedule(warmup_fraction=0.1, cooldown="inv_sqrt", alpha=10.0, task_steps=[100])
    curve = [s.lr(t) for t in range(10, 61)]
    assert curve[0] == pytest.approx(MAX)
    assert curve[-1] == pytest.approx(CONST)
    assert all(a >= b for a, b in zip(curve, curve[1:]))
    # inverse-sqrt drops fast first: below the cosine cool-down a quarter of the way in
    cos = InfiniteSchedule(warmup_fraction=0.1, task_steps=[100])
    assert s.lr(22) < cos.lr(22)


def test_infinite_anneal_branch_goes_from_const_to_min_exponentially():
    s = InfiniteSchedule(anneal_fraction=0.1, task_steps=[200])
    n = s.anneal_steps(0)
    assert n == 20
    assert s.anneal_lr(n - 1, n) == pytest.approx(MIN)
    assert s.anneal_lr(n // 2 - 1, n) == pytest.approx(math.sqrt(CONST * MIN))


def test_scheduled_lr_sets_optimizer_lr_per_step_and_scales_groups():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr_scale": 10.0}], lr=1.0)
    sched = ScheduledLR(opt, RepeatedCosineSchedule(warmup_fraction=0.1, task_steps=[100]))
    assert opt.param_groups[0]["lr"] == pytest.approx(MAX / 10)
    for _ in range(9):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(MAX)
    assert opt.param_groups[1]["lr"] == pytest.approx(10 * MAX)


def test_branch_lr_drives_the_anneal():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    branch = BranchLR(opt, InfiniteSchedule(task_steps=[10]), n_steps=5)
    for _ in range(4):
        branch.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(MIN)


def test_bad_configurations_raise_config_error():
    with pytest.raises(ConfigError, match="task_steps"):
        RepeatedCosineSchedule()
    with pytest.raises(ConfigError, match="eta_const"):
        InfiniteSchedule(eta_const=1.0, task_steps=[10])
    with pytest.raises(ConfigError, match="unknown schedule"):
        build_schedule("step", task_steps=[10])


@pytest.mark.parametrize("n_steps", [1, 7, 11, 37, 250])  # 10 (pct_start * N == 1): torch divides by 0
def test_one_cycle_matches_torch_one_cycle_lr_step_by_step(n_steps):
    """The official CKL code's OneCycleLR(pct_start=0.1, linear, no momentum cycling)."""
    from continual.strategies.schedules import OneCycleSchedule

    max_lr = 1e-3
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=max_lr)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=n_steps, pct_start=0.1,
                                              anneal_strategy="linear", cycle_momentum=False)
    torch_lrs = [opt.param_groups[0]["lr"]]
    for _ in range(n_steps - 1):
        opt.step()
        ref.step()
        torch_lrs.append(opt.param_groups[0]["lr"])
    tasks = [n_steps // 2, n_steps - n_steps // 2] if n_steps > 1 else [1]  # spans every task
    ours = OneCycleSchedule(eta_max=max_lr, task_steps=tasks)
    assert ours.curve(n_steps) == pytest.approx(torch_lrs, rel=1e-12, abs=1e-18)


def test_one_cycle_peaks_at_step_zero_where_torch_divides_by_zero():
    s = build_schedule("one_cycle", task_steps=[10])
    assert s.lr(0) == pytest.approx(1.0) and s.lr(9) == pytest.approx(1 / 25 / 1e4)


def test_one_cycle_starts_at_a_25th_peaks_after_a_tenth_and_ends_at_a_250000th():
    s = build_schedule("one_cycle", task_steps=[60, 40])
    assert s.lr(0) == pytest.approx(1 / 25)
    assert s.lr(9) == pytest.approx(1.0)
    assert max(s.curve(100)) == s.lr(9)
    assert s.lr(99) == pytest.approx(1 / 25 / 1e4)
    assert s.lr(500) == s.lr(99)  # past the end it stays at the floor (torch raises)
    assert not s.needs_boundaries


def test_one_cycle_refuses_a_full_warm_up():
    from continual.strategies.schedules import OneCycleSchedule

    with pytest.raises(ConfigError, match="pct_start"):
        OneCycleSchedule(pct_start=1.0, task_steps=[10])


def test_adafactor_is_built_as_the_official_ckl_code_builds_it():
    from transformers.optimization import Adafactor

    from continual.strategies.base import make_optimizer

    params = [torch.nn.Parameter(torch.ones(4, 3))]
    opt = make_optimizer(params, "adafactor", lr=1e-3, weight_decay=0.01)
    group = opt.param_groups[0]
    assert isinstance(opt, Adafactor) and group["lr"] == 1e-3 and group["weight_decay"] == 0.01
    assert (group["scale_parameter"], group["relative_step"], group["warmup_init"]) == (False, False, False)
    params[0].grad = torch.ones(4, 3)
    opt.step()
    assert torch.all(params[0] < 1)  # a fixed-lr step the schedule can drive
    with pytest.raises(ConfigError, match="momentum"):
        make_optimizer(params, "adafactor", lr=1e-3, momentum=0.9)
