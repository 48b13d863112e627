"""Task-switch detectors (strategies/tame/detector.py): the river-style ``update(loss)`` contract."""

from __future__ import annotations

import random

import pytest

from continual.strategies.tame.detector import (
    LossTracker,
    RiverDetector,
    ThresholdDetector,
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
