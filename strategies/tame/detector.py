"""Task-switch detection from one expert's loss: river-style detectors, ``update(loss) -> flag``.

A detector watches the stream of losses of the expert being trained and says when the data
switched (Zhu et al., TAME, CVPR-W 2024, Sec. 3). Each is a small class, as river's drift
detectors are: ``update(loss)`` feeds the next loss *before* the expert trains on it and
returns the drift flag (also kept in ``drift_detected``); ``state_dict`` /
``load_state_dict`` hold its state as plain data. Its ``LossTracker`` (the expert's window of
raw losses, smoothed loss and tau) is fed separately, with ``record``, once the expert
trained on the loss: a loss that fires belongs to whichever expert trains on it next.

- ``ThresholdDetector``: the paper's rule, smoothed loss above tau.
- ``RiverDetector``: river's ADWIN, PageHinkley or KSWIN on the raw loss.
- ``make_detector`` builds one by name; ``detect_shifts`` runs one over a loss series.
"""

from __future__ import annotations

import abc
import math
from collections import deque
from collections.abc import Sequence
from typing import Any

from continual.types import ConfigError

DETECTORS = ("threshold", "adwin", "page_hinkley", "kswin")


class LossTracker:
    """One expert's loss statistics: a window of its last W raw losses and a smoothed loss.

    ``threshold()`` is the paper's tau = mean(window) + n_sigma * max(std(window), min_std)
    (population std); it changes only when ``record`` adds a loss, so an inactive expert
    keeps the tau it had when last active.
    """

    def __init__(
        self, window: int = 100, alpha: float = 0.2, n_sigma: float = 3.0, min_std: float = 0.005,
        initial_loss: float | None = None, clip: bool = False,
    ) -> None:
        if window < 2:
            raise ConfigError(f"the loss window needs at least 2 losses, got window={window}")
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(f"smoothing factor alpha must lie in (0, 1], got {alpha}")
        self.alpha, self.n_sigma, self.min_std = float(alpha), float(n_sigma), float(min_std)
        self.clip = bool(clip)
        self.window: deque[float] = deque(maxlen=int(window))
        if initial_loss is not None:
            self.window.append(float(initial_loss))
        self.smoothed: float | None = None

    def mean(self) -> float:
        return sum(self.window) / len(self.window) if self.window else math.inf

    def threshold(self) -> float:
        """tau = mean + n_sigma * max(std, min_std) of the window (inf while it is empty)."""
        if not self.window:
            return math.inf
        mean = self.mean()
        std = math.sqrt(sum((v - mean) ** 2 for v in self.window) / len(self.window))
        return mean + self.n_sigma * max(std, self.min_std)

    def candidate(self, loss: float) -> float:
        """The smoothed loss this expert would have after seeing ``loss``."""
        if self.smoothed is None:
            return float(loss)
        return self.alpha * float(loss) + (1.0 - self.alpha) * self.smoothed

    def accepts(self, loss: float) -> bool:
        """Whether data with this loss fits the expert: candidate smoothed loss under tau."""
        return self.candidate(loss) < self.threshold()

    def record(self, loss: float) -> None:
        """Add a loss of a step the expert trained on (window and smoothed loss).

        With ``clip`` the window gets min(loss, tau): a single spike that did not move the
        smoothed loss past tau is not let in to raise tau for the next W steps.
        """
        tau = self.threshold()
        self.smoothed = self.candidate(loss)
        self.window.append(min(float(loss), tau) if self.clip else float(loss))

    def state_dict(self) -> dict[str, Any]:
        return {"window": list(self.window), "smoothed": self.smoothed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.window.clear()
        self.window.extend(state["window"])
        self.smoothed = state["smoothed"]


class SwitchDetector(abc.ABC):
    """A task-switch detector on one expert's losses (river-style: ``update(loss)`` -> flag).

    tracker: the expert's loss statistics the rule reads (a fresh ``LossTracker`` if None);
    the detector reads it, never records into it.
    """

    def __init__(self, tracker: LossTracker | None = None) -> None:
        self.tracker = LossTracker() if tracker is None else tracker
        self.drift_detected = False

    def update(self, loss: float) -> bool:
        """Feed the expert's next loss (before it trains on it); True when the data switched."""
        self.drift_detected = self.fires(loss, self.tracker)
        return self.drift_detected

    @abc.abstractmethod
    def fires(self, loss: float, tracker: LossTracker) -> bool:
        """The rule: whether ``loss`` means a switch, judged against ``tracker``."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class ThresholdDetector(SwitchDetector):
    """The paper's rule: a switch when the smoothed loss exceeds tau (no state of its own;
    checking records nothing)."""

    def fires(self, loss: float, tracker: LossTracker) -> bool:
        return tracker.candidate(loss) > tracker.threshold()


class RiverDetector(SwitchDetector):
    """A river drift detector (ADWIN, PageHinkley, KSWIN) on the active expert's raw loss.

    Fires when river reports a drift *and* the smoothed loss is above the window mean,
    i.e. the loss went up (a falling learning curve is not a task switch). ADWIN and KSWIN
    need 10-20 steps to fire on a jump, and meanwhile the expert keeps training on the new
    task, which lowers the very loss they watch (see benchmarks/results/tame.md).
    """

    KINDS = {"adwin": "ADWIN", "page_hinkley": "PageHinkley", "kswin": "KSWIN"}
    # Defaults tuned for per-step losses (river's own are for other scales): ADWIN checks
    # every step (clock=1, not 32); PageHinkley watches increases only, with a threshold
    # in loss units; KSWIN's alpha is lowered because it tests at every step.
    DEFAULTS: dict[str, dict[str, Any]] = {
        "adwin": {"delta": 0.002, "clock": 1, "grace_period": 10},
        "page_hinkley": {"mode": "up", "threshold": 2.0, "delta": 0.005, "min_instances": 10},
        "kswin": {"alpha": 1e-5, "window_size": 100, "stat_size": 30, "seed": 0},
    }

    def __init__(self, kind: str, tracker: LossTracker | None = None, **params: Any) -> None:
        super().__init__(tracker)
        self.kind, self.params = kind, params
        self.history: list[float] = []  # every loss fed in: the state, as plain data
        if kind not in self.KINDS:
            raise ConfigError(
                f"unknown river detector {kind!r}; choose one of {sorted(self.KINDS)}"
            )
        self.detector = self._new_river_detector()

    def _new_river_detector(self) -> Any:
        try:
            from river import drift
        except ImportError as err:  # pragma: no cover - river is a declared dependency
            raise ConfigError(f"detector {self.kind!r} needs river: pip install river ({err})") from err
        name = self.KINDS[self.kind]
        try:
            return getattr(drift, name)(**{**self.DEFAULTS[self.kind], **self.params})
        except TypeError as err:
            raise ConfigError(f"bad parameters for river {name}: {err}") from err

    def fires(self, loss: float, tracker: LossTracker) -> bool:
        """Feeds river's detector (its state changes), then applies the rule."""
        self.detector.update(float(loss))
        self.history.append(float(loss))
        return bool(self.detector.drift_detected) and tracker.candidate(loss) > tracker.mean()

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild river's detector by replaying the losses it saw (exact, and checkpoints
        stay plain tensors and containers, loadable with ``weights_only=True``)."""
        self.detector = self._new_river_detector()
        for loss in state["history"]:
            self.detector.update(loss)
        self.history = list(state["history"])


def make_detector(
    name: str, params: dict[str, Any] | None = None, tracker: LossTracker | None = None,
) -> ThresholdDetector | RiverDetector:
    """A switch detector by name: ``threshold`` (paper), ``adwin``, ``page_hinkley``, ``kswin``;
    params go to the river class, tracker is the expert's loss statistics."""
    if name == "threshold":
        return ThresholdDetector(tracker)
    if name in RiverDetector.KINDS:
        return RiverDetector(name, tracker, **dict(params or {}))
    raise ConfigError(f"unknown detector {name!r}; choose one of {list(DETECTORS)}")


def detect_shifts(
    losses: Sequence[float], detector: str = "threshold", detector_params: dict | None = None,
    warmup: int = 0, **tracker_options: Any,
) -> list[int]:
    """Run one expert's detector over a loss series; return the indices where it fired.

    Losses at which it does not fire are recorded as training steps, as in the strategy;
    after a firing the series continues with a fresh tracker and detector (a new expert).
    The first ``warmup`` losses after each (re)start are recorded without a check.
    """
    def make() -> ThresholdDetector | RiverDetector:
        return make_detector(detector, detector_params, LossTracker(**tracker_options))

    det = make()
    fired, since = [], 0
    for i, loss in enumerate(losses):
        if since >= max(1, warmup) and det.update(loss):
            fired.append(i)
            det = make()
            since = 0
        det.tracker.record(loss)
        since += 1
    return fired
