"""TAME's options beyond the paper (strategies/tame/): the ``max_experts`` cap, ``clip_window``
and ``prune=False``."""

from __future__ import annotations

import pytest
import torch

from continual.models import build_model
from continual.models.parameters import count_parameters
from continual.strategies.tame import TAME
from continual.streams.datasets import from_arrays
from continual.streams.generators import class_incremental
from continual.types import Batch, ConfigError

DIM, N_CLASSES = 16, 4


def tame(**options) -> TAME:
    torch.manual_seed(0)
    model = build_model("mlp", (DIM,), N_CLASSES, hidden=32, depth=1)
    defaults = dict(window=20, lr=0.01, selector_epochs=20, prune_epochs=5, selector_capacity=200,
                    prune_capacity=50)
    return TAME(model, **{**defaults, **options})


def batch(seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(20, DIM, generator=g), torch.randint(0, N_CLASSES, (20,), generator=g))


def two_task_stream():
    """Two tasks of two well-separated Gaussian classes each, task-free; 30 steps a task."""
    g = torch.Generator().manual_seed(0)
    centres = 3.0 * torch.randn(N_CLASSES, DIM, generator=g)

    def draw(n):
        y = torch.arange(N_CLASSES).repeat_interleave(n)
        return centres[y] + 0.5 * torch.randn(len(y), DIM, generator=g), y

    (xtr, ytr), (xte, yte) = draw(60), draw(20)
    data = from_arrays(xtr, ytr, xte, yte, name="blobs", n_classes=N_CLASSES)
    return class_incremental(dataset=data, n_tasks=2, boundaries="hidden", batch_size=20, passes=5, seed=0)


def run(strategy: TAME, stream) -> None:
    step = 0
    for seg in stream.segments:
        for b in stream.batches(seg, step):
            strategy.observe(b)
            step += 1


def is_dense(model: torch.nn.Module) -> bool:
    return count_parameters(model, nonzero=True) == count_parameters(model)


# --------------------------------------------------------------------------- max_experts


def with_experts(t: TAME, n: int, losses: dict[int, float], monkeypatch) -> TAME:
    """t holding n experts, expert 0 active (the one that fired), no expert accepting the batch
    (no first match) and ``losses[i]`` as expert i's loss on it."""
    for _ in range(n):
        t.pool.spawn()
    t.selector.grow(n)
    t.active = 0
    monkeypatch.setattr(t.pool, "first_match", lambda x, y, exclude=None: None)
    monkeypatch.setattr(t.pool, "loss", lambda i, x, y: losses[i])
    return t


def test_at_the_cap_a_switch_reuses_the_best_fitting_expert_other_than_the_one_that_fired(monkeypatch):
    # the expert that fired fits this batch best, but is no choice; of the others, expert 2
    t = with_experts(tame(max_experts=3, prune=False), 3, {0: 0.1, 1: 0.9, 2: 0.3}, monkeypatch)
    b = batch()
    assert t._switch(b.x, b.y) == (2, "reuse", 0.3)
    assert len(t.pool) == 3


def test_under_the_cap_a_switch_without_a_match_spawns(monkeypatch):
    t = with_experts(tame(max_experts=4, prune=False), 3, {0: 0.1, 1: 0.9, 2: 0.3}, monkeypatch)
    b = batch()
    assert t._switch(b.x, b.y) == (3, "spawn", None)
    assert len(t.pool) == 4 and t.selector.n_experts == 4


def test_at_a_cap_of_one_the_expert_that_fired_stays(monkeypatch):
    t = with_experts(tame(max_experts=1, prune=False), 1, {0: 0.1}, monkeypatch)
    b = batch()
    assert t._switch(b.x, b.y) == (0, "stay", None)
    assert len(t.pool) == 1


@pytest.mark.parametrize("cap", [0, -1])
def test_max_experts_below_one_is_refused(cap):
    with pytest.raises(ConfigError, match=f"max_experts must be at least 1, got {cap}"):
        tame(max_experts=cap)


# --------------------------------------------------------------------------- clip_window


@pytest.mark.parametrize("clip", [True, False])
def test_clip_window_lets_a_spike_that_did_not_fire_into_the_window_only_up_to_tau(monkeypatch, clip):
    t = tame(window=10, clip_window=clip)
    # the decision losses, scripted: 13 steady steps (mean 1, std 0.05: tau 1.15), then a spike
    # whose smoothed loss (0.2 x 1.5 + 0.8 x ~1.0 = ~1.1) stays under tau: no switch
    losses = iter([1.0] + [0.95, 1.05] * 6 + [1.5])
    monkeypatch.setattr(t.pool, "decision_loss", lambda i, x, y: next(losses))
    for step in range(13):
        t.observe(batch(step))
    tracker = t.pool[0].tracker
    tau = tracker.threshold()
    assert tau == pytest.approx(1.15)
    t.observe(batch(13))
    assert t.detected_switches == []
    assert tracker.window[-1] == (pytest.approx(tau) if clip else 1.5)
    assert (tracker.threshold() < 1.25) == clip  # the raw spike lifts tau for the next W steps


# --------------------------------------------------------------------------- prune=False


def test_prune_false_keeps_every_expert_dense_at_switches_and_in_the_deployment():
    stream = two_task_stream()
    t = tame(prune=False)
    run(t, stream)
    assert [e[1] for e in t.switch_events] == ["spawn"]  # expert 0 stopped training at the switch
    assert t.online_prunes == 0
    assert not any(e.pruned for e in t.pool.experts)
    assert all(is_dense(e.model) for e in t.pool.experts)
    t.finalize()
    assert t.deployed.full and is_dense(t.deployed.selector)
    for e, deployed in zip(t.pool.experts, t.deployed.experts, strict=True):
        # neither pruned nor fine-tuned: the deployed copy is the expert as trained
        live = e.model.state_dict()
        assert all(torch.equal(live[k], v) for k, v in deployed.state_dict().items())
    assert t.summary()["params_deployed_nonzero"] == t.n_parameters()


def test_the_same_stream_with_pruning_prunes_the_expert_that_stopped_training():
    # the contrast that shows the stream above exercises the pruning paths
    stream = two_task_stream()
    t = tame(prune=True, expert_prune=0.5)
    run(t, stream)
    assert [e[1] for e in t.switch_events] == ["spawn"]
    assert t.online_prunes == 1 and t.pool[0].pruned and not is_dense(t.pool[0].model)
    t.finalize()
    assert t.summary()["params_deployed_nonzero"] < t.n_parameters()
