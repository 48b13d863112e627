"""Task-switch detectors (strategies/tame/detector.py): the river-style ``update(loss)`` contract."""

from __future__ import annotations

import math
import random

import pytest

from continual.metrics import boundary_scores
from continual.strategies.tame.detector import (
    AdaptiveWindow,
    LossTracker,
    RiverDetector,
    ThresholdDetector,
    detect_shifts,
    make_detector,
)
from continual.types import ConfigError

RIVER = ["adwin", "page_hinkley", "kswin"]


def noise(n: int, mean: float, seed: int, std: float = 0.05) -> list[float]:
    r = random.Random(seed)
    return [r.gauss(mean, std) for _ in range(n)]


def feed(detector, losses: list[float]) -> list[bool]:
    """Flags of ``update`` over losses, recording each quiet loss as a trained step."""
    flags = []
    for loss in losses:
        flags.append(detector.update(loss))
        if not flags[-1]:
            detector.tracker.record(loss)
    return flags


def test_threshold_update_flags_a_loss_above_tau_and_keeps_the_flag():
    tracker = LossTracker(window=20)
    for v in noise(20, 1.0, seed=9):
        tracker.record(v)
    det = ThresholdDetector(tracker)
    assert not any(feed(det, noise(200, 1.0, seed=0)))
    assert det.drift_detected is False
    assert det.update(5.0) is True
    assert det.drift_detected is True


def test_threshold_update_judges_against_its_tracker_and_records_nothing():
    tracker = LossTracker(window=10)
    for v in noise(10, 1.0, seed=1):
        tracker.record(v)
    before = tracker.state_dict()
    det = ThresholdDetector(tracker)
    assert det.update(5.0) == (tracker.candidate(5.0) > tracker.threshold())
    assert tracker.state_dict() == before


@pytest.mark.parametrize("kind", RIVER)
def test_river_update_fires_after_a_jump_up_and_feeds_every_loss(kind):
    det = make_detector(kind, tracker=LossTracker(window=50))
    losses = noise(300, 1.0, seed=2) + noise(100, 2.0, seed=3)
    flags = feed(det, losses)
    assert not any(flags[:300])
    assert any(flags[300:330]), f"{kind} missed a jump of 20 standard deviations"
    assert len(det.history) == len(losses)  # river saw every loss, quiet or not


@pytest.mark.parametrize("kind", RIVER)
def test_river_update_ignores_a_falling_loss(kind):
    # a fresh expert's learning curve: the loss drops, which is a change but not a switch
    det = make_detector(kind, tracker=LossTracker(window=50))
    assert not any(feed(det, noise(300, 2.0, seed=4) + noise(300, 0.5, seed=5)))


@pytest.mark.parametrize("kind", RIVER)
def test_river_detector_restored_from_its_state_gives_the_same_flags(kind):
    tracker = LossTracker(window=50)
    det = RiverDetector(kind, tracker)
    feed(det, noise(200, 1.0, seed=6))
    other = RiverDetector(kind, LossTracker(window=50))
    other.tracker.load_state_dict(tracker.state_dict())
    other.load_state_dict(det.state_dict())
    rest = noise(50, 1.0, seed=7) + noise(50, 2.0, seed=8)
    assert feed(other, rest) == feed(det, rest)


def test_make_detector_binds_the_tracker_and_refuses_unknown_names():
    tracker = LossTracker()
    assert make_detector("threshold", tracker=tracker).tracker is tracker
    assert make_detector("adwin", tracker=tracker).tracker is tracker
    with pytest.raises(ConfigError, match="unknown detector 'cusum'"):
        make_detector("cusum")
    with pytest.raises(ConfigError, match="bad parameters for river ADWIN"):
        make_detector("adwin", {"nope": 1})


# --------------------------------------------------------------------------- adaptive window
AUTO = AdaptiveWindow(fraction=0.5, min_size=20, max_size=1000)  # conf/strategy/tame.yaml
START = math.log(10)  # a new expert's window starts with ln(outputs), as in the strategy
DEFAULT = dict(adaptive=AUTO, patience=2, min_std=0.05, initial_loss=START)  # its whole rule


def learning_curves(task_steps: int, n_tasks: int = 5, outliers: tuple[int, ...] = (),
                    seed: int = 0) -> list[float]:
    """A synthetic 5-task loss stream as an expert meets it: each task opens with a jump
    (the old expert's loss on new classes, about 10), then a learning curve falls to about
    0.1 with noise; ``detect_shifts`` restarts a fresh tracker at each switch, as a spawn.
    ``outliers``: steps of each task where one batch's loss is 3 (a few confidently wrong
    samples, or a one-step divergence), back to normal on the next."""
    r = random.Random(seed)
    return [(3.0 if t in outliers else 0.1 + 9.9 * math.exp(-t / 8)) + abs(r.gauss(0.0, 0.05))
            for _ in range(n_tasks) for t in range(task_steps)]


def scores(fired: list[int], task_steps: int) -> dict[str, float]:
    truth = [k * task_steps for k in range(1, 5)]
    return boundary_scores(fired, truth, tolerance=task_steps // 4)


def test_adaptive_window_is_a_share_of_the_losses_seen_within_its_bounds():
    assert [AUTO.size(n) for n in (1, 40, 41, 100, 2000, 10**6)] == [20, 20, 21, 50, 1000, 1000]


def test_adaptive_tracker_takes_tau_over_the_latest_share_of_its_losses():
    losses = noise(99, 1.0, seed=10) + [3.0]  # the latest loss is the highest
    auto, fixed = LossTracker(adaptive=AUTO, initial_loss=2.3), LossTracker(window=51)
    for v in losses:
        auto.record(v)
        fixed.record(v)
    assert auto.seen == 101 and len(auto.losses()) == AUTO.size(101) == 51
    assert auto.threshold() == pytest.approx(fixed.threshold())  # the latest 51 losses
    assert auto.mean() == pytest.approx(fixed.mean())


@pytest.mark.parametrize("task_steps", [80, 300])
def test_the_default_rule_finds_the_switches_of_a_five_task_loss_stream_and_nothing_else(task_steps):
    # conf/strategy/tame.yaml's rule (adaptive window, patience 2, floor 0.05; its batch median
    # belongs to the strategy), one configuration for tasks of 80 steps (online Split-MNIST:
    # shorter than the paper's W=100) and of 300, each with two one-batch outliers after its
    # learning curve
    losses = learning_curves(task_steps, outliers=(50, 70))
    fired = detect_shifts(losses, warmup=1, **DEFAULT)
    result = scores(fired, task_steps)
    assert result["boundary_precision"] >= 0.9 and result["boundary_recall"] >= 0.9, result


def test_a_fixed_window_longer_than_the_task_misses_its_switches():
    # why the adaptive window: W=100 on 80-step tasks keeps each expert's opening jump and
    # learning curve in the window, and tau stays above the next switch
    fired = detect_shifts(learning_curves(80), warmup=1, **{**DEFAULT, "adaptive": None})  # W=100
    assert scores(fired, 80)["boundary_recall"] < 0.5


def test_without_patience_the_adaptive_window_fires_on_one_batch_outliers():
    # why patience: a window of converged losses is quiet, and one batch at 3 passes tau
    fired = detect_shifts(learning_curves(80, outliers=(50, 70)), warmup=1,
                          **{**DEFAULT, "patience": 1})
    assert scores(fired, 80)["boundary_precision"] < 0.9


def test_adaptive_window_stays_quiet_on_a_long_stationary_stream():
    # one learning curve, then 20,000 steps of the same task with the noise of a small batch's
    # loss (std 0.3 around 1.0): no switch, while the window grows to its bound (a window
    # collapsed to 5 losses fires on such series)
    r = random.Random(11)
    losses = [1.0 + 1.3 * math.exp(-t / 8) + r.gauss(0.0, 0.3) for t in range(20_000)]
    assert detect_shifts(losses, warmup=1, **DEFAULT) == []


def test_adaptive_tracker_state_round_trip_keeps_the_count_that_sizes_its_window():
    tracker = LossTracker(adaptive=AUTO, initial_loss=2.3)
    for v in noise(1500, 1.0, seed=12):
        tracker.record(v)
    other = LossTracker(adaptive=AUTO)
    other.load_state_dict(tracker.state_dict())
    assert other.seen == 1501 and len(other.window) == 1000  # the losses held: max_size
    assert other.threshold() == tracker.threshold()
    # a state written before the adaptive window counted nothing: what it holds
    fixed = LossTracker(window=10)
    fixed.load_state_dict({"window": [1.0, 1.1, 0.9], "smoothed": 1.0})
    assert fixed.seen == 3


@pytest.mark.parametrize("bad", [dict(fraction=0.0), dict(fraction=1.5), dict(min_size=1),
                                 dict(min_size=50, max_size=40)])
def test_adaptive_window_refuses_bad_bounds(bad):
    with pytest.raises(ConfigError, match="window"):
        AdaptiveWindow(**bad)


# --------------------------------------------------------------------------- patience
def quiet_tracker() -> LossTracker:
    tracker = LossTracker(window=20)
    for v in noise(20, 1.0, seed=13):
        tracker.record(v)
    return tracker


def test_patience_switches_only_when_the_next_loss_fires_too():
    det = ThresholdDetector(quiet_tracker(), patience=2)
    assert not any(feed(det, noise(300, 1.0, seed=14)))
    assert det.update(5.0) is False and det.set_aside  # waits: not trained on, not recorded
    assert det.update(5.0) is True and not det.set_aside and det.pending == 0


@pytest.mark.parametrize("kind", RIVER)
def test_river_detectors_switch_at_their_alarm_whatever_the_patience(kind):
    # river resets after an alarm and would never fire twice in a row
    det = make_detector(kind, tracker=LossTracker(window=50), patience=2)
    flags = feed(det, noise(300, 1.0, seed=2) + noise(100, 2.0, seed=3))
    assert any(flags[300:330])


def test_patience_drops_a_one_loss_outlier():
    det = ThresholdDetector(quiet_tracker(), patience=2)
    assert det.update(5.0) is False and det.set_aside
    assert det.update(1.0) is False and not det.set_aside  # back to normal: no switch
    series = noise(100, 1.0, seed=16)
    series[60] = 5.0
    assert detect_shifts(series, warmup=20, window=20) == [60]
    assert detect_shifts(series, warmup=20, window=20, patience=2) == []


def test_a_pending_firing_survives_a_state_round_trip():
    det = ThresholdDetector(quiet_tracker(), patience=2)
    det.update(5.0)
    other = ThresholdDetector(quiet_tracker(), patience=2)
    other.load_state_dict(det.state_dict())
    assert other.set_aside and other.update(5.0) is True
    other.load_state_dict({})  # a state written before patience: nothing pending
    assert not other.set_aside


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
@pytest.mark.parametrize("kind", ["threshold", *RIVER])
def test_patience_below_one_is_refused(kind, bad):
    with pytest.raises(ConfigError, match="patience"):
        make_detector(kind, patience=bad)
