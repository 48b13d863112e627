"""Joint training (strategies/joint.py): the default is a real upper bound; the equal-steps
variant keeps its own name; refits on the union are guarded like every other step."""

from __future__ import annotations

import math

import pytest
import torch

from continual import streams
from continual.models import build_model
from continual.runner import Runner
from continual.strategies.joint import Joint
from continual.testing import check_strategy
from continual.types import NonFiniteLoss, TaskInfo


def _run_config(strategy: str, tmp_path, *overrides: str) -> dict:
    from hydra import compose, initialize_config_module

    from continual.config import register_configs
    from continual.experiment import run_experiment

    register_configs()
    with initialize_config_module(config_module="continual.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            f"strategy={strategy}", "seed=0", "log.console=false", *overrides])
    return run_experiment(cfg, out_dir=str(tmp_path / strategy), report=False)


def test_the_default_joint_beats_er_on_split_mnist(tmp_path):
    # the default stream: Split-MNIST, 5 tasks, batches of 10, one pass; measured 0.907 vs 0.747
    joint = _run_config("joint", tmp_path)
    er = _run_config("er", tmp_path)
    assert joint["stream"] == er["stream"] and joint["n_tasks"] == 5
    assert joint["acc"] > er["acc"] + 0.05


def _digits(**presentation) -> streams.Stream:
    return streams.class_incremental("digits", n_tasks=5, batch_size=10, seed=0, **presentation)


def _joint(stream, **options) -> Joint:
    torch.manual_seed(0)
    return Joint(build_model("mlp", stream.input_shape, stream.n_classes, hidden=32), lr=0.05,
                 **options)


def _count_steps(strategy: Joint) -> list[int]:
    calls = [0]
    step = strategy.optimizer.step

    def counted(*args, **kwargs):
        calls[0] += 1
        return step(*args, **kwargs)

    strategy.optimizer.step = counted
    return calls


def _first_task(strategy: Joint, stream) -> TaskInfo:
    seg = stream.segments[0]
    info = TaskInfo(seg.task, stream.tasks[seg.task].classes, stream.n_classes, 0)
    strategy.on_task_start(info)
    for b in stream.batches(seg):
        strategy.observe(b)
    return info


def test_each_task_end_refits_once_on_the_union_in_stream_sized_minibatches():
    stream = _digits()
    s = _joint(stream, refit_epochs=2)
    info = _first_task(s, stream)
    calls = _count_steps(s)
    s.on_task_end(info)
    assert calls[0] == 2 * math.ceil(s.n / 10)
    s.on_task_end(info)  # nothing new since: no second refit
    s.finalize()
    assert calls[0] == 2 * math.ceil(s.n / 10)


def test_joint_equal_steps_takes_one_step_per_batch_and_never_refits():
    stream = _digits()
    s = _joint(stream, refit_epochs=0)
    calls = _count_steps(s)
    info = _first_task(s, stream)
    s.on_task_end(info)
    s.finalize()
    assert calls[0] == len(list(stream.batches(stream.segments[0])))


def test_on_a_task_free_stream_the_union_is_refitted_at_the_end(tmp_path):
    stream = _digits(boundaries="hidden")
    s = _joint(stream)
    calls = _count_steps(s)
    Runner(stream, s, out_dir=str(tmp_path)).run()
    assert s.n_refitted == s.n == len(stream)
    assert calls[0] == stream.n_steps() + math.ceil(len(stream) / 10)


def test_a_nan_minibatch_in_the_refit_is_skipped_and_counted():
    stream = _digits()
    s = _joint(stream)
    info = _first_task(s, stream)
    s._append(torch.full((1, *stream.input_shape), float("nan")), torch.tensor([0]))
    s.on_task_end(info)
    assert s.skipped_nonfinite_hook_steps == 1
    assert s.summary() == {"skipped_nonfinite_hook_steps": 1}
    assert all(torch.isfinite(p).all() for p in s.model.parameters())


def test_under_on_nan_stop_a_nan_in_the_refit_raises_naming_it():
    stream = _digits()
    s = _joint(stream)
    s.check_each_step = False  # what the runner sets under on_nan=stop
    info = _first_task(s, stream)
    s._append(torch.full((1, *stream.input_shape), float("nan")), torch.tensor([0]))
    with pytest.raises(NonFiniteLoss, match="Joint's refit on the union"):
        s.on_task_end(info)


@pytest.mark.parametrize("refit_epochs", [0, 1])
def test_both_joints_pass_the_conformance_kit(refit_epochs):
    results = check_strategy(Joint, {"lr": 0.05, "refit_epochs": refit_epochs})
    assert set(results.values()) == {"passed"}
