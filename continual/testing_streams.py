"""The conformance kit for streams: check a stream against ``continual.types.Stream`` in one call.

    from continual.testing import check_logger, check_stream
    check_stream(my_stream)                  # a built stream (prepared, if it needs a model)
    check_logger(lambda: MyLogger(project="x"))

``check_stream(stream)`` reads the stream as the runner does, cheaply (at most the first three
batches of each segment plus one resume point), and checks, each as a named check:

- ``declared``: a ``continual.types.ClassificationStream`` or ``SelfScoringStream`` (the runner
  refuses anything else), with a positive ``batch_size``, ``boundaries`` ``visible`` or
  ``hidden`` and tasks that have ``classes``; a ``needs_model`` stream already prepared;
- ``segments``: non-empty, contiguous from 0, each ``start < end`` with a ``task`` in
  ``range(n_tasks)``; ``len(stream)`` is the last end and ``segment_steps()`` is
  ceil(length / batch_size) per segment;
- ``batches``: ``batches(segment, first_step)`` yields ``continual.types.Batch`` es, as many as
  the segment's steps, each of 1 to ``batch_size`` rows, ``y`` as many rows as ``x``, ``step``
  counting up from ``first_step``, ``task`` a tensor iff ``task_labels``; for a classification
  stream, inputs of ``input_shape`` and int64 labels in [0, n_classes);
- ``deterministic``: iterating a segment twice gives equal batches;
- ``resumable``: ``batches(segment, first_step=k, start=<position of batch k>)`` gives the
  tail of a full iteration (how a killed run resumes mid-segment); skipped when no segment has
  two batches, and not judged when ``deterministic`` failed;
- ``eval_sets_shape`` (classification streams): ``eval_set(t)`` gives inputs and labels with
  matching first dimension, labels in [0, n_classes) and among task t's classes, inputs of
  ``input_shape``; ``max_items`` is honoured, and so is ``split="val"`` when ``has_validation``;
- ``eval_sets`` (self-scoring streams): ``eval_sets`` is a non-empty list of ``EvalSet`` with
  distinct names and tasks in range, and ``task_scores`` of one row of scores gives one score
  per task.

It returns ``{check: "passed" | "skipped"}`` and raises ``continual.testing.ContractViolation``
listing every failed check (``continual.testing`` re-exports ``check_stream``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from continual.testing_common import (
    label_of,
    run_checks,
    same_value,
    violation,
)
from continual.types import Batch, ClassificationStream, EvalSet, SelfScoringStream, Stream

STREAM_CHECKS = ("declared", "segments", "batches", "deterministic", "resumable", "eval_sets_shape", "eval_sets")
#: batches of each segment whose contents are checked (and compared for determinism, resume)
LOOK_AT = 3
#: a segment of up to this many steps is counted by iterating it; a longer one through a resume
#: at its last batch (one batch must come back), so that a long real stream stays cheap
COUNT_UP_TO = 64


# ---------------------------------------------------------------------- streams
def check_stream(stream: Stream, *, skip: Sequence[str] = ()) -> dict[str, str]:
    """Check a built ``stream`` against the stream contract (``continual.types.Stream``);
    returns ``{check: "passed" | "skipped"}``.

    A ``needs_model`` stream must be prepared first (``stream.prepare(model, tokenizer)``).
    skip: names from ``STREAM_CHECKS`` to leave out. Raises ``ContractViolation`` listing every
    failed check; when the stream is not a stream at all or has no segments yet, only that.
    """
    label = label_of(stream)
    fatal = _declared_fatal(stream)
    if fatal and "declared" not in skip:
        raise violation(label, "stream", [f"[declared] {fatal}"])
    s = _StreamChecks(stream)
    return run_checks({name: getattr(s, name) for name in STREAM_CHECKS}, skip, STREAM_CHECKS, label, "stream")


def _declared_fatal(stream: Any) -> str | None:
    """What makes every other check meaningless: not a Stream at all, or not prepared."""
    if not isinstance(stream, Stream):
        return (f"a {type(stream).__name__} is not a continual.types.Stream, and the runner refuses it: "
                "subclass continual.types.ClassificationStream (the engine scores accuracy per task) or "
                "SelfScoringStream (the stream scores its own eval sets), or build one with continual.streams "
                "(from_arrays, class_incremental, ...)")
    if not getattr(stream, "segments", None):
        if stream.needs_model:
            return ("the stream has no segments yet: it needs_model, so call stream.prepare(model, tokenizer) "
                    "before checking it (the CLI calls it before the run)")
        return "the stream has no segments: a stream is a schedule cut into segments, one stretch of one task each"
    return None


def _steps(segment: Any, batch_size: int) -> int:
    return -(-(segment.end - segment.start) // batch_size)


_FIELDS = ("x", "y", "task", "true_task", "index", "step")


def _first_field_difference(a: Batch, b: Batch) -> str | None:

    for f in _FIELDS:
        if not same_value(getattr(a, f, None), getattr(b, f, None)):
            return f
    return None


class _StreamChecks:
    """One method per check; each returns a list of problems (empty: passed; None: skipped)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.deterministic_failed = False
        bs = stream.batch_size
        self.steps = [_steps(seg, bs) for seg in stream.segments] if isinstance(bs, int) and bs > 0 else None
        # the runner's step counter at each segment's first batch
        self.first_steps = list(itertools.accumulate([0, *self.steps[:-1]])) if self.steps else None

    def _head(self, i: int, limit: int = LOOK_AT, first_step: int | None = None,
              start: int | None = None) -> list[Any]:
        seg = self.stream.segments[i]
        first = self.first_steps[i] if first_step is None else first_step
        return list(itertools.islice(self.stream.batches(seg, first_step=first, start=start), limit))

    def declared(self) -> list[str]:
        s, problems = self.stream, []
        if not isinstance(s, (ClassificationStream, SelfScoringStream)):
            problems.append(f"{type(s).__name__} subclasses continual.types.Stream but neither of its kinds: "
                            "subclass ClassificationStream (the engine scores accuracy per task) or "
                            "SelfScoringStream (the stream scores its own eval sets)")
        if isinstance(s.batch_size, bool) or not isinstance(s.batch_size, int) or s.batch_size < 1:
            problems.append(f"batch_size is {s.batch_size!r}; it must be an int >= 1 (samples per training step)")
        if s.boundaries not in ("visible", "hidden"):
            problems.append(f"boundaries is {s.boundaries!r}; it must be 'visible' or 'hidden'")
        if not s.tasks:
            problems.append("the stream has no tasks")
        for t, task in enumerate(s.tasks):
            classes = getattr(task, "classes", None)
            if not isinstance(classes, (list, tuple)) or not all(isinstance(c, int) for c in classes):
                problems.append(f"tasks[{t}].classes is {classes!r}; each task needs classes, a list of int "
                                "(empty for a stream without classes)")
                break
        if isinstance(s, ClassificationStream) and not (isinstance(s.n_classes, int) and s.n_classes >= 1):
            problems.append(f"n_classes is {s.n_classes!r}; a classification stream needs n_classes >= 1")
        return problems

    def segments(self) -> list[str]:
        s, problems = self.stream, []
        segs = list(s.segments)
        pos = 0
        for i, seg in enumerate(segs):
            if seg.start != pos:
                problems.append(f"segments[{i}] starts at {seg.start} but the previous one ends at {pos}: segments "
                                "are contiguous stretches of the schedule, from position 0")
            if not seg.start < seg.end:
                problems.append(f"segments[{i}] is [{seg.start}, {seg.end}): it must hold at least one position")
            if not (isinstance(seg.task, int) and 0 <= seg.task < s.n_tasks):
                problems.append(f"segments[{i}].task is {seg.task!r}, not a task id in range({s.n_tasks})")
            pos = seg.end
        if len(s) != segs[-1].end:
            problems.append(f"len(stream) is {len(s)} but the last segment ends at {segs[-1].end}: len is the "
                            "number of training positions in the schedule")
        if self.steps is not None and list(s.segment_steps()) != self.steps:
            problems.append(f"segment_steps() is {list(s.segment_steps())[:8]} but the segments at batch_size "
                            f"{s.batch_size} make {self.steps[:8]} (ceil(length / batch_size) each)")
        return problems

    def batches(self) -> list[str]:
        if self.steps is None:
            return ["not checked: batch_size is not an int >= 1"]
        problems = []
        for i, seg in enumerate(self.stream.segments):
            found = self._segment_batches(i, seg)
            if found:
                problems.append(f"segment {i} (task {seg.task}, [{seg.start}, {seg.end})): {found}")
        return problems

    def _segment_batches(self, i: int, seg: Any) -> str | None:
        s, n, first = self.stream, self.steps[i], self.first_steps[i]
        count = 0
        batches: Iterator[Any] = iter(s.batches(seg, first_step=first))
        for j, b in enumerate(batches):
            if j < LOOK_AT:
                found = self._batch_problem(b, first + j)
                if found:
                    return f"batch {j}: {found}"
            count += 1
            if n > COUNT_UP_TO and count == LOOK_AT:
                break  # counted below through a resume at the last batch
            if count > n:
                break
        if n > COUNT_UP_TO:
            last = seg.start + (n - 1) * s.batch_size
            tail = list(itertools.islice(s.batches(seg, first_step=first + n - 1, start=last), 2))
            if len(tail) != 1 or getattr(tail[0], "step", None) != first + n - 1:
                return (f"resumed at position {last} (its last batch of {s.batch_size}-sample batches) it yields "
                        f"{len(tail)}{'+' if len(tail) == 2 else ''} batch(es), not 1: the segment has {n} steps "
                        f"(segment_steps), one per batch")
        elif count != n:
            return (f"batches() yielded {count}{'+' if count > n else ''} batches, but its {seg.end - seg.start} "
                    f"positions at batch_size {s.batch_size} make {n} steps: the runner counts steps with "
                    "segment_steps()")
        return None

    def _batch_problem(self, b: Any, step: int) -> str | None:
        s = self.stream
        if not isinstance(b, Batch):
            return f"a {type(b).__name__}, not a continual.types.Batch"
        if not (torch.is_tensor(b.x) and torch.is_tensor(b.y)):
            return f"x and y must be tensors, got {type(b.x).__name__} and {type(b.y).__name__}"
        rows = b.x.shape[0] if b.x.dim() else 0
        if not 1 <= rows <= s.batch_size:
            return f"x has {rows} rows; a batch holds 1 to batch_size={s.batch_size} samples"
        if b.y.dim() == 0 or b.y.shape[0] != rows:
            return f"y has shape {tuple(b.y.shape)} for {rows} inputs; y has one row per input"
        if b.step != step:
            return f"step is {b.step}, expected {step}: steps count up from first_step, one per batch"
        if s.task_labels and not (torch.is_tensor(b.task) and tuple(b.task.shape) == (rows,)):
            return (f"task is {_describe(b.task)}, but task_labels is set: give a (B,) tensor of task ids "
                    "(batch.task shows them to the learner)")
        if not s.task_labels and b.task is not None:
            return ("task is set, but task_labels is False: the scenario hides task ids from the learner, so "
                    "batch.task must be None (keep the ids in true_task, the runner's bookkeeping)")
        if b.true_task is not None and not (torch.is_tensor(b.true_task) and tuple(b.true_task.shape) == (rows,)):
            return f"true_task is {_describe(b.true_task)}; give None or a (B,) tensor of task ids"
        if isinstance(s, ClassificationStream):
            shape = tuple(s.input_shape)
            if shape and tuple(b.x.shape[1:]) != shape:
                return f"inputs of shape {tuple(b.x.shape[1:])}, but input_shape is {shape}"
            if b.y.dim() != 1 or b.y.dtype != torch.long:
                return f"y is {b.y.dtype} of shape {tuple(b.y.shape)}; labels are a (B,) int64 tensor"
            if rows and not bool(((b.y >= 0) & (b.y < s.n_classes)).all()):
                return f"labels {b.y.unique().tolist()[:10]} outside [0, n_classes={s.n_classes})"
        return None

    def deterministic(self) -> list[str]:
        problems = []
        for i, _seg in enumerate(self.stream.segments):
            a, b = self._head(i), self._head(i)
            for j, (x, y) in enumerate(zip(a, b)):
                field = _first_field_difference(x, y)
                if field is not None:
                    problems.append(f"segment {i}, batch {j}: batch.{field} differs between two iterations")
                    break
        if problems:
            self.deterministic_failed = True
            problems.append("draw each batch's randomness from a generator seeded by the stream's seed and the "
                            "batch's position (not the global RNG, nor state advanced by earlier iterations), so a "
                            "run is reproducible and resumes exactly")
        return problems

    def resumable(self) -> list[str] | None:
        if self.steps is None:
            return ["not checked: batch_size is not an int >= 1"]
        found = next((i for i, n in enumerate(self.steps) if n >= 2), None)
        if found is None or self.deterministic_failed:
            return None  # nothing to resume in, or nothing to compare with
        i, n = found, self.steps[found]
        seg, first = self.stream.segments[i], self.first_steps[i]
        k = min(n // 2, LOOK_AT)
        look = min(LOOK_AT, n - k)
        full = self._head(i, limit=k + look)
        if len(full) < k + look:
            return None  # too few batches: the batches check reports it
        start = seg.start + sum(int(b.x.shape[0]) for b in full[:k])
        call = f"batches(segments[{i}], first_step={first + k}, start={start})"
        resumed = self.stream.batches(seg, first_step=first + k, start=start)
        tail = list(itertools.islice(resumed, look if n > COUNT_UP_TO else n))
        problems = []
        for j, (a, b) in enumerate(zip(full[k:], tail)):
            field = _first_field_difference(a, b)
            if field is not None:
                problems.append(f"{call} (where a run killed after batch {k} of that segment resumes) gives a "
                                f"different batch.{field} at its batch {j} than batch {k + j} of a full iteration: "
                                "start at schedule position `start`, numbering steps from first_step")
                break
        if not problems and n <= COUNT_UP_TO and len(tail) != n - k:
            problems.append(f"{call} yields {len(tail)} batches, but {n - k} of the segment's {n} are left after "
                            f"batch {k}")
        return problems

    def eval_sets_shape(self) -> list[str] | None:
        s = self.stream
        if not isinstance(s, ClassificationStream):
            return None
        problems = []
        splits = ("test", "val") if s.has_validation else ("test",)
        for t in range(s.n_tasks):
            for split in splits:
                found = self._eval_set_problem(t, split)
                if found:
                    problems.append(f"eval_set({t}, split={split!r}): {found}")
            x, _ = s.eval_set(t, max_items=2)
            if x.shape[0] > 2:
                problems.append(f"eval_set({t}, max_items=2) gave {x.shape[0]} items; give at most max_items (a "
                                "fixed subset: the runner's eval.max_per_task)")
        return problems

    def _eval_set_problem(self, t: int, split: str) -> str | None:
        s = self.stream
        x, y = s.eval_set(t, split=split)
        if not (torch.is_tensor(x) and torch.is_tensor(y)):
            return f"gave {type(x).__name__} and {type(y).__name__}; return tensors (inputs, labels)"
        if x.dim() == 0 or y.dim() != 1 or x.shape[0] != y.shape[0]:
            return f"inputs of shape {tuple(x.shape)} and labels of shape {tuple(y.shape)}: give (N, ...) and (N,)"
        if x.shape[0] == 0:
            return "the set is empty: every task needs items to be scored on"
        shape = tuple(s.input_shape)
        if shape and tuple(x.shape[1:]) != shape:
            return f"inputs of shape {tuple(x.shape[1:])}, but input_shape is {shape}"
        if y.dtype.is_floating_point or not bool(((y >= 0) & (y < s.n_classes)).all()):
            return f"labels must be integers in [0, n_classes={s.n_classes}), got {y.unique().tolist()[:10]}"
        classes = set(getattr(s.tasks[t], "classes", []) or [])
        strays = sorted(set(y.unique().tolist()) - classes) if classes else []
        if strays:
            return (f"labels {strays[:10]} are not among task {t}'s classes: task-IL scores predict over the "
                    "task's classes only")
        return None

    def eval_sets(self) -> list[str] | None:
        s = self.stream
        if not isinstance(s, SelfScoringStream):
            return None
        sets = s.eval_sets
        if not isinstance(sets, (list, tuple)) or not sets:
            return [f"eval_sets is {sets!r}; give a non-empty list of continual.types.EvalSet (the score matrix's "
                    "columns)"]
        problems = [f"eval_sets[{i}] is a {type(e).__name__}, not a continual.types.EvalSet"
                    for i, e in enumerate(sets) if not isinstance(e, EvalSet)]
        if problems:
            return problems
        names = [e.name for e in sets]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            problems.append(f"eval set names {twice} repeat: each names a column of scores.csv")
        for e in sets:
            if not isinstance(e.higher_is_better, bool):
                problems.append(f"eval set {e.name!r}: higher_is_better is {e.higher_is_better!r}, not a bool")
            if e.task is not None and not (isinstance(e.task, int) and 0 <= e.task < s.n_tasks):
                problems.append(f"eval set {e.name!r}: task {e.task!r} is neither None nor in range({s.n_tasks})")
        row = [float(i + 1) for i in range(len(sets))]
        scores = s.task_scores(row)
        if not isinstance(scores, Sequence) or len(scores) != s.n_tasks:
            problems.append(f"task_scores(<a row of {len(sets)} scores>) gave {_describe(scores)}; give one score per "
                            f"task ({s.n_tasks}): the metrics read the score matrix per task")
        elif not all(isinstance(v, (int, float)) and math.isfinite(v) for v in scores):
            problems.append(f"task_scores(<a row of finite scores>) gave {list(scores)}; give finite floats")
        return problems


def _describe(value: Any) -> str:
    if torch.is_tensor(value):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"{len(value)} values"
    return repr(value)
