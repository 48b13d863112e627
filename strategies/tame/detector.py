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

The window tau is taken over is the tracker's: the paper's fixed W, or an ``AdaptiveWindow``
(beyond the paper) that grows with the losses the expert has seen. It belongs to the tracker,
not to one detector, because tau serves two decisions: this expert's switch check and, later,
whether it accepts a batch when the pool looks for an expert to reuse (``LossTracker.accepts``).
A detector's ``patience`` (beyond the paper too) asks for that many firings in a row, the
first ones set aside by the caller (``SwitchDetector.set_aside``).
"""

from __future__ import annotations

import abc
import itertools
import math
from collections import deque
from collections.abc import Sequence
from typing import Any

from continual.types import ConfigError

DETECTORS = ("threshold", "adwin", "page_hinkley", "kswin")


class AdaptiveWindow:
    """A loss window that fits the stream: tau is taken over the expert's latest
    ``size(seen) = clamp(ceil(fraction * seen), min_size, max_size)`` losses, where ``seen`` is
    the number of losses it has recorded (its trained steps, plus the initial loss).

    Beyond the paper, which uses a fixed W (100; the public code 35 on Split-MNIST): a fixed
    W longer than a task keeps the expert's whole learning curve in the window, whose high
    early losses lift tau above the next switch's jump (benchmarks/results/tame.md: W=100
    finds 1 of 4 switches on online Split-MNIST, 80 steps a task). With ``fraction`` 0.5 the
    window holds the latter half of what the expert has seen: its early learning curve leaves
    the window as it trains, whatever the task's length, and the window grows with the
    expert's experience, so a long stationary stretch gives a long, steady window.
    ``min_size`` keeps tau from resting on a handful of losses early on (20: the smoothed loss,
    alpha 0.2, keeps (1 - alpha)^20, about 1%, of what is older than the window);
    ``max_size`` bounds the memory and cost (the losses kept) on an endless task. A window of
    converged losses is quiet, so one outlier batch can pass its tau: TAME's default pairs it
    with ``patience=2`` (``SwitchDetector``), a switch confirmed on the next batch.
    """

    def __init__(self, fraction: float = 0.5, min_size: int = 20, max_size: int = 1000) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"window_fraction is the share of an expert's losses tau is taken "
                              f"over, in (0, 1], got {fraction}; e.g. 0.5")
        if min_size < 2 or max_size < min_size:
            raise ConfigError(f"the adaptive window needs 2 <= min_window <= max_window, got "
                              f"min_window={min_size}, max_window={max_size}")
        self.fraction, self.min_size, self.max_size = float(fraction), int(min_size), int(max_size)

    def size(self, seen: int) -> int:
        """How many of the latest losses tau is taken over, after ``seen`` recorded losses."""
        return max(self.min_size, min(self.max_size, math.ceil(self.fraction * seen)))


class LossTracker:
    """One expert's loss statistics: a window of its last raw losses and a smoothed loss.

    ``threshold()`` is the paper's tau = mean(window) + n_sigma * max(std(window), min_std)
    (population std); it changes only when ``record`` adds a loss, so an inactive expert
    keeps the tau it had when last active. The window is the last ``window`` losses (the
    paper's fixed W), or, with ``adaptive`` (an ``AdaptiveWindow``), the last
    ``adaptive.size(seen)`` of them.
    """

    def __init__(
        self, window: int = 100, alpha: float = 0.2, n_sigma: float = 3.0, min_std: float = 0.005,
        initial_loss: float | None = None, clip: bool = False,
        adaptive: AdaptiveWindow | None = None,
    ) -> None:
        if adaptive is not None:
            window = adaptive.max_size
        if window < 2:
            raise ConfigError(f"the loss window needs at least 2 losses, got window={window}")
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(f"smoothing factor alpha must lie in (0, 1], got {alpha}")
        self.alpha, self.n_sigma, self.min_std = float(alpha), float(n_sigma), float(min_std)
        self.clip = bool(clip)
        self.adaptive = adaptive
        self.window: deque[float] = deque(maxlen=int(window))  # the latest losses held
        self.seen = 0  # losses recorded (and the initial one): what an adaptive window grows by
        if initial_loss is not None:
            self.window.append(float(initial_loss))
            self.seen = 1
        self.smoothed: float | None = None

    def losses(self) -> list[float]:
        """The window tau is taken over: every loss held, or the adaptive window's latest."""
        if self.adaptive is None:
            return list(self.window)
        size = self.adaptive.size(self.seen)
        return list(itertools.islice(self.window, max(0, len(self.window) - size), None))

    def mean(self) -> float:
        window = self.losses()
        return sum(window) / len(window) if window else math.inf

    def threshold(self) -> float:
        """tau = mean + n_sigma * max(std, min_std) of the window (inf while it is empty)."""
        window = self.losses()
        if not window:
            return math.inf
        mean = sum(window) / len(window)
        std = math.sqrt(sum((v - mean) ** 2 for v in window) / len(window))
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
        value = min(float(loss), self.threshold()) if self.clip else float(loss)
        self.smoothed = self.candidate(loss)
        self.window.append(value)
        self.seen += 1

    def state_dict(self) -> dict[str, Any]:
        return {"window": list(self.window), "smoothed": self.smoothed, "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.window.clear()
        self.window.extend(state["window"])
        self.smoothed = state["smoothed"]
        # checkpoints written before the adaptive window did not count: what the window holds
        self.seen = int(state.get("seen", len(self.window)))


def check_patience(patience: int) -> None:
    """Refuse a patience that is not a whole number of batches >= 1."""
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ConfigError(f"patience is the number of batches in a row that must fire for a "
                          f"switch, at least 1 (the paper's), got {patience!r}")


class SwitchDetector(abc.ABC):
    """A task-switch detector on one expert's losses (river-style: ``update(loss)`` -> flag).

    tracker: the expert's loss statistics the rule reads (a fresh ``LossTracker`` if None);
    the detector reads it, never records into it.
    patience: how many losses in a row the rule must fire on for a switch (1: the paper's,
    each firing is one). While a firing awaits its confirmation, ``set_aside`` is True: the
    caller neither trains the expert on that batch nor records its loss, so the next batch
    of a new task meets the old expert as unchanged as the first, while a one-batch outlier
    (a few confidently wrong samples, a one-step divergence) leaves no trace (beyond the
    paper; issue 17).
    """

    def __init__(self, tracker: LossTracker | None = None, patience: int = 1) -> None:
        check_patience(patience)
        self.tracker = LossTracker() if tracker is None else tracker
        self.patience = patience
        self.pending = 0  # firings in a row not yet confirmed
        self.drift_detected = False

    def update(self, loss: float) -> bool:
        """Feed the expert's next loss (before it trains on it); True when the data switched:
        the rule fired on this loss and the ``patience - 1`` before it."""
        self.pending = self.pending + 1 if self.fires(loss, self.tracker) else 0
        self.drift_detected = self.pending >= self.patience
        if self.drift_detected:
            self.pending = 0
        return self.drift_detected

    @property
    def set_aside(self) -> bool:
        """The last loss fired and awaits confirmation: not to be trained on or recorded."""
        return self.pending > 0

    @abc.abstractmethod
    def fires(self, loss: float, tracker: LossTracker) -> bool:
        """The rule: whether ``loss`` means a switch, judged against ``tracker``."""

    def state_dict(self) -> dict[str, Any]:
        return {"pending": self.pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pending = int(state.get("pending", 0))  # states before patience: none pending


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
        super().__init__(tracker)  # patience 1: river's detectors reset after an alarm
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
        return {**super().state_dict(), "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild river's detector by replaying the losses it saw (exact, and checkpoints
        stay plain tensors and containers, loadable with ``weights_only=True``)."""
        super().load_state_dict(state)
        self.detector = self._new_river_detector()
        for loss in state["history"]:
            self.detector.update(loss)
        self.history = list(state["history"])


def make_detector(
    name: str, params: dict[str, Any] | None = None, tracker: LossTracker | None = None,
    patience: int = 1,
) -> ThresholdDetector | RiverDetector:
    """A switch detector by name: ``threshold`` (paper), ``adwin``, ``page_hinkley``, ``kswin``;
    params go to the river class, tracker is the expert's loss statistics, patience the
    firings in a row a switch needs (``SwitchDetector``), for the threshold rule only: river's
    detectors reset after an alarm and never fire twice in a row, so each alarm is a switch."""
    if name == "threshold":
        return ThresholdDetector(tracker, patience)
    if name in RiverDetector.KINDS:
        check_patience(patience)  # a bad value is refused, whichever the detector
        return RiverDetector(name, tracker, **dict(params or {}))
    raise ConfigError(f"unknown detector {name!r}; choose one of {list(DETECTORS)}")


def detect_shifts(
    losses: Sequence[float], detector: str = "threshold", detector_params: dict | None = None,
    warmup: int = 0, patience: int = 1, **tracker_options: Any,
) -> list[int]:
    """Run one expert's detector over a loss series; return the indices where it fired.

    Losses at which it does not fire are recorded as training steps, as in the strategy, and
    losses set aside awaiting confirmation (``patience`` > 1) are not; after a switch the series
    continues with a fresh tracker and detector (a new expert). The first ``warmup`` losses
    after each (re)start are recorded without a check.
    """
    def make() -> ThresholdDetector | RiverDetector:
        return make_detector(detector, detector_params, LossTracker(**tracker_options), patience)

    det = make()
    fired, since = [], 0
    for i, loss in enumerate(losses):
        if since >= max(1, warmup):
            if det.update(loss):
                fired.append(i)
                det = make()
                since = 0
            elif det.set_aside:
                continue
        det.tracker.record(loss)
        since += 1
    return fired
