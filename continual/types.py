"""The small contracts every part of continual speaks: Batch, TaskInfo, Strategy, Stream, Logger.

Every part the runner talks to is declared here, with no-op defaults for what is optional, so
the engine calls it without probing (``hasattr``) what it was given:

- ``Strategy``: ``observe`` and ``predict``; hooks (task start/end, eval, state) optional.
- ``Stream``: its tasks, segments and batches; a ``ClassificationStream`` is scored by the
  engine (accuracy per task), a ``SelfScoringStream`` names and scores its own eval sets
  (exact match, loss), each with its direction.
- ``Logger``: a view of the run's records; every method the runner calls, each a no-op here.

Nothing here imports a strategy, a dataset or a logger.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from continual.errors import ConfigError, NonFiniteLoss

if TYPE_CHECKING:  # torch is imported where tensors are made: importing the contracts stays cheap
    import torch

__all__ = ["Batch", "ClassificationStream", "ConfigError", "EvalSet", "Logger", "NonFiniteLoss", "Segment",
           "SelfScoringStream", "Strategy", "Stream", "TaskInfo", "strategy_member"]


@dataclass
class Batch:
    """One training step's data as the learner may see it.

    x: (B, ...) inputs on the run's device.
    y: (B,) int64 global class labels; for a language stream, (B, T) next-token targets (-100
        where no loss is taken).
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
    #: observe() takes gradient steps with ``optimizers()``; False for a learner that only writes
    #: and reads a memory (a kNN memory over a frozen encoder): a learning-rate schedule, which
    #: would drive nothing, is then refused at start
    takes_gradient_steps: bool = True

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
    import torch

    found: list[torch.optim.Optimizer] = []
    for value in vars(owner).values():
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else (value,)
        for item in items:
            if isinstance(item, torch.optim.Optimizer) and not any(item is f for f in found):
                found.append(item)
    return found


def strategy_member(strategy: Any, name: str) -> Any:
    """The one door to the optional part of the ``Strategy`` protocol: ``strategy``'s own hook or
    attribute ``name``, or, for a plain class that only has ``observe`` and ``predict`` (what the
    contract requires), the protocol's default (a no-op hook, ``summary() == {}``, no state,
    ``detected_switches`` None)."""
    if isinstance(strategy, Strategy):
        return getattr(strategy, name)
    own = getattr(strategy, name, _MISSING)
    if own is not _MISSING:
        return own
    default = getattr(Strategy, name)
    return default.__get__(strategy) if callable(default) else default


_MISSING = object()


# ---------------------------------------------------------------- streams

@dataclass
class Segment:
    """Schedule positions [start, end) in which task ``task`` is nominally trained."""

    start: int
    end: int
    task: int


class Stream:
    """What every stream provides to the runner: its tasks, how they are presented, and batches.

    A stream is a schedule of training positions cut into ``segments`` (one stretch of one task
    each, in order); ``batches(segment)`` yields that stretch as consecutive ``Batch`` es of
    ``batch_size`` samples, deterministically for the stream's seed, from any position (so a run
    resumes exactly). How a stream is scored is declared by its kind: subclass
    ``ClassificationStream`` (the engine scores accuracy per task) or ``SelfScoringStream`` (the
    stream scores its own eval sets). The attributes below are the defaults a subclass overrides.

    Attributes:
        name: the stream's name in records and reports.
        batch_size: samples per training step.
        tasks: one object per task with ``classes`` (list of int) and ``name``.
        segments: the schedule's segments, in order.
        kind: what ``summary.json``'s ``protocol`` says of a self-scoring stream.
        boundaries: ``visible`` (the runner calls the strategy's task hooks) or ``hidden``.
        task_labels: batches and eval inputs carry task ids (task-incremental).
        n_classes: output classes of a classification model (0 for language streams).
        online_accuracy: test-then-train accuracy is meaningful (each batch scored before training).
        needs_model: ``prepare(model, tokenizer)`` must be called before the run (language streams).
    """

    # declared, not defaulted: every stream sets its own (a dataclass stream takes them as fields)
    name: str
    batch_size: int
    tasks: Sequence[Any]
    segments: list[Segment]
    kind: str = "classification"
    boundaries: str = "visible"
    task_labels: bool = False
    n_classes: int = 0
    online_accuracy: bool = True
    needs_model: bool = False
    #: training tokens are counted (language streams): records carry ``tokens_seen`` (the
    #: loggers' x-axis) and summary.json ``tokens_seen`` and ``tokens_per_second``
    counts_tokens: bool = False

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    def __len__(self) -> int:
        """Training samples in the schedule (all passes and repeats)."""
        return self.segments[-1].end if self.segments else 0

    def segment_steps(self) -> list[int]:
        """Training steps (batches) of each segment, in order."""
        return [-(-(s.end - s.start) // self.batch_size) for s in self.segments]

    def n_steps(self) -> int:
        return sum(self.segment_steps())

    @property
    def true_boundaries(self) -> list[int]:
        """Sample counts at which the nominal task changes (task-free detection targets)."""
        return [b.start for a, b in zip(self.segments, self.segments[1:]) if a.task != b.task]

    def batches(self, segment: Segment, first_step: int = 0, start: int | None = None) -> Iterator[Batch]:
        """Batches of ``segment`` (step numbers from ``first_step``), from schedule position
        ``start`` (default: the segment's start). Every batch but a segment's last holds
        ``batch_size`` positions, so a run that resumes after k batches passes
        ``start = segment.start + k * batch_size`` and must get the same batches as before."""
        raise NotImplementedError

    def to(self, device: torch.device | str) -> Stream:
        """Move what batches are cut from to ``device``; returns the stream."""
        return self

    def batch_tokens(self, batch: Batch) -> int | torch.Tensor:
        """Training tokens in ``batch`` (asked only when ``counts_tokens``): an int, or a 0-d
        tensor the runner reads lazily, once per log window."""
        return 0

    def task_extra(self, task: int) -> dict[str, Any]:
        """What ``TaskInfo.extra`` carries at task ``task``'s boundaries (default: nothing)."""
        return {}

    def prepare(self, model: Any, tokenizer: Any) -> None:  # noqa: B027 - optional hook
        """Called once with the model before the run when ``needs_model`` (language streams)."""


class ClassificationStream(Stream):
    """A stream the engine scores: accuracy of ``predict``'s argmax on each task's test set
    (class-IL, and task-IL with the task's classes only), and on a held-out validation split
    when ``has_validation``."""

    has_validation: bool = False
    input_shape: tuple[int, ...] = ()

    def eval_set(self, task: int, max_items: int | None = None,
                 split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (N, ...) and labels (N,) of task ``task``'s ``test`` (or ``val``) set, a fixed
        subset of ``max_items`` when given."""
        raise NotImplementedError


class SelfScoringStream(Stream):
    """A stream that names and scores its own eval sets (the language streams: probe sets by
    exact match, corpora by held-out loss). Each eval point the runner calls ``score_eval_sets``;
    the metrics read one score per task (``task_scores``), sign-adjusted where lower is better."""

    #: the columns of the score matrix, in order (an attribute or a property)
    eval_sets: list[EvalSet]
    online_accuracy = False
    kind = "self_scoring"

    def score_eval_sets(self, strategy: Any) -> tuple[list[float], list[dict[str, Any]] | None]:
        """One score per eval set, and per-item results to keep (``answers.jsonl``) or None."""
        raise NotImplementedError

    def task_scores(self, scores: Sequence[float]) -> list[float]:
        """One score per task from a row of ``scores`` (default: the sets that name a task)."""
        return [s for spec, s in zip(self.eval_sets, scores) if spec.task is not None]

    def eval_metrics(self, rows: list[dict[str, float]], task_end_rows: list[int]) -> dict[str, Any]:
        """The stream's own entries of each eval record (e.g. IL, UL, NL, FUAR); ``rows``: every
        eval row so far as {set name: score}."""
        return {}

    def summary_metrics(self, rows: list[dict[str, float]], task_end_rows: list[int]) -> dict[str, Any]:
        """The stream's own entries of ``summary.json``."""
        return {}


# ---------------------------------------------------------------- loggers

class Logger:
    """A view of the run's records (console, wandb, TensorBoard): every method the runner calls,
    each a no-op here; a logger overrides the ones it needs."""

    def start(self, runner: Any) -> None:  # noqa: B027 - optional hook
        """Training starts (or resumes): ``runner.stream``, ``runner.state``, ``runner.out_dir``.
        A fresh run's first record, the untrained model's ``init`` eval point, reaches ``log``
        before this call: a logger that needs set-up makes it at its first call of either."""

    def log(self, record: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """One ``metrics.jsonl`` record (a step window or an eval point)."""

    def progress(self, state: Any) -> None:  # noqa: B027 - optional hook
        """Every ``log.every`` steps: the run's counters (``RunState``)."""

    def checkpoint(self, path: Path, step: int) -> None:  # noqa: B027 - optional hook
        """A checkpoint was written to ``path`` at ``step``."""

    def finish(self, summary: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """The run ended; ``summary`` is ``summary.json``."""

    def abort(self, error: BaseException | None = None) -> None:  # noqa: B027 - optional hook
        """The run failed with ``error``; release what the logger holds (never raises)."""
