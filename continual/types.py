"""The small contracts every part of continual speaks: Batch, TaskInfo, Strategy.

A third-party strategy implements ``observe`` and ``predict``; everything else
is optional. Nothing here imports a strategy, a dataset or a logger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from continual.errors import ConfigError, NonFiniteLoss

__all__ = ["Batch", "ConfigError", "EvalSet", "NonFiniteLoss", "Strategy", "TaskInfo"]


@dataclass
class Batch:
    """One training step's data as the learner may see it.

    x: (B, ...) inputs on the run's device.
    y: (B,) int64 global class labels.
    task: (B,) int64 task ids, or None when the scenario hides task ids from
        the learner (class-incremental, domain-incremental, task-free).
    true_task, step, index: metadata for the runner's bookkeeping; a strategy
        must not train on them (``continual.testing`` checks that).
    """

    x: torch.Tensor
    y: torch.Tensor
    task: torch.Tensor | None = None
    true_task: torch.Tensor | None = None
    step: int = 0
    index: torch.Tensor | None = None


@dataclass(frozen=True)
class EvalSet:
    """One column of the score matrix, as a stream that scores its own eval sets declares it.

    name: the column's name (``scores.csv``, ``metrics.jsonl``), e.g. ``IL`` or ``loss/wiki``.
    score: what is measured: ``accuracy``, ``exact_match`` (0-100) or ``loss`` (nats per token).
    higher_is_better: the direction; metrics of lower-is-better scores are sign-adjusted so
        that forgetting > 0 and BWT < 0 always mean "worse than before".
    task: the task whose training this set measures, or None (e.g. CKL's invariant probes).
    """

    name: str
    score: str
    higher_is_better: bool
    task: int | None = None


@dataclass
class TaskInfo:
    """What a learner is told at a visible task boundary."""

    task_id: int
    classes: list[int]
    n_classes_total: int
    step: int
    extra: dict[str, Any] = field(default_factory=dict)


class Strategy:
    """A learner: ``observe`` one batch (one training step), ``predict`` logits.

    Subclasses override ``observe`` and ``predict``; the hooks below are
    optional and called only when the stream shows task boundaries.
    """

    def observe(self, batch: Batch) -> dict[str, Any]:
        """Train on one batch; return what to log.

        Values are floats or 0-d tensors (tensors are read lazily by the
        runner, so returning them avoids a device sync per step). The reserved
        key ``online_correct`` (number of the batch's samples the learner
        classified correctly *before* this step) lets the runner skip its own
        test-then-train forward pass.
        """
        raise NotImplementedError

    def predict(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """Return logits (B, n_classes) for inputs x: (B, ...); no gradients."""
        raise NotImplementedError

    #: read every step's loss before its update (a NaN/Inf skips the batch under on_nan=skip);
    #: the runner sets it False under on_nan=stop, where it checks the logged losses instead
    check_each_step: bool = True
    #: samples at which a task-free strategy detected a task switch (None: it does not detect)
    detected_switches: list[int] | None = None

    def on_task_start(self, info: TaskInfo) -> None:  # noqa: B027 - optional hook
        """Called when a visible task starts."""

    def on_task_end(self, info: TaskInfo) -> None:  # noqa: B027 - optional hook
        """Called when a visible task ends."""

    def prepare_eval(self) -> None:  # noqa: B027 - optional hook
        """Called before every eval point (e.g. to train a deployment model, as TAME does)."""

    def finalize(self) -> None:  # noqa: B027 - optional hook
        """Called once after the last training step, before the final eval point."""

    def summary(self) -> dict[str, Any]:
        """Extra entries for summary.json (e.g. how many experts were spawned)."""
        return {}

    def parameter_count(self) -> int:
        """Parameters of the strategy's model(s) (summary.json ``params``): default, ``self.model``'s."""
        from continual.models.parameters import count_parameters  # continual.models imports this module

        model = getattr(self, "model", None)
        return count_parameters(model) if model is not None else 0

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimisers whose learning rate the run's ``schedule`` drives.

        Default: every ``torch.optim.Optimizer`` the strategy holds in an attribute, directly
        or inside a list, tuple or dict (so a ``SupervisedStrategy`` subclass needs no code).
        Override when they live deeper (TAME's experts) or when some must not be scheduled.
        """
        return find_optimizers(self)

    def state_dict(self) -> dict[str, Any]:
        """Everything the strategy's future depends on (for checkpoints)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027
        """Restore what ``state_dict`` returned."""


def find_optimizers(owner: Any) -> list[torch.optim.Optimizer]:
    """``torch.optim.Optimizer`` objects among ``owner``'s attributes (one level into
    lists, tuples and dict values), in attribute order, each once."""
    found: list[torch.optim.Optimizer] = []
    for value in vars(owner).values():
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else (value,)
        for item in items:
            if isinstance(item, torch.optim.Optimizer) and not any(item is f for f in found):
                found.append(item)
    return found
