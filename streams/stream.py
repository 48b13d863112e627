"""The Stream: tasks over an in-memory dataset, and how they are presented to a learner.

A stream is fully materialised as a *schedule*: one index into the training pool
and one true task id per position, plus segments (the stretches in which one task
is nominally trained). Batches are consecutive slices of the schedule, so a run
is deterministic for a seed and a resumed run can restart at any position.

Presentation options:
- ``boundaries``: ``visible`` (the runner calls ``on_task_start``/``on_task_end``)
  or ``hidden`` (task-free: the learner sees only batches);
- ``passes``: passes over each task's data (epochs), contiguous in the schedule;
- ``task_labels``: show task ids to the learner at train and test (task-incremental);
- ``blurry``: share of each task's positions swapped with the next task's (Bang et
  al. 2021, "Rainbow Memory": blurry boundaries);
- ``gradual_width``: tasks blend over a window of this many samples around each
  boundary, the next task's share rising linearly from 0 to 1;
- ``repeats``: the task sequence is presented this many times (recurring tasks);
- ``val_fraction``: share of each task's training samples held out as its validation set
  (drawn from the seed; never trained on), scored like the test set for tuning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import torch

from continual.streams.datasets import Dataset
from continual.types import Batch, ClassificationStream, ConfigError, Segment

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Task:
    """One task: its classes, indices into the dataset's train/test pools, an input transform."""

    id: int
    classes: list[int]
    train_idx: torch.Tensor
    test_idx: torch.Tensor
    transform: Transform | None = None
    name: str = ""
    val_idx: torch.Tensor | None = None  # held out of train_idx (``Stream.val_fraction``)


@dataclass
class Stream(ClassificationStream):
    """Tasks over a dataset plus their presentation; yields batches deterministically
    (``continual.types.ClassificationStream``)."""

    name: str
    dataset: Dataset
    tasks: list[Task]
    batch_size: int = 10
    passes: int = 1
    boundaries: str = "visible"
    task_labels: bool = False
    blurry: float = 0.0
    gradual_width: int = 0
    repeats: int = 1
    seed: int = 0
    val_fraction: float = 0.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.boundaries not in ("visible", "hidden"):
            raise ConfigError(f"boundaries must be 'visible' or 'hidden', got {self.boundaries!r}")
        if self.batch_size < 1 or self.passes < 1 or self.repeats < 1:
            raise ConfigError(
                f"batch_size, passes and repeats must be >= 1, got {self.batch_size}, "
                f"{self.passes}, {self.repeats}"
            )
        if not 0.0 <= self.blurry < 1.0:
            raise ConfigError(f"blurry is a share of samples in [0, 1), got {self.blurry}")
        if self.gradual_width < 0:
            raise ConfigError(f"gradual_width is a number of samples >= 0, got {self.gradual_width}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction is the share of each task's training samples held out for "
                              f"validation, in [0, 1), got {self.val_fraction}; use e.g. 0.1, or 0 for none")
        if not self.tasks:
            raise ConfigError(f"stream {self.name!r} has no tasks")
        if self.val_fraction > 0:
            self._hold_out_validation()
        for t in self.tasks:
            if t.train_idx.numel() == 0 or t.test_idx.numel() == 0:
                raise ConfigError(
                    f"stream {self.name!r}: task {t.id} (classes {t.classes}) has no "
                    f"{'training' if t.train_idx.numel() == 0 else 'test'} samples; "
                    "check class_order, the subset size or the dataset"
                )
        self._build_schedule()

    # ------------------------------------------------------------------ description
    @property
    def n_classes(self) -> int:
        return self.dataset.n_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.dataset.input_shape

    def __len__(self) -> int:
        """Number of training samples in the schedule (all passes and repeats)."""
        return int(self.order.numel())

    @property
    def has_validation(self) -> bool:
        return self.val_fraction > 0

    # ------------------------------------------------------------------ schedule
    def _hold_out_validation(self) -> None:
        """Move ``val_fraction`` of each task's training samples (at least one; drawn with the
        seed, so the same for every run of that seed) into the task's ``val_idx``. Tasks over
        the same training pool (domain-incremental streams) share one split, and a sample held
        out for any task is trained by none."""
        held = torch.zeros(self.dataset.y_train.numel(), dtype=torch.bool)
        splits: dict[bytes, torch.Tensor] = {}
        for t in self.tasks:
            key = t.train_idx.cpu().numpy().tobytes()
            if key not in splits:
                g = torch.Generator().manual_seed(self.seed + 104729 * (len(splits) + 1))
                n = t.train_idx.numel()
                k = min(n - 1, max(1, round(self.val_fraction * n)))
                splits[key] = t.train_idx[torch.randperm(n, generator=g)[:k]].sort().values
            held[splits[key].cpu()] = True
        self.tasks = [replace(t, val_idx=splits[t.train_idx.cpu().numpy().tobytes()],
                              train_idx=t.train_idx[~held[t.train_idx.cpu()]]) for t in self.tasks]

    def _build_schedule(self) -> None:
        g = torch.Generator().manual_seed(self.seed)
        idx_parts, task_parts, segments, pos = [], [], [], 0
        for _ in range(self.repeats):
            for t in self.tasks:
                n = t.train_idx.numel()
                for _ in range(self.passes):
                    idx_parts.append(t.train_idx[torch.randperm(n, generator=g)])
                    task_parts.append(torch.full((n,), t.id, dtype=torch.long))
                segments.append(Segment(pos, pos + n * self.passes, t.id))
                pos += n * self.passes
        order, true_task = torch.cat(idx_parts), torch.cat(task_parts)
        if self.blurry > 0:
            order, true_task = self._blur(order, true_task, segments, g)
        if self.gradual_width > 0:
            order, true_task = self._blend(order, true_task, segments, g)
        self.order, self.true_task, self.segments = order, true_task, segments

    def _blur(self, order, true_task, segments, g):
        for a, b in zip(segments, segments[1:]):
            n = int(self.blurry * min(a.end - a.start, b.end - b.start) / 2)
            if n == 0:
                continue
            pa = a.start + torch.randperm(a.end - a.start, generator=g)[:n]
            pb = b.start + torch.randperm(b.end - b.start, generator=g)[:n]
            for arr in (order, true_task):
                arr[pa], arr[pb] = arr[pb].clone(), arr[pa].clone()
        return order, true_task

    def _blend(self, order, true_task, segments, g):
        for a, b in zip(segments, segments[1:]):
            h = min(self.gradual_width // 2, (a.end - a.start) // 2, (b.end - b.start) // 2)
            if h == 0:
                continue
            lo, hi = a.end - h, b.start + h
            # Keys with densities 2(1-k) (old task) and 2k (new task) on [0, 1]: sorted, the
            # new task's share at relative position k of the window is k (a linear blend).
            u = torch.rand(2 * h, generator=g, dtype=torch.float64)
            keys = torch.cat([1 - u[:h].sqrt(), u[h:].sqrt()])
            perm = lo + torch.argsort(keys)
            order[lo:hi], true_task[lo:hi] = order[perm].clone(), true_task[perm].clone()
        return order, true_task

    # ------------------------------------------------------------------ data access
    def to(self, device: torch.device | str) -> Stream:
        """Move the pools to ``device`` (data lives where the model trains when it fits)."""
        d = self.dataset
        for name in ("x_train", "y_train", "x_test", "y_test"):
            setattr(d, name, getattr(d, name).to(device))
        self.order, self.true_task = self.order.to(device), self.true_task.to(device)
        return self

    def _inputs(self, idx: torch.Tensor, tasks: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
        x = pool.index_select(0, idx)  # faster than pool[idx] for small batches
        if self.tasks[0].transform is None:
            return x
        x = x.clone()
        for t in torch.unique(tasks).tolist():
            m = tasks == t
            x[m] = self.tasks[t].transform(x[m])
        return x

    def batch(self, start: int, end: int, step: int = 0) -> Batch:
        """The batch at schedule positions [start, end)."""
        idx, tasks = self.order[start:end], self.true_task[start:end]
        return Batch(
            x=self._inputs(idx, tasks, self.dataset.x_train),
            y=self.dataset.y_train.index_select(0, idx),
            task=tasks if self.task_labels else None,
            true_task=tasks,
            step=step,
            index=idx,
        )

    def batches(self, segment: Segment, first_step: int = 0, start: int | None = None) -> Iterator[Batch]:
        """Batches of one segment, optionally resuming at schedule position ``start``."""
        pos, step = segment.start if start is None else start, first_step
        while pos < segment.end:
            end = min(pos + self.batch_size, segment.end)
            yield self.batch(pos, end, step)
            pos, step = end, step + 1

    def eval_set(self, task: int, max_items: int | None = None,
                 split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and labels of one task's ``test`` set or its held-out ``val`` set (a fixed
        subset of ``max_items`` if given)."""
        if split == "val":
            if self.tasks[task].val_idx is None:
                raise ConfigError(f"stream {self.name!r} has no validation split; set val_fraction > 0")
            idx, x, y = self.tasks[task].val_idx, self.dataset.x_train, self.dataset.y_train
        elif split == "test":
            idx, x, y = self.tasks[task].test_idx, self.dataset.x_test, self.dataset.y_test
        else:
            raise ValueError(f"split must be 'test' or 'val', got {split!r}")
        if max_items is not None and idx.numel() > max_items:
            g = torch.Generator().manual_seed(self.seed + 7919 * (task + 1))
            idx = idx[torch.randperm(idx.numel(), generator=g)[:max_items]].sort().values
        idx = idx.to(x.device)
        tasks = torch.full_like(idx, task)
        return self._inputs(idx, tasks, x), y[idx]
