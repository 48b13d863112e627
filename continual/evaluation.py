"""Evaluation of a run: the eval rows, scoring a strategy on every task, and the metrics the rows feed.

Every kind of stream goes through this one path. A ``ClassificationStream`` is scored here,
by accuracy per task (class-IL and task-IL, and on the held-out validation sets when the
stream has them). A ``SelfScoringStream`` (language models: probe sets scored by exact match,
corpora by held-out loss) scores its ``eval_sets`` itself with ``score_eval_sets(strategy)``
and maps a row to one score per task with ``task_scores``; the
metrics then read that per-task matrix, sign-adjusted when lower is better, so forgetting > 0
and BWT < 0 mean "worse" for every kind of score.

``Evaluator`` holds what scoring needs (the stream, the device, the eval options); the Runner
decides when to evaluate, keeps the rows in its ``RunState`` and writes the records.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from continual import metric_table as MT
from continual import metrics as M
from continual.types import ClassificationStream, ConfigError, SelfScoringStream, Strategy, Stream


@dataclass
class EvalRow:
    step: int
    samples: int
    kind: str  # init | periodic | task_end
    segment: int  # index of the segment being trained (or just trained, at a task end)
    scores: list[float]  # one per column of scores.csv (per task for classification)
    scores_task_il: list[float]
    scores_class_il: list[float]
    task_scores: list[float] | None = None  # one per task when the columns are not the tasks
    val_scores: list[float] | None = None  # per task on its held-out validation set (stream.val_fraction)


class Evaluator:
    """Scores a strategy on every task of ``stream`` and turns eval rows into records and metrics.

    ``max_per_task`` caps each task's test set (None: all of it), ``batch_size`` is the eval
    batch, ``unseen``: periodic eval points also score the tasks not started yet.
    """

    def __init__(self, stream: Stream, device: torch.device, max_per_task: int | None = None,
                 batch_size: int = 1024, unseen: bool = False) -> None:
        if not isinstance(stream, (ClassificationStream, SelfScoringStream)):
            raise ConfigError(
                f"stream {type(stream).__name__} declares no way to be scored: subclass "
                "continual.types.ClassificationStream (scored by accuracy per task) or "
                "continual.types.SelfScoringStream (it scores its own eval sets); see docs/plugins.md")
        self.stream, self.device = stream, device
        self.max_per_task, self.batch_size, self.unseen = max_per_task, batch_size, unseen
        # None: a classification stream, scored here; else the stream's own eval sets
        self.specs = stream.eval_sets if isinstance(stream, SelfScoringStream) else None
        task_sets = [s for s in self.specs if s.task is not None] if self.specs is not None else []
        self.higher_is_better = task_sets[0].higher_is_better if task_sets else True
        self.score_name = task_sets[0].score if task_sets else "accuracy"
        self._test_sets: list[Any] | None = None  # (x, y, task mask, task ids) per task, built once
        self._val_sets: list[Any] | None = None

    @property
    def classification(self) -> bool:
        """Scored here by accuracy (True), or by the stream's own eval sets (False)."""
        return self.specs is None

    # ------------------------------------------------------------------ scoring
    def score(self, kind: str, strategy: Strategy, step: int, samples: int, segment: int,
              midway: Callable[[], None] | None = None) -> tuple[EvalRow, list[dict[str, Any]] | None]:
        """The eval row of ``strategy`` at this point of the run, and the per-item results of a
        stream that reports them (else None). ``midway`` is called halfway through the test sets."""
        if self.specs is not None:
            scores, details = self.stream.score_eval_sets(strategy)
            row = EvalRow(step, samples, kind, segment, [float(s) for s in scores], [], [],
                          task_scores=[float(s) for s in self.stream.task_scores(scores)])
            return row, details
        if self._test_sets is None:
            self._prepare_sets()
        show_task = self.stream.task_labels
        started = None  # None: score every task
        if kind == "periodic" and not self.unseen:
            started = {s.task for s in self.stream.segments[: segment + 1]}
        cil, til = self._accuracies(self._test_sets, strategy, started, midway)
        val = None
        if self._val_sets is not None:  # scored exactly like the test sets
            v_cil, v_til = self._accuracies(self._val_sets, strategy, started)
            val = v_til if show_task else v_cil
        return EvalRow(step, samples, kind, segment, til if show_task else cil, til, cil, val_scores=val), None

    def _prepare_sets(self) -> None:
        s = self.stream
        splits = ("test", "val") if s.has_validation else ("test",)
        sets: dict[str, list[Any]] = {split: [] for split in splits}
        for split in splits:
            for t in range(s.n_tasks):
                x, y = s.eval_set(t, self.max_per_task, split=split) if split == "val" \
                    else s.eval_set(t, self.max_per_task)
                mask = torch.full((s.n_classes,), float("-inf"), device=self.device)
                mask[torch.tensor(s.tasks[t].classes, device=self.device)] = 0.0
                task = torch.full((y.numel(),), t, dtype=torch.long, device=self.device)
                sets[split].append((x.to(self.device), y.to(self.device), mask, task))
        self._test_sets, self._val_sets = sets["test"], sets.get("val")

    def _accuracies(self, sets: list[Any], strategy: Strategy, started: set[int] | None,
                    midway: Callable[[], None] | None = None) -> tuple[list[float], list[float]]:
        """Class-IL and task-IL accuracy of ``strategy`` on each of ``sets`` (NaN for a task not
        in ``started``, unless that is None)."""
        show_task = self.stream.task_labels
        batch_size = self.batch_size
        counts = []
        for i_set, (x, y, mask, task) in enumerate(sets):
            if midway is not None and i_set == len(sets) // 2:
                midway()
            if started is not None and i_set not in started:
                counts.append(torch.full((2,), float("nan"), device=self.device))
                continue
            c_cil = torch.zeros((), device=self.device)
            c_til = torch.zeros((), device=self.device)
            for i in range(0, y.numel(), batch_size):
                sl = slice(i, i + batch_size)
                with torch.inference_mode():
                    logits = strategy.predict(x[sl], task[sl] if show_task else None)
                    if i == 0 and tuple(logits.shape) != (min(batch_size, y.numel()), self.stream.n_classes):
                        raise ConfigError(
                            f"{type(strategy).__name__}.predict returned shape {tuple(logits.shape)} for "
                            f"{min(batch_size, y.numel())} inputs; expected (B, n_classes) = "
                            f"({min(batch_size, y.numel())}, {self.stream.n_classes}) for stream "
                            f"{self.stream.name!r}")
                    c_cil = c_cil + (logits.argmax(1) == y[sl]).sum()
                    c_til = c_til + ((logits + mask).argmax(1) == y[sl]).sum()
            counts.append(torch.stack([c_cil, c_til]))
        sizes = [y.numel() for _, y, _, _ in sets]
        cil, til = torch.stack(counts).T.tolist()  # one device sync per set of eval sets
        return [c / n for c, n in zip(cil, sizes)], [c / n for c, n in zip(til, sizes)]

    # ------------------------------------------------------------------ rows -> records, metrics
    def columns(self) -> list[str]:
        """The score columns of scores.csv, after step, samples_seen and kind."""
        if self.specs is None:
            return [f"task_{t}" for t in range(self.stream.n_tasks)]
        return [s.name for s in self.specs]

    def record(self, row: EvalRow, rows: list[EvalRow]) -> dict[str, Any]:
        """The metrics.jsonl record of ``row``, the newest of the run's ``rows``."""
        # the headline score over the tasks started so far (all tasks for the untrained model)
        seen = self.stream.n_tasks if row.kind == "init" else min(row.segment + 1, self.stream.n_tasks)
        rec: dict[str, Any] = {
            "type": "eval", "kind": row.kind, "step": row.step, "samples_seen": row.samples,
            "time": time.time(),
        }
        if self.specs is None:
            rec.update({f"acc_task_{t}": v for t, v in enumerate(row.scores)})
            rec["acc"] = float(np.mean(row.scores[:seen]))
            rec["acc_class_il"] = float(np.mean(row.scores_class_il[:seen]))
            rec["acc_task_il"] = float(np.mean(row.scores_task_il[:seen]))
        else:
            rec.update({s.name: v for s, v in zip(self.specs, row.scores)})
            rec["score"] = float(np.mean(row.task_scores[:seen]))
            rec.update(self.stream.eval_metrics(self.stream_rows(rows), self.task_end_rows(rows)))
        ends = self.metric_rows(rows)
        if ends:
            R = self.task_matrix(rows, signed=True)
            rec["forgetting"] = M.forgetting(R, ends) if len(ends) > 1 else None
            rec["bwt"] = M.backward_transfer(R, ends) if len(ends) > 1 else None
            # per-task forgetting so far (the loggers' forgetting curves): the tasks before the newest metric row
            rec.update({f"forgetting_task_{t}": float(f) for t, f in enumerate(M.forgetting_per_task(R, ends))})
        if row.val_scores is not None:
            rec.update({f"val_acc_task_{t}": v for t, v in enumerate(row.val_scores)})
            rec["val_acc"] = float(np.mean(row.val_scores[:seen]))
            if len(ends) > 1:
                rec["val_forgetting"] = M.forgetting(val_matrix(rows), ends)
        return rec

    def summary(self, rows: list[EvalRow], window: int, online_acc: float | None) -> dict[str, Any]:
        """The final metrics of summary.json (see docs/metrics.md) from the run's eval ``rows``:
        ``window`` is stability_gap's, in samples; ``online_acc`` the run's test-then-train
        accuracy (None: not counted). Ends with ``objective``, what a sweep optimises.

        On recurring streams the task-end rows are those of the first pass through the
        task sequence, with the final eval point as the end of the run.
        """
        classification = self.specs is None
        has_val = classification and bool(rows) and rows[-1].val_scores is not None
        x = MT.SummaryInputs(
            T=self.task_matrix(rows),  # per-task scores in their own units
            S=self.task_matrix(rows, signed=True),  # higher is better, for forgetting and transfer
            ends=self.metric_rows(rows), samples=[r.samples for r in rows], window=window,
            online_acc=online_acc, rows=rows, classification=classification,
            V=val_matrix(rows) if has_val else None)  # the held-out training samples, scored like the test sets
        # the metrics come from the metric table (continual/metric_table.py), in its order
        common = MT.summary_values(x, "summary")
        out: dict[str, Any] = {"score": common.pop("score", None), "score_name": self.score_name,
                               "higher_is_better": self.higher_is_better, **common}
        if classification:
            out.update(MT.summary_values(x, "classification"))
            out["final_task_acc"] = x.T[-1].tolist()
        else:
            names = [s.name for s in self.specs]
            out["eval_sets"] = [dataclasses.asdict(s) for s in self.specs]
            out["final_scores"] = dict(zip(names, rows[-1].scores))
            out["initial_scores"] = dict(zip(names, rows[0].scores))
            out.update(self.stream.summary_metrics(self.stream_rows(rows), x.ends))
        if has_val:
            out.update(MT.summary_values(x, "validation"))
        # what a sweep optimises (the job's return value): validation when there is a split
        out["objective"] = "val_acc" if "val_acc" in out else "score"
        return out

    def task_matrix(self, rows: list[EvalRow], signed: bool = False) -> np.ndarray:
        """Rows = eval points, columns = tasks; ``signed``: negated when lower is better."""
        R = np.array([r.task_scores if r.task_scores is not None else r.scores for r in rows], dtype=float)
        return R if not signed or self.higher_is_better else -R

    def stream_rows(self, rows: list[EvalRow]) -> list[dict[str, float]]:
        """Every eval row as {column name: score} (for a stream's own metrics)."""
        names = [s.name for s in self.specs]
        return [dict(zip(names, r.scores)) for r in rows]

    def metric_rows(self, rows: list[EvalRow]) -> list[int]:
        """The rows forgetting, BWT, FWT, AIA and plasticity read - defined once, for the eval
        records, summary.json and so the report and loggers: the task-end rows of the first pass
        through the task sequence, with the newest row standing for the end of the sequence once
        that pass is complete (recurring streams: the final row), or added as "now" while it is not."""
        ends = self.task_end_rows(rows)
        last = len(rows) - 1
        if not ends or ends[-1] == last:
            return ends
        if len(ends) == self.stream.n_tasks:
            return ends[:-1] + [last]
        return ends + [last]

    def task_end_rows(self, rows: list[EvalRow]) -> list[int]:
        """Task-end rows of the first pass through the task sequence."""
        ends = [i for i, r in enumerate(rows) if r.kind == "task_end"]
        return ends[: self.stream.n_tasks]


def val_matrix(rows: list[EvalRow]) -> np.ndarray:
    """Rows = eval points, columns = tasks: accuracy on each task's validation set."""
    return np.array([r.val_scores for r in rows], dtype=float)
