"""Learning-rate schedules for continual (pre-)training, driven by the runner for any strategy.

A schedule is a plain object whose ``lr(step)`` gives the learning rate at a global
optimiser step of the main trajectory. In a run (the ``schedule`` config group) its values
are *multiples of each optimiser's own lr* (the strategy's ``lr``: ``eta_max: 1.0`` peaks at
it): ``LRDriver`` sets every parameter group of the strategy's ``optimizers()`` to
``base_lr * schedule.lr(step)`` before each training step, from the runner's step counter.
Schedules that depend on the stream take ``task_steps`` (steps per task, in order), which
the runner fills in from the stream's segments when the stream shows its boundaries, or as
one task of the whole stream's length when it hides them; a schedule that restarts at
every task (``needs_boundaries``) refuses a task-free stream. ``ScheduledLR`` applies a
schedule with absolute values to one torch optimiser (for code outside the runner).

Schedules (defaults from Ibrahim et al., "Simple and Scalable Strategies to
Continually Pre-train Large Language Models", TMLR 2024, arXiv 2403.08763, Sec. 7:
eta_max 3e-4, eta_min 3e-5 = 0.1 eta_max, eta_const 1.65e-4, linear warm-up over 1%
of the steps):

- ``ConstantSchedule``: eta everywhere (optionally after a linear warm-up).
- ``CosineSchedule``: one warm-up + cosine decay over the whole stream.
- ``RepeatedCosineSchedule``: at every task, linear re-warm-up back to eta_max over
  ``warmup_fraction`` of the task's steps, then cosine to eta_min by the task's end
  (Ibrahim et al. Sec. 5, "re-warming and re-decaying").
- ``WSDSchedule``: warm-up, stable at eta_max, short decay to eta_min (Hu et al.,
  MiniCPM, arXiv 2404.06395; decay shape and 20% share as Haegele et al., arXiv
  2405.18392, who found the "1-sqrt" decay best), per task or once.
- ``InfiniteSchedule``: Ibrahim et al. Sec. 7.2, Eq. (infinite LR schedule) and Singh,
  Janson et al., "Beyond Cosine Decay", CoLLAs 2025, arXiv 2503.02844, Sec. 3: linear
  warm-up to eta_max, cool-down (cosine, or inverse-sqrt with timescale alpha) to
  eta_const, then eta_const for as long as the stream goes on (no re-warm at later
  tasks). The exponential anneal to eta_min, eta_const * (eta_min/eta_const) ** x for
  x in [0, 1], is a *branch*: ``anneal_lr(i, n)``; the run loop trains a copy with it
  when a deployable checkpoint is wanted and resumes the stream from the pre-anneal
  weights.
- ``OneCycleSchedule``: the one-cycle policy (Smith and Topin, "Super-Convergence",
  arXiv 1708.07120) as the official CKL code (Jang et al., ICLR 2022) runs it through torch's
  ``OneCycleLR(pct_start=0.1, anneal_strategy='linear', cycle_momentum=False)``: linear from
  eta_max / div_factor up to eta_max by ``pct_start`` of the stream's steps, then linear down
  to eta_max / (div_factor * final_div_factor) at the last step; the same values as torch's,
  step for step.

Departures: warm-up and cool-down lengths are given as fractions of the first task's
steps (the papers give them in tokens/steps of their pre-training stage); alpha for
the inverse-sqrt cool-down defaults to 10, a value we chose (not checked against the
paper's runs).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence

import torch

from continual.types import ConfigError

ETA_MAX = 3e-4
ETA_MIN = 3e-5
ETA_CONST = 1.65e-4
WARMUP_FRACTION = 0.01


def _task_steps(task_steps: Sequence[int] | int | None, name: str) -> list[int]:
    if task_steps is None:
        raise ConfigError(
            f"{name} needs task_steps (the number of optimiser steps of each task, in order); "
            "pass task_steps=[n1, n2, ...] or one int for a single task"
        )
    steps = [int(task_steps)] if isinstance(task_steps, int) else [int(s) for s in task_steps]
    if not steps or any(s <= 0 for s in steps):
        raise ConfigError(f"{name}: task_steps must be positive step counts, got {list(steps)}")
    return steps


def _check_fraction(value: float, name: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a fraction in [0, 1], got {value}")


def _warmup_cosine(i: int, n: int, warmup: int, eta_max: float, eta_min: float) -> float:
    """Linear warm-up over steps 0..warmup-1 up to eta_max, then cosine from eta_max at
    step ``warmup`` to eta_min at the last step n-1."""
    if i < warmup:
        return eta_max * (i + 1) / warmup
    span = max(n - 1 - warmup, 1)
    x = min((i - warmup) / span, 1.0)
    return eta_min + 0.5 * (eta_max - eta_min) * (1.0 + math.cos(math.pi * x))


class Schedule(abc.ABC):
    """A learning rate as a function of the global step of the main trajectory."""

    #: restarts at every task, so it needs the stream's task boundaries
    needs_boundaries: bool = False

    @property
    def is_identity(self) -> bool:
        """True when ``lr(step) == 1.0`` at every step (the runner then leaves the lr alone)."""
        return False

    def anneal_steps(self, task: int) -> int:
        """Steps of the deployable anneal branch at the end of ``task`` (0: no branch)."""
        return 0

    @abc.abstractmethod
    def lr(self, step: int) -> float:
        """The learning rate at global step ``step``."""

    def task_of(self, step: int) -> tuple[int, int]:
        """(task index, step within that task) for a global step; last task extends."""
        steps = getattr(self, "task_steps", None) or [step + 1]
        start = 0
        for k, n in enumerate(steps):
            if step < start + n or k == len(steps) - 1:
                return k, step - start
            start += n
        raise AssertionError("unreachable")

    def curve(self, n_steps: int) -> list[float]:
        """The learning rate at steps 0..n_steps-1 (for plots and tests)."""
        return [self.lr(s) for s in range(n_steps)]


class ConstantSchedule(Schedule):
    """eta at every step, after an optional linear warm-up of ``warmup_steps``."""

    def __init__(self, eta: float = ETA_CONST, warmup_steps: int = 0,
                 task_steps: Sequence[int] | int | None = None) -> None:
        if eta <= 0:
            raise ConfigError(f"ConstantSchedule: eta must be positive, got {eta}")
        self.eta = eta
        self.warmup_steps = int(warmup_steps)
        self.task_steps = task_steps

    def lr(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.eta * (step + 1) / self.warmup_steps
        return self.eta

    @property
    def is_identity(self) -> bool:
        return self.eta == 1.0 and self.warmup_steps == 0


class CosineSchedule(Schedule):
    """One linear warm-up and one cosine decay from eta_max to eta_min over all tasks."""

    def __init__(self, eta_max: float = ETA_MAX, eta_min: float = ETA_MIN,
                 warmup_fraction: float = WARMUP_FRACTION,
                 task_steps: Sequence[int] | int | None = None) -> None:
        name = type(self).__name__
        _check_fraction(warmup_fraction, f"{name}.warmup_fraction")
        self.eta_max, self.eta_min = eta_max, eta_min
        self.warmup_fraction = warmup_fraction
        self.task_steps = _task_steps(task_steps, name)

    def lr(self, step: int) -> float:
        total = sum(self.task_steps)
        warmup = max(1, round(self.warmup_fraction * total)) if self.warmup_fraction else 0
        return _warmup_cosine(step, total, warmup, self.eta_max, self.eta_min)


class RepeatedCosineSchedule(CosineSchedule):
    """Warm-up + cosine decay restarted at every task (re-warming; Ibrahim et al. Sec. 5).

    Task k with n_k steps: linear warm-up from ~0 to eta_max over
    ``round(warmup_fraction * n_k)`` steps, then cosine to eta_min at its last step.
    """

    needs_boundaries = True

    def lr(self, step: int) -> float:
        k, i = self.task_of(step)
        n = self.task_steps[k]
        warmup = max(1, round(self.warmup_fraction * n)) if self.warmup_fraction else 0
        return _warmup_cosine(i, n, warmup, self.eta_max, self.eta_min)


class WSDSchedule(Schedule):
    """Warmup-Stable-Decay: warm-up to eta_max, hold, decay to eta_min over the last share.

    ``decay_shape``: ``linear``, ``cosine`` or ``1-sqrt`` (eta_min + (eta_max - eta_min) *
    (1 - sqrt(x))). ``per_task=True`` restarts the three phases at every task (the fair
    comparison with repeated cosine in a stream); ``False`` runs them once over all steps.
    """

    SHAPES = ("linear", "cosine", "1-sqrt")

    def __init__(self, eta_max: float = ETA_MAX, eta_min: float = ETA_MIN,
                 warmup_fraction: float = WARMUP_FRACTION, decay_fraction: float = 0.2,
                 decay_shape: str = "1-sqrt", per_task: bool = True,
                 task_steps: Sequence[int] | int | None = None) -> None:
        _check_fraction(warmup_fraction, "WSDSchedule.warmup_fraction")
        _check_fraction(decay_fraction, "WSDSchedule.decay_fraction")
        if warmup_fraction + decay_fraction > 1:
            raise ConfigError(
                f"WSDSchedule: warmup_fraction + decay_fraction = "
                f"{warmup_fraction + decay_fraction} > 1; leave room for the stable phase")
        if decay_shape not in self.SHAPES:
            raise ConfigError(f"WSDSchedule: decay_shape {decay_shape!r} not in {self.SHAPES}")
        self.eta_max, self.eta_min = eta_max, eta_min
        self.warmup_fraction, self.decay_fraction = warmup_fraction, decay_fraction
        self.decay_shape, self.per_task = decay_shape, per_task
        self.task_steps = _task_steps(task_steps, "WSDSchedule")
        self.needs_boundaries = per_task

    def lr(self, step: int) -> float:
        if self.per_task:
            k, i = self.task_of(step)
            n = self.task_steps[k]
        else:
            i, n = step, sum(self.task_steps)
        warmup = max(1, round(self.warmup_fraction * n)) if self.warmup_fraction else 0
        decay = round(self.decay_fraction * n)
        if i < warmup:
            return self.eta_max * (i + 1) / warmup
        if i < n - decay or decay == 0:
            return self.eta_max
        x = min((i - (n - decay) + 1) / decay, 1.0)
        if self.decay_shape == "linear":
            f = 1.0 - x
        elif self.decay_shape == "cosine":
            f = 0.5 * (1.0 + math.cos(math.pi * x))
        else:
            f = 1.0 - math.sqrt(x)
        return self.eta_min + (self.eta_max - self.eta_min) * f


class InfiniteSchedule(Schedule):
    """Infinite LR schedule: warm-up, cool-down to eta_const, constant; anneal as a branch.

    Main trajectory (Ibrahim et al. Sec. 7.2; Singh, Janson et al. Sec. 3), with
    T_w = warm-up steps and T_cd = end of cool-down, both inside the first task:

    - t < T_w: eta_max * (t + 1) / T_w
    - T_w <= t < T_cd, x = (t - T_w) / (T_cd - T_w):
      cosine: eta_const + (eta_max - eta_const) / 2 * (1 + cos(pi x));
      inv_sqrt: eta_max + (eta_const - eta_max) * h(x) / h(1), h(x) = 1/sqrt(1 + alpha x) - 1
    - t >= T_cd: eta_const, at every later task too (no re-warm).

    ``anneal_lr(i, n)`` is the branch: eta_const * (eta_min / eta_const) ** ((i + 1) / n),
    i = 0..n-1, reaching eta_min at the branch's last step.
    """

    COOLDOWNS = ("cosine", "inv_sqrt")

    def __init__(self, eta_max: float = ETA_MAX, eta_min: float = ETA_MIN,
                 eta_const: float = ETA_CONST, warmup_fraction: float = WARMUP_FRACTION,
                 cooldown_fraction: float = 0.5, cooldown: str = "cosine", alpha: float = 10.0,
                 anneal_fraction: float = 0.1,
                 task_steps: Sequence[int] | int | None = None) -> None:
        _check_fraction(warmup_fraction, "InfiniteSchedule.warmup_fraction")
        _check_fraction(cooldown_fraction, "InfiniteSchedule.cooldown_fraction")
        _check_fraction(anneal_fraction, "InfiniteSchedule.anneal_fraction")
        if cooldown not in self.COOLDOWNS:
            raise ConfigError(f"InfiniteSchedule: cooldown {cooldown!r} not in {self.COOLDOWNS}")
        if not eta_min <= eta_const <= eta_max:
            raise ConfigError(
                f"InfiniteSchedule needs eta_min <= eta_const <= eta_max, got "
                f"{eta_min}, {eta_const}, {eta_max}")
        if alpha <= 0:
            raise ConfigError(f"InfiniteSchedule: alpha must be positive, got {alpha}")
        self.eta_max, self.eta_min, self.eta_const = eta_max, eta_min, eta_const
        self.warmup_fraction, self.cooldown_fraction = warmup_fraction, cooldown_fraction
        self.cooldown, self.alpha = cooldown, alpha
        self.anneal_fraction = anneal_fraction
        self.task_steps = _task_steps(task_steps, "InfiniteSchedule")

    def phase_ends(self) -> tuple[int, int]:
        """(T_w, T_cd): end of warm-up and end of cool-down, in global steps."""
        n0 = self.task_steps[0]
        warmup = max(1, round(self.warmup_fraction * n0)) if self.warmup_fraction else 0
        end_cd = max(warmup + 1, warmup + round(self.cooldown_fraction * n0))
        return warmup, end_cd

    def lr(self, step: int) -> float:
        warmup, end_cd = self.phase_ends()
        if step < warmup:
            return self.eta_max * (step + 1) / warmup
        if step >= end_cd:
            return self.eta_const
        x = (step - warmup) / (end_cd - warmup)
        if self.cooldown == "cosine":
            half = 0.5 * (self.eta_max - self.eta_const)
            return self.eta_const + half * (1 + math.cos(math.pi * x))
        h = lambda u: 1.0 / math.sqrt(1.0 + self.alpha * u) - 1.0  # noqa: E731
        return self.eta_max + (self.eta_const - self.eta_max) * h(x) / h(1.0)

    def anneal_steps(self, task: int) -> int:
        """Length of the anneal branch at the end of ``task`` (0 when anneal_fraction is 0)."""
        steps = self.task_steps[min(task, len(self.task_steps) - 1)]
        return min(round(self.anneal_fraction * steps), steps)

    def anneal_lr(self, i: int, n: int) -> float:
        """Learning rate at step i (0-based) of an n-step anneal branch."""
        if n <= 0:
            raise ConfigError(f"anneal branch needs n > 0 steps, got {n}")
        return self.eta_const * (self.eta_min / self.eta_const) ** ((i + 1) / n)


class OneCycleSchedule(Schedule):
    """One cycle over the whole stream, the values of torch's ``OneCycleLR`` with
    ``anneal_strategy='linear'``, ``three_phase=False`` (see the module docstring).

    With N the stream's steps, a = pct_start * N - 1 (the peak step, possibly fractional),
    eta_0 = eta_max / div_factor and eta_end = eta_0 / final_div_factor:

    - step t <= a: eta_0 + (eta_max - eta_0) * t / a
    - a < t: eta_max + (eta_end - eta_max) * (t - a) / (N - 1 - a)

    Departures from the official code: it sized the cycle as epochs * (batches // n_gpu + 1)
    steps, one more step per epoch than it trains, so its lr stops just short of eta_end;
    here the cycle spans exactly the stream's steps. Steps past the end keep eta_end (torch
    raises). Momentum is not cycled (the official ``cycle_momentum=False``).
    """

    def __init__(self, eta_max: float = 1.0, pct_start: float = 0.1, div_factor: float = 25.0,
                 final_div_factor: float = 1e4,
                 task_steps: Sequence[int] | int | None = None) -> None:
        if not 0.0 <= pct_start < 1.0:
            raise ConfigError(f"OneCycleSchedule: pct_start must be in [0, 1), got {pct_start}")
        if eta_max <= 0 or div_factor <= 0 or final_div_factor <= 0:
            raise ConfigError(
                f"OneCycleSchedule: eta_max, div_factor and final_div_factor must be positive, got "
                f"{eta_max}, {div_factor}, {final_div_factor}")
        self.eta_max, self.pct_start = eta_max, pct_start
        self.div_factor, self.final_div_factor = div_factor, final_div_factor
        self.task_steps = _task_steps(task_steps, "OneCycleSchedule")

    def lr(self, step: int) -> float:
        total = sum(self.task_steps)
        t = min(step, total - 1)
        start = self.eta_max / self.div_factor
        end = start / self.final_div_factor
        peak = float(self.pct_start * total) - 1  # torch's end of the first phase
        if t <= peak:  # peak == 0 (pct_start * N == 1): torch divides by zero; the peak is meant
            return start + (self.eta_max - start) * (t / peak if peak > 0 else 1.0)
        span = (total - 1) - peak
        return self.eta_max + (end - self.eta_max) * (t - peak) / span if span > 0 else end


class ScheduledLR(torch.optim.lr_scheduler.LRScheduler):
    """Set every parameter group's lr from a ``Schedule`` at each ``step()``.

    A group with an ``lr_scale`` entry gets ``lr_scale * schedule.lr(step)`` (e.g. LoRA
    or adapter parameters trained at a multiple of the base rate).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule,
                 last_epoch: int = -1) -> None:
        self.schedule = schedule
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        eta = self.schedule.lr(max(self.last_epoch, 0))
        return [eta * g.get("lr_scale", 1.0) for g in self.optimizer.param_groups]


class BranchLR:
    """Drive an optimiser through an anneal branch: ``step()`` sets the next branch lr."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: InfiniteSchedule,
                 n_steps: int) -> None:
        self.optimizer, self.schedule, self.n_steps, self.i = optimizer, schedule, n_steps, 0
        self._apply()

    def _apply(self) -> None:
        eta = self.schedule.anneal_lr(min(self.i, self.n_steps - 1), self.n_steps)
        for g in self.optimizer.param_groups:
            g["lr"] = eta * g.get("lr_scale", 1.0)

    def step(self) -> None:
        self.i += 1
        self._apply()


class LRDriver:
    """Drives the lr of a strategy's optimisers from the runner's step counter.

    Before each training step, every parameter group of ``strategy.optimizers()`` gets
    ``base_lr * schedule.lr(step)``, where ``base_lr`` is the group's lr when the driver
    first saw it (kept in the group as ``"schedule_base_lr"``, so it travels with the
    optimiser's state dict through checkpoints; optimisers made later, such as a new TAME
    expert's, join at the next step: one made during a step trains that step at its own lr).
    ``apply_branch`` does the same for the infinite schedule's anneal branch. An identity
    schedule (``constant`` at 1.0, no warm-up) changes nothing, so results are bit-identical
    to a run without a schedule.
    """

    KEY = "schedule_base_lr"

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule

    @staticmethod
    def optimizers_of(strategy) -> list[torch.optim.Optimizer]:
        from continual.types import find_optimizers

        hook = getattr(strategy, "optimizers", None)
        return list(hook()) if callable(hook) else find_optimizers(strategy)

    def _set(self, strategy, factor: float, step: int = 1) -> None:
        optimizers = self.optimizers_of(strategy)
        if not optimizers and step == 0:
            return  # e.g. TAME makes its first expert (and optimiser) during the first step
        if not optimizers:
            from continual.types import ConfigError

            raise ConfigError(
                f"schedule {type(self.schedule).__name__} has no optimiser to drive: strategy "
                f"{type(strategy).__name__} holds no torch.optim.Optimizer attribute; define its "
                "optimizers() (continual.types.Strategy) or run it with schedule=constant"
            )
        for opt in optimizers:
            for g in opt.param_groups:
                base = g.setdefault(self.KEY, g["lr"])
                g["lr"] = base * factor

    def apply(self, strategy, step: int) -> None:
        """Set the lr for main-trajectory step ``step`` (0-based)."""
        if not self.schedule.is_identity:
            self._set(strategy, self.schedule.lr(step), step)

    def apply_branch(self, strategy, i: int, n: int) -> None:
        """Set the lr for step ``i`` of an ``n``-step anneal branch."""
        self._set(strategy, self.schedule.anneal_lr(i, n))

    @classmethod
    def current_lr(cls, strategy) -> float | None:
        """The first parameter group's lr (what metrics.jsonl logs), or None without optimisers."""
        opts = cls.optimizers_of(strategy)
        return float(opts[0].param_groups[0]["lr"]) if opts else None


SCHEDULES = {
    "constant": ConstantSchedule,
    "cosine": CosineSchedule,
    "repeated_cosine": RepeatedCosineSchedule,
    "wsd": WSDSchedule,
    "infinite": InfiniteSchedule,
    "one_cycle": OneCycleSchedule,
}


def build_schedule(name: str, task_steps: Sequence[int] | int, **kwargs) -> Schedule:
    """A schedule by name (``constant``, ``cosine``, ``repeated_cosine``, ``wsd``, ``infinite``,
    ``one_cycle``)."""
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    return SCHEDULES[name](task_steps=task_steps, **kwargs)
