"""TAME (strategies/tame/): detector, expert pool, selector, pruning, bookkeeping."""

from __future__ import annotations

import copy
import io
import math
import random

import pytest
import torch

from continual.metrics import recurrence_scores
from continual.models import build_model
from continual.models.parameters import count_parameters, prune_to_sparsity, sparsity
from continual.strategies.tame import (
    TAME,
    ExpertSelector,
    LossTracker,
    ThresholdDetector,
    detect_shifts,
)
from continual.strategies.tame.training import fit
from continual.streams.datasets import from_arrays
from continual.streams.generators import class_incremental
from continual.testing import check_strategy
from continual.types import Batch, ConfigError

DETECTORS = ["threshold", "adwin", "page_hinkley", "kswin"]


def noise(n: int, mean: float, std: float, seed: int) -> list[float]:
    r = random.Random(seed)
    return [r.gauss(mean, std) for _ in range(n)]


def blobs(per_class: int = 60, n_classes: int = 10, dim: int = 16, seed: int = 0):
    """Well-separated Gaussian classes: a dataset small enough for a unit test."""
    g = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(n_classes, dim, generator=g)

    def draw(n):
        y = torch.arange(n_classes).repeat_interleave(n)
        return centres[y] + 0.5 * torch.randn(len(y), dim, generator=g), y

    (xtr, ytr), (xte, yte) = draw(per_class), draw(per_class // 3)
    return from_arrays(xtr, ytr, xte, yte, name="blobs", n_classes=n_classes)


def run(strategy: TAME, stream) -> None:
    step = 0
    for seg in stream.segments:
        for batch in stream.batches(seg, step):
            strategy.observe(batch)
            step += 1


def small_tame(stream, **kw) -> TAME:
    torch.manual_seed(0)
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=32, depth=1)
    options = dict(window=20, lr=0.01, selector_epochs=20, prune_epochs=5, selector_capacity=200,
                   prune_capacity=50)
    return TAME(model, **{**options, **kw})


def recurring_stream(repeats: int = 3):
    return class_incremental(dataset=blobs(), n_tasks=5, boundaries="hidden", batch_size=20,
                             passes=5, repeats=repeats, seed=0)


@pytest.fixture(scope="module")
def _trained():
    stream = recurring_stream(repeats=1)
    tame = small_tame(stream)
    run(tame, stream)
    return stream, tame


@pytest.fixture
def trained(_trained):
    """(stream, TAME trained on its five tasks, not yet finalized): a copy per test."""
    stream, tame = _trained
    return stream, copy.deepcopy(tame)


# --------------------------------------------------------------------------- detector
@pytest.mark.parametrize("detector", DETECTORS)
def test_detector_fires_soon_after_a_loss_jump(detector):
    losses = noise(300, 1.0, 0.05, seed=1) + noise(100, 2.0, 0.05, seed=2)
    fired = detect_shifts(losses, detector, warmup=20)
    assert fired, f"{detector} missed a jump of 20 standard deviations"
    assert 300 <= fired[0] <= 330, f"{detector} fired at {fired[0]}, the jump is at 300"


@pytest.mark.parametrize("detector", DETECTORS)
def test_detector_stays_quiet_on_stationary_noise(detector):
    assert detect_shifts(noise(2000, 1.0, 0.05, seed=3), detector, warmup=20) == []


def test_threshold_is_mean_plus_three_std_with_a_floor():
    t = LossTracker(window=4, initial_loss=None)
    for v in (1.0, 1.0, 1.0, 1.0):
        t.record(v)
    assert t.threshold() == pytest.approx(1.0 + 3 * 0.005)
    for v in (0.0, 2.0, 0.0, 2.0):
        t.record(v)
    assert t.threshold() == pytest.approx(1.0 + 3 * 1.0)


def test_inactive_expert_keeps_its_threshold_and_smoothed_loss():
    t = LossTracker(window=10, alpha=0.2)
    for v in noise(10, 1.0, 0.05, seed=4):
        t.record(v)
    tau, smoothed = t.threshold(), t.smoothed
    assert ThresholdDetector().fires(5.0, t)  # checking does not record
    assert (t.threshold(), t.smoothed) == (tau, smoothed)
    assert t.candidate(5.0) == pytest.approx(0.2 * 5.0 + 0.8 * smoothed)


# --------------------------------------------------------------------------- expert pool
def test_task_free_stream_spawns_one_expert_per_task_and_records_switches(trained):
    stream, tame = trained
    assert len(tame.pool) == 5
    assert tame.detected_switches == stream.true_boundaries


@pytest.mark.parametrize("prune_at", ["end", "switch"])
def test_recurring_tasks_reuse_their_expert(prune_at):
    stream = recurring_stream(repeats=2)
    tame = small_tame(stream, prune_at=prune_at)
    run(tame, stream)
    scores = recurrence_scores(tame.switch_events, stream.true_boundaries,
                               [s.task for s in stream.segments], tolerance=100)
    assert scores["recurrences"] == 5
    assert scores["reuse_rate"] >= 0.8
    # pruned at its switch, an expert is judged by its dense tau: one of five recurrences
    # (task 3, on this stream) is turned away and gets a new expert
    assert len(tame.pool) == (5 if prune_at == "end" else 6)


def test_observe_reports_tame_records():
    stream = recurring_stream(repeats=1)
    tame = small_tame(stream)
    out = tame.observe(next(stream.batches(stream.segments[0])))
    assert {"loss", "n_experts", "active_expert", "params", "switch", "online_correct"} <= set(out)
    assert out["n_experts"] == 1.0 and out["switch"] == 0.0
    assert out["params"] == tame.n_parameters() > 0
    assert tame.samples_seen == 20


@pytest.mark.parametrize("detector", ["threshold", "adwin"])
def test_a_nan_loss_is_refused_before_the_detector_or_the_loss_window_sees_it(detector):
    from continual.types import NonFiniteLoss

    stream = recurring_stream(repeats=1)
    tame = small_tame(stream, detector=detector)
    batches = list(stream.batches(stream.segments[0]))
    for b in batches[:5]:
        tame.observe(b)
    expert = tame.pool[tame.active]
    before = (copy.deepcopy(expert.tracker.state_dict()), expert.detector.state_dict(),
              expert.steps, tame.samples_seen, list(tame.detected_switches))
    bad = Batch(torch.full_like(batches[5].x, float("nan")), batches[5].y)
    with pytest.raises(NonFiniteLoss):
        tame.observe(bad)
    after = (expert.tracker.state_dict(), expert.detector.state_dict(), expert.steps,
             tame.samples_seen, list(tame.detected_switches))
    assert after == before
    assert all(math.isfinite(v) for v in expert.tracker.window)
    assert math.isfinite(expert.tracker.threshold())


def test_a_nan_loss_leaves_switch_detection_working():
    from continual.types import NonFiniteLoss

    stream = recurring_stream(repeats=1)
    tame = small_tame(stream)
    first = next(stream.batches(stream.segments[0]))
    tame.observe(first)
    with pytest.raises(NonFiniteLoss):
        tame.observe(Batch(torch.full_like(first.x, float("nan")), first.y))
    run(tame, stream)
    assert len(tame.pool) == 5  # one expert per task, as without the NaN batch


def test_expert_optimisers_are_a_plain_list_attribute_that_grows_with_the_pool(trained):
    _, tame = trained
    assert tame.expert_optimizers == [e.optimizer for e in tame.pool.experts]
    assert len(tame.expert_optimizers) == len(tame.pool) > 1


def test_new_experts_are_reinitialised_copies_of_the_template():
    stream = recurring_stream(repeats=1)
    tame = small_tame(stream)
    a, b = tame.pool.spawn(), tame.pool.spawn()
    wa, wb = tame.pool[a].model.head.weight, tame.pool[b].model.head.weight
    assert wa.shape == wb.shape and not torch.equal(wa, wb)


# --------------------------------------------------------------------------- selector
def test_selector_grows_and_keeps_learnt_rows():
    model = build_model("mlp", (16,), 10, hidden=32, depth=1)
    sel = ExpertSelector(model, n_classes=10, capacity=100)
    before = sel.model.head.weight.detach().clone()
    sel.grow(3)
    assert sel.model.head.out_features == 3
    assert torch.equal(sel.model.head.weight[:1], before)


def test_selector_learns_to_route_by_expert():
    data = blobs()
    model = build_model("mlp", (16,), 10, hidden=32, depth=1)
    sel = ExpertSelector(model, n_classes=10, capacity=500)
    sel.grow(2)
    sel.add(data.x_train, data.y_train, expert=0)
    x1, y1 = data.x_train[data.y_train >= 5], data.y_train[data.y_train >= 5]
    sel.add(x1, y1, expert=1)  # classes 5..9: their reservoirs now mostly hold expert 1
    xs, ids = sel.items()
    fit(sel.model, xs, ids, epochs=30, lr=0.05, generator=torch.Generator().manual_seed(0))
    sel.model.eval()
    with torch.no_grad():
        route = sel.model(data.x_test).argmax(1)
    expected = (data.y_test >= 5).long()
    assert (route == expected).float().mean() > 0.6


# --------------------------------------------------------------------------- pruning
@pytest.mark.parametrize("share", [0.5, 0.98])
def test_pruning_removes_the_stated_share_of_weights(share):
    model = build_model("mlp", (16,), 10, hidden=32, depth=2)
    prune_to_sparsity(model, share)
    assert sparsity(model) == pytest.approx(share, abs=1e-3)


def test_pruning_is_idempotent_and_survives_fine_tuning():
    data = blobs()
    model = build_model("mlp", (16,), 10, hidden=32, depth=2)
    prune_to_sparsity(model, 0.9)
    prune_to_sparsity(model, 0.9)
    fit(model, data.x_train, data.y_train, epochs=2, lr=0.05)
    assert sparsity(model) == pytest.approx(0.9, abs=1e-3)


def test_finalize_prunes_every_deployed_copy(trained):
    _, tame = trained  # expert_prune=0.98, selector_prune=0.5 (the paper's)
    tame.finalize()
    assert all(sparsity(m) == pytest.approx(0.98, abs=1e-3) for m in tame.deployed.experts)
    assert sparsity(tame.deployed.selector) == pytest.approx(0.5, abs=1e-3)
    assert tame.n_parameters(deployed=True) < 0.2 * tame.n_parameters()


def test_prune_at_end_leaves_the_training_experts_dense():
    stream = recurring_stream(repeats=1)
    tame = small_tame(stream, prune_at="end")
    run(tame, stream)
    tame.finalize()
    assert all(sparsity(e.model) < 0.01 for e in tame.pool.experts)
    assert tame.online_prunes == 0
    assert all(sparsity(m) == pytest.approx(0.98, abs=1e-3) for m in tame.deployed.experts)


def test_online_pruning_prunes_each_expert_when_it_stops_training(trained):
    _, tame = trained  # prune_at='switch' (default): 4 switches on 5 tasks
    retired, active = tame.pool.experts[:-1], tame.pool[tame.active]
    assert tame.active == 4 and tame.online_prunes == 4
    assert all(sparsity(e.model) == pytest.approx(0.98, abs=1e-3) for e in retired)
    assert all(not e.optimizer.state for e in retired)  # momentum buffers dropped
    assert sparsity(active.model) < 0.01
    dense, selector = count_parameters(active.model), count_parameters(tame.selector.model)
    pruned = sum(count_parameters(e.model, nonzero=True) for e in retired)
    # held while training: four pruned experts, one dense expert, the selector
    assert tame.held_params_peak == pruned + dense + selector
    assert tame.held_params_peak < 0.5 * (5 * dense + selector)  # all dense (prune_at='end')
    assert tame.summary()["params_held_peak"] == tame.held_params_peak


def run_until_reuse(tame: TAME, stream) -> int:
    """Run the five tasks, then task 0 again (expert 0, pruned at its switch, is reused and
    trains under its masks); return the next step."""
    step = 0
    for seg in stream.segments[:6]:
        for batch in stream.batches(seg, step):
            tame.observe(batch)
            step += 1
    return step


@pytest.fixture(scope="module")
def _reused():
    stream = recurring_stream(repeats=2)
    tame = small_tame(stream)
    step = run_until_reuse(tame, stream)
    assert tame.active == 0 and tame.switch_events[-1][1] == "reuse" and tame.pool[0].masks
    return stream, tame, step


@pytest.fixture
def reused(_reused):
    """(stream, TAME whose active expert 0 is a reused pruned one, next step): a copy per test."""
    stream, tame, step = _reused
    return stream, copy.deepcopy(tame), step


def save_and_load(tame: TAME, stream, **kw) -> TAME:
    """A new TAME loaded from ``tame``'s state as the runner's checkpoints store it."""
    buf = io.BytesIO()
    torch.save(tame.state_dict(), buf)
    buf.seek(0)
    other = small_tame(stream, **kw)
    other.load_state_dict(torch.load(buf, weights_only=True))
    return other


def test_a_pruned_expert_stays_pruned_when_reused_and_after_a_resume(reused):
    stream, tame, step = reused
    assert sparsity(tame.pool[0].model) == pytest.approx(0.98, abs=1e-3)  # trained under its masks
    other = save_and_load(tame, stream)
    for batch in stream.batches(stream.segments[6], step):  # task 1 again: expert 0 retires again
        other.observe(batch)
    assert other.active == 1
    assert all(sparsity(e.model) == pytest.approx(0.98, abs=1e-3)
               for i, e in enumerate(other.pool.experts) if i != other.active)


def test_a_reused_pruned_expert_is_deployed_as_its_masked_weights(reused):
    # the deployed copy was a deepcopy of torch's pruning form, whose computed weight is a
    # non-leaf tensor: prepare_eval raised RuntimeError
    stream, tame, _ = reused
    tame.prepare_eval()
    x = stream.dataset.x_test
    live = tame.pool[0].model.eval()
    with torch.no_grad():
        assert torch.equal(tame.deployed.experts[0](x), live(x))
    assert sparsity(tame.deployed.experts[0]) == pytest.approx(0.98, abs=1e-3)
    assert tame.predict(x).shape == (x.shape[0], 10)


def test_a_reused_pruned_expert_keeps_training_under_its_masks_after_a_deployment(reused):
    stream, tame, step = reused
    tame.prepare_eval()
    zeros = {k: ~m for k, m in tame.pool[0].masks.items()}
    for batch in stream.batches(stream.segments[5], step):  # task 0 once more: no switch
        tame.observe(batch)
    assert tame.active == 0 and tame.pool[0].steps > tame.pool[0].pruned_at
    params = dict(tame.pool[0].model.named_parameters())
    assert all(not params[k][z].any() for k, z in zeros.items())


def test_a_tame_with_a_reused_pruned_expert_can_be_deep_copied(reused):
    # the runner copies the strategy for a schedule's anneal branch
    stream, tame, step = reused
    twin = copy.deepcopy(tame)
    batch = next(stream.batches(stream.segments[5], step))
    assert twin.observe(batch)["loss"] == pytest.approx(tame.observe(batch)["loss"])


def test_a_checkpoint_with_a_reused_pruned_expert_resumes_with_its_masks(reused):
    stream, tame, step = reused
    tame.prepare_eval()
    other = save_and_load(tame, stream)
    assert other.pool[0].masks.keys() == tame.pool[0].masks.keys()
    assert all(torch.equal(other.pool[0].masks[k], m) for k, m in tame.pool[0].masks.items())
    x = stream.dataset.x_test
    assert torch.equal(other.predict(x), tame.predict(x))
    batch = next(stream.batches(stream.segments[5], step))
    assert other.observe(batch)["loss"] == pytest.approx(tame.observe(batch)["loss"])
    assert torch.equal(other.predict(x), tame.predict(x))


def test_a_checkpoint_in_torchs_pruning_form_loads_with_masks_from_its_zeros(reused):
    # checkpoints written before the masks were explicit hold weight_orig and weight_mask
    from continual.models.parameters import mask_zeros

    stream, tame, _ = reused
    state = tame.state_dict()
    model = copy.deepcopy(tame.pool[0].model)
    mask_zeros(model)
    state["pool"]["experts"][0]["model"] = model.state_dict()
    del state["pool"]["experts"][0]["masks"]
    other = small_tame(stream)
    other.load_state_dict(state)
    assert all(torch.equal(other.pool[0].masks[k], m) for k, m in tame.pool[0].masks.items())
    x = stream.dataset.x_test
    assert torch.equal(other.pool[0].model.eval()(x), tame.pool[0].model.eval()(x))


def test_periodic_evaluation_after_a_recurrence_runs_through_the_runner(tmp_path):
    from continual.config import CheckpointConfig, EvalConfig
    from continual.runner import Runner

    stream = recurring_stream(repeats=2)
    tame = small_tame(stream)
    runner = Runner(stream, tame, out_dir=str(tmp_path), seed=0, eval=EvalConfig(every=10),
                    checkpoint=CheckpointConfig(every=50, min_interval_s=0.0))
    runner.run()
    assert any(e[1] == "reuse" for e in tame.switch_events)
    first_reuse = min(e[0] for e in tame.switch_events if e[1] == "reuse")  # samples seen
    assert any(r.kind == "periodic" and r.samples > first_reuse for r in runner.state.rows)
    assert runner.state.rows[-1].scores_class_il[0] > 0.8


# --------------------------------------------------------------------------- predict, eval hooks
def test_predict_routes_each_input_to_an_expert(trained):
    stream, tame = trained
    d = stream.dataset
    logits = tame.predict(d.x_test)  # refreshes the selector first (train_at='end')
    assert logits.shape == (d.x_test.shape[0], 10)
    assert (logits.argmax(1) == d.y_test).float().mean() > 0.6


def test_prepare_eval_redeploys_only_after_training_when_train_at_eval():
    stream = recurring_stream(repeats=1)
    batches = stream.batches(stream.segments[0])
    tame = small_tame(stream, train_at="eval")
    tame.observe(next(batches))
    tame.prepare_eval()
    first = tame.deployed
    tame.prepare_eval()
    assert tame.deployed is first
    tame.observe(next(batches))
    tame.prepare_eval()
    assert tame.deployed is not first


def test_predict_under_inference_mode_trains_the_selector_lazily(trained):
    stream, tame = trained
    with torch.inference_mode():  # how the runner calls predict
        logits = tame.predict(stream.dataset.x_test)
    assert tame.deployed.selector is not None and logits.shape[1] == 10


def test_prepare_eval_refreshes_without_pruning_when_train_at_end(trained):
    _, tame = trained
    tame.prepare_eval()
    assert not tame.deployed.full and tame.refreshes == 1
    assert len(tame.deployed.experts) == len(tame.pool) == 5
    assert sparsity(tame.deployed.selector) < 0.01  # pruned only after the stream
    assert sparsity(tame.deployed.experts[-1]) < 0.01  # the active expert, as it is now
    tame.finalize()
    assert tame.deployed.full


def test_eval_rows_reflect_every_expert_spawned_so_far(tmp_path):
    from continual.runner import Runner

    stream = recurring_stream(repeats=1)
    tame = small_tame(stream)
    runner = Runner(stream, tame, out_dir=str(tmp_path), seed=0)
    runner.run()
    task_end = [r for r in runner.state.rows if r.kind == "task_end"]
    for t, row in enumerate(task_end):
        # class-IL: task t's classes are reachable only through expert t, spawned in task t
        assert row.scores_class_il[t] > 0.8, (t, row.scores_class_il)
    assert tame.refreshes == 4  # task ends 0-3; after task 4 the finalized deployment scores


# --------------------------------------------------------------------------- state
def test_state_dict_round_trip_restores_the_pool():
    stream = recurring_stream(repeats=1)
    tame = small_tame(stream, detector="adwin")
    run(tame, stream)
    tame.finalize()
    buf = io.BytesIO()
    torch.save(tame.state_dict(), buf)
    buf.seek(0)
    other = small_tame(stream, detector="adwin")
    other.load_state_dict(torch.load(buf, weights_only=True))  # as the runner's checkpoints
    assert len(other.pool) == len(tame.pool)
    assert other.detected_switches == tame.detected_switches
    x = stream.dataset.x_test
    assert torch.equal(other.predict(x), tame.predict(x))
    batch = next(stream.batches(stream.segments[-1]))
    assert other.observe(batch)["loss"] == pytest.approx(tame.observe(batch)["loss"])


# --------------------------------------------------------------------------- scores
def test_recurrence_scores_count_reuse_and_the_right_expert():
    events = [(100, "spawn", 1), (200, "reuse", 0), (300, "spawn", 2)]
    s = recurrence_scores(events, [100, 200, 300], [0, 1, 0, 1], tolerance=10)
    assert s["recurrences"] == 2
    assert s["reuse_rate"] == pytest.approx(0.5)
    assert s["same_expert_rate"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- contract
def test_tame_passes_the_strategy_conformance_kit():
    results = check_strategy(TAME, options={"window": 20, "lr": 0.01, "selector_epochs": 2,
                                            "prune_epochs": 1})
    assert set(results.values()) == {"passed"}


# --------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("bad", [{"detector": "cusum"}, {"train_at": "never"}, {"window": 1},
                                 {"window": "adaptive"}, {"window": 35.5},
                                 {"window": "auto", "min_window": 1},
                                 {"window": "auto", "window_fraction": 0.0},
                                 {"patience": 0}, {"decision_statistic": "max"},
                                 {"prune_at": "never"}, {"refresh_epochs": -1},
                                 {"expert_prune": 1.0}, {"detector": "adwin",
                                                         "detector_params": {"nope": 1}}])
def test_bad_configuration_raises_config_error(bad):
    model = build_model("mlp", (16,), 10, hidden=8, depth=1)
    with pytest.raises(ConfigError):
        TAME(model, **bad)


def test_initial_window_is_log_of_classes():
    tame = TAME(build_model("mlp", (16,), 10, hidden=8, depth=1))
    tame.observe(Batch(x=torch.randn(4, 16), y=torch.tensor([0, 1, 0, 1])))
    assert tame.pool[0].tracker.window[0] == pytest.approx(math.log(10))


def test_a_resized_deployed_head_is_built_on_the_models_device_not_the_checkpoints():
    # 'meta' stands in for a GPU: the state comes from a checkpoint loaded on the CPU
    import warnings

    from torch import nn

    from continual.models.parameters import pruned_like as _pruned_like

    class Net(nn.Module):
        def __init__(self, out):
            super().__init__()
            self.body, self.head = nn.Linear(4, 3), nn.Linear(3, out)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # copying into meta tensors is a no-op
        model = _pruned_like(Net(2).to("meta"), Net(5).state_dict())
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert model.head.weight.shape == (5, 3)


# --------------------------------------------------------------------------- max_experts
def test_max_experts_one_keeps_the_single_expert_and_records_no_reuse():
    stream = recurring_stream(repeats=1)
    tame = small_tame(stream, max_experts=1)
    run(tame, stream)
    assert len(tame.pool) == 1
    assert tame.detected_switches == stream.true_boundaries  # the detector still fires
    assert tame.switch_events == []  # but "reuse the expert that fired" is no switch


def test_max_experts_cap_reuses_another_expert_never_the_one_that_fired():
    stream = recurring_stream(repeats=1)
    tame = small_tame(stream, max_experts=2, prune=False)  # a pruned expert learns a new task slowly
    run(tame, stream)
    assert len(tame.pool) == 2
    assert [e[1] for e in tame.switch_events] == ["spawn", "reuse", "reuse", "reuse"]
    previous = 0
    for _, _, expert in tame.switch_events:
        assert expert != previous
        previous = expert


# --------------------------------------------------------------------------- one loss scale
def _batchnorm_tame(stream) -> TAME:
    from torch import nn

    from continual.models.backbones import Classifier

    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU())
    return TAME(Classifier(body, 32, 10), window=20, lr=0.01, selector_epochs=2, prune_epochs=1,
                selector_capacity=200, prune_capacity=50)


def test_with_batchnorm_the_window_holds_eval_mode_losses_as_every_decision():
    stream = recurring_stream(repeats=1)
    tame = _batchnorm_tame(stream)
    batches = list(stream.batches(stream.segments[0]))
    for b in batches[:10]:
        tame.observe(b)
    b = batches[10]
    eval_loss = tame.pool.loss(tame.active, b.x, b.y)  # how first_match scores an expert
    training_loss = tame.observe(b)["loss"]
    assert tame.pool[tame.active].tracker.window[-1] == pytest.approx(eval_loss)
    assert abs(training_loss - eval_loss) > 1e-3  # the two scales differ with BatchNorm


def test_with_batchnorm_switches_are_still_found():
    stream = recurring_stream(repeats=1)
    tame = _batchnorm_tame(stream)
    run(tame, stream)
    assert tame.detected_switches == stream.true_boundaries


# --------------------------------------------------------------------------- the code's labels
def test_within_task_labels_give_experts_classes_per_task_outputs():
    stream = recurring_stream(repeats=1)
    tame = small_tame(stream, labels="within_task", classes_per_task=2, sigmoid_outputs=True,
                      lr=0.1)
    run(tame, stream)
    assert len(tame.pool) == 5
    assert all(e.model.head.out_features == 2 for e in tame.pool.experts)
    assert set(tame.pool[1].prune_buffer.items()[1].tolist()) == {0, 1}  # classes 2, 3 -> 0, 1
    assert tame.pool[0].tracker.window.maxlen == 20
    d = stream.dataset
    logits = tame.predict(d.x_test)
    assert logits.shape == (d.x_test.shape[0], 10)
    # within-task protocol: the expert's two outputs, read in the true task's two columns
    task_first = d.y_test - d.y_test % 2
    within = logits.gather(1, torch.stack([task_first, task_first + 1], 1)).argmax(1)
    assert (within == d.y_test % 2).float().mean() > 0.8


def test_within_task_initial_window_is_log_of_classes_per_task():
    tame = TAME(build_model("mlp", (16,), 10, hidden=8, depth=1), labels="within_task",
                classes_per_task=2)
    tame.observe(Batch(x=torch.randn(4, 16), y=torch.tensor([4, 5, 4, 5])))
    assert tame.pool[0].tracker.window[0] == pytest.approx(math.log(2))


@pytest.mark.parametrize("bad", [{"labels": "within_task"}, {"labels": "local"},
                                 {"labels": "within_task", "classes_per_task": 3},
                                 {"labels": "within_task", "classes_per_task": -1}])
def test_bad_label_setting_raises_config_error(bad):
    with pytest.raises(ConfigError):
        TAME(build_model("mlp", (16,), 10, hidden=8, depth=1), **bad)


def test_the_code_label_setting_runs_from_the_cli_preset(tmp_path):
    from hydra import compose, initialize_config_module

    from continual.config import register_configs
    from continual.experiment import run_experiment

    register_configs()
    with initialize_config_module(config_module="continual.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "stream=split_digits", "strategy=tame_code_within_task", "stream.boundaries=hidden",
            "log.console=false", "checkpoint.enabled=false", "strategy.selector_epochs=2",
            "strategy.prune_epochs=1"])
    summary = run_experiment(cfg, out_dir=str(tmp_path), report=False)
    options = summary["config"]["strategy"]
    assert (options["labels"], options["classes_per_task"], options["sigmoid_outputs"]) == (
        "within_task", 2, True)
    assert summary["acc_task_il"] > 0.5  # the code's within-task accuracy (chance: 0.5)


def test_tame_keeps_the_class_path_that_run_fingerprints_and_old_checkpoints_name(tmp_path):
    from continual.runner import Runner

    stream = recurring_stream(repeats=1)
    runner = Runner(stream, small_tame(stream), out_dir=str(tmp_path))
    assert runner.fingerprint()["strategy_class"] == "continual.strategies.tame.TAME"



# --------------------------------------------------------------------------- the adaptive window
def test_window_auto_gives_every_expert_the_adaptive_window():
    # conf/strategy/tame.yaml's rule; tasks of 60 steps (a task shorter than 2 x min_window
    # leaves the expert's learning curve in its window, see benchmarks/results/tame.md)
    stream = sixty_step_tasks()
    tame = small_tame(stream, window="auto", window_fraction=0.5, min_window=20, max_window=200,
                      patience=2, decision_statistic="median", min_std=0.05)
    run(tame, stream)
    assert len(tame.pool) == 5
    # each switch is confirmed on the batch after the boundary's, which was set aside
    assert tame.detected_switches == [b + 20 for b in stream.true_boundaries]
    assert tame.set_aside == 4
    for e in tame.pool.experts:
        rule = e.tracker.adaptive
        assert (rule.fraction, rule.min_size, rule.max_size) == (0.5, 20, 200)
        assert e.tracker.seen == e.steps + 1  # its trained steps and the initial loss
        assert len(e.tracker.losses()) == min(len(e.tracker.window), rule.size(e.tracker.seen))


def sixty_step_tasks():
    return class_incremental(dataset=blobs(), n_tasks=5, boundaries="hidden", batch_size=20,
                             passes=10, seed=0)


def _patient_tame_after_its_first_task():
    stream = sixty_step_tasks()
    tame = small_tame(stream, patience=2)
    batches = [list(stream.batches(seg)) for seg in stream.segments[:2]]
    for b in batches[0]:
        tame.observe(b)
    return tame, batches


def test_patience_sets_a_firing_batch_aside_untrained_and_unrecorded():
    tame, (first, second) = _patient_tame_after_its_first_task()
    expert = tame.pool[0]
    weights = copy.deepcopy(expert.model.state_dict())
    before = (copy.deepcopy(expert.tracker.state_dict()), expert.steps, len(expert.prune_buffer),
              tame.version)
    out = tame.observe(second[0])  # the new task's first batch fires
    assert (out["set_aside"], out["switch"], len(tame.pool)) == (1.0, 0.0, 1)
    assert all(torch.equal(weights[k], v) for k, v in expert.model.state_dict().items())
    assert (expert.tracker.state_dict(), expert.steps, len(expert.prune_buffer),
            tame.version) == before
    assert tame.samples_seen == 20 * (len(first) + 1)
    out = tame.observe(second[1])  # and the next confirms it
    assert (out["set_aside"], out["switch"], len(tame.pool), tame.active) == (0.0, 1.0, 2, 1)
    assert tame.detected_switches == [20 * (len(first) + 1)]
    assert tame.summary()["set_aside_batches"] == 1


def test_patience_drops_a_one_batch_outlier_and_keeps_the_expert():
    tame, (first, second) = _patient_tame_after_its_first_task()
    assert tame.observe(second[0])["set_aside"] == 1.0  # one batch of another task
    out = tame.observe(first[0])  # then the expert's own task again
    assert (out["set_aside"], out["switch"], len(tame.pool), tame.active) == (0.0, 0.0, 1, 0)
    assert tame.detected_switches == [] and tame.set_aside == 1


def test_a_set_aside_batch_awaits_its_confirmation_across_a_resume():
    tame, (first, second) = _patient_tame_after_its_first_task()
    tame.observe(second[0])
    state = tame.state_dict()
    other = small_tame(sixty_step_tasks(), patience=2)
    other.load_state_dict(state)
    assert other.pool[0].detector.set_aside and other.set_aside == 1
    assert other.observe(second[1])["switch"] == 1.0


def compose_strategy(name: str) -> dict:
    from hydra import compose, initialize_config_module

    from continual.config import register_configs

    register_configs()
    with initialize_config_module(config_module="continual.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"strategy={name}"])
    return {k: cfg.strategy[k] for k in ("window", "patience", "decision_statistic", "min_std")}


def test_the_default_tame_preset_has_the_adaptive_window_and_tame_paper_the_papers():
    assert compose_strategy("tame") == {"window": "auto", "patience": 2,
                                        "decision_statistic": "median", "min_std": 0.05}
    paper = {"window": 100, "patience": 1, "decision_statistic": "mean", "min_std": 0.005}
    assert compose_strategy("tame_paper") == paper
    # the code's presets keep the paper's rule with the code's W
    for name in ("tame_code", "tame_code_within_task"):
        assert compose_strategy(name) == {**paper, "window": 35}


def test_median_decisions_ignore_one_confidently_wrong_sample():
    from continual.strategies.tame.experts import batch_loss

    logits = torch.tensor([[9.0, -9.0]] * 9 + [[-30.0, 30.0]])  # the tenth is wrong, confidently
    y = torch.zeros(10, dtype=torch.long)
    assert batch_loss(logits, y, sigmoid=False) == pytest.approx(6.0, abs=1e-3)  # the mean: 60 / 10
    assert batch_loss(logits, y, sigmoid=False, statistic="median") < 1e-6


def test_with_median_decisions_the_window_holds_the_batch_median():
    stream = recurring_stream(repeats=1)
    tame = small_tame(stream, decision_statistic="median")
    batches = list(stream.batches(stream.segments[0]))
    for b in batches[:10]:
        tame.observe(b)
    b = batches[10]
    median = tame.pool.loss(tame.active, b.x, b.y)  # how first_match scores an expert
    mean = tame.observe(b)["loss"]  # what it trains on
    assert tame.pool[tame.active].tracker.window[-1] == pytest.approx(median)
    assert median != pytest.approx(mean)
