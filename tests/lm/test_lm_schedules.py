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
