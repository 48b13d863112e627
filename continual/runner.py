"""The Runner: drives one strategy over one stream, evaluates, and records metrics.

Test-then-train: every incoming batch is scored before the learner trains on it
(the ``online`` record). The test split of every task, seen or not, is evaluated
before training (the ``init`` row, for FWT), every ``eval_every`` steps
(``periodic`` rows) and after each segment of the stream (``task_end`` rows).

Every kind of stream goes through this one path. A classification stream (``Stream``) is
scored here, by accuracy per task. A stream that declares ``eval_sets`` (language models:
probe sets scored by exact match, corpora by held-out loss) scores them itself with
``score_eval_sets(strategy)`` and maps a row to one score per task with ``task_scores``;
the metrics then read that per-task matrix, sign-adjusted when lower is better, so
forgetting > 0 and BWT < 0 mean "worse" for every kind of score.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import os
import resource
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from continual import checkpoint as C
from continual import metrics as M
from continual.models.parameters import count_parameters
from continual.records import RunRecords, flatten_keys
from continual.strategies.schedules import LRDriver, Schedule
from continual.streams.stream import Stream
from continual.types import ConfigError, NonFiniteLoss, Strategy, TaskInfo


class Logger(Protocol):
    """A view of the run's records (console, wandb, tensorboard)."""

    def log(self, record: dict[str, Any]) -> None: ...

    def finish(self, summary: dict[str, Any]) -> None: ...


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


@dataclass
class RunState:
    """Everything the rest of the run depends on besides the strategy (for checkpoints)."""

    segment: int = 0
    position: int = 0  # schedule position inside the current segment
    step: int = 0
    samples: int = 0
    online_correct: float = 0.0
    online_seen: int = 0
    rows: list[EvalRow] = field(default_factory=list)
    train_seconds: float = 0.0
    n_records: int = 0  # lines of metrics.jsonl written
    n_details: int = 0  # lines of answers.jsonl written (streams that report per-item results)
    reports_online: bool | None = None  # does observe() return 'online_correct'?
    skipped_nonfinite: int = 0
    evals_done: int = 0
    eval_seconds: float = 0.0  # evaluation, apart from training (train_seconds: steps and hooks)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunState:
        return cls(**{**d, "rows": [EvalRow(**r) for r in d["rows"]]})


DETAILS_FILE = "answers.jsonl"  # per-item eval results of streams that report them
#: config keys that shape training: a checkpoint resumes only into a run with the same ones.
#: Everything else (eval.*, log.*, loggers, checkpoint.*, resume, device) may change on resume.
TRAINING_CONFIG_KEYS = ("stream", "strategy", "model", "schedule", "seed", "on_nan")


AMP_CHOICES = ("false", "bf16")


def amp_dtype(value: Any) -> torch.dtype | None:
    """The autocast dtype of the ``amp`` setting: None for false (fp32), bfloat16 for bf16.

    fp16 is refused: it needs a gradient scaler the strategies do not carry, and bf16 has
    fp32's range (no scaler), which is what OnPro's official code gets from its GradScaler.
    """
    mode = str(value).lower() if isinstance(value, (bool, str)) or value is None else None
    if mode in ("false", "none", "off"):
        return None
    if mode == "bf16":
        return torch.bfloat16
    raise ConfigError(f"amp must be one of {list(AMP_CHOICES)}, got {value!r}"
                      + ("; fp16 needs a gradient scaler, use bf16" if mode == "fp16" else ""))


_NO_AUTOCAST = contextlib.nullcontext()  # reusable and reentrant: one for every step


class RunStopped(RuntimeError):
    """The run stopped on purpose (e.g. a NaN loss with on_nan=stop); the message says why."""


def parameter_count(strategy: Strategy) -> int:
    """Parameters of the strategy's model(s): its ``parameter_count()``, or for a strategy that
    only implements the protocol's two methods, ``Strategy.parameter_count``'s default."""
    if hasattr(strategy, "parameter_count"):
        return int(strategy.parameter_count())
    return Strategy.parameter_count(strategy)


def trainable_parameter_count(strategy: Strategy) -> int | None:
    """Parameters of the strategy's ``model`` that train (requires_grad), each tied matrix
    once; None for a strategy without a ``model`` (not measured)."""
    model = getattr(strategy, "model", None)
    if not isinstance(model, torch.nn.Module):
        return None
    return count_parameters(model, trainable=True)


class Runner:
    """Runs ``strategy`` over ``stream`` and writes the run folder ``out_dir``."""

    def __init__(
        self,
        stream: Stream,
        strategy: Strategy,
        out_dir: str = ".",
        eval_every: int = 0,
        eval_max_per_task: int | None = None,
        eval_batch_size: int = 1024,
        log_every: int = 10,
        stability_window: int | None = None,
        switch_tolerance: int | None = None,
        loggers: Sequence[Logger] = (),
        config: dict[str, Any] | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
        on_segment_end: Any = None,
        extra_summary: dict[str, Any] | None = None,
        checkpoint_every: int = 0,
        checkpoint_keep: int = 2,
        checkpoints: bool = True,
        checkpoint_min_interval_s: float = 30.0,
        on_nan: str = "stop",
        eval_unseen: bool = False,
        schedule: Schedule | None = None,
        amp: Any = False,
    ) -> None:
        self.stream, self.strategy = stream, strategy
        self.out_dir = out_dir
        check_run_options(eval_every=eval_every, eval_max_per_task=eval_max_per_task,
                           eval_batch_size=eval_batch_size, log_every=log_every, seed=seed,
                           checkpoint_every=checkpoint_every, checkpoint_keep=checkpoint_keep)
        self.eval_every, self.log_every = int(eval_every), int(log_every)
        self.eval_max_per_task, self.eval_batch_size = eval_max_per_task, int(eval_batch_size)
        self.stability_window = stability_window
        self.switch_tolerance = switch_tolerance
        self.loggers = list(loggers)
        self.config, self.seed, self.device = config or {}, seed, torch.device(device)
        self.on_segment_end = on_segment_end
        self.extra_summary = extra_summary or {}
        if on_nan not in ("stop", "skip"):
            raise ConfigError(f"on_nan must be 'stop' or 'skip', got {on_nan!r}")
        if checkpoint_every and checkpoint_every % self.log_every:
            raise ConfigError(
                f"checkpoint.every={checkpoint_every} must be a multiple of log.every={self.log_every} "
                "so that a checkpoint never splits a logging window"
            )
        self.checkpoint_every, self.checkpoint_keep = int(checkpoint_every), int(checkpoint_keep)
        self.checkpoint_dir = Path(out_dir) / "checkpoints" if checkpoints else None
        if checkpoint_min_interval_s < 0:
            raise ConfigError(f"checkpoint.min_interval_s must be >= 0, got {checkpoint_min_interval_s}")
        self.checkpoint_min_interval_s = float(checkpoint_min_interval_s)
        self._last_checkpoint_time = time.monotonic()
        self.on_nan = on_nan
        # amp=bf16: every observe() (forward, loss; backward in guarded_step runs outside it)
        # under torch.autocast on the run's device; evaluation and task-end hooks stay fp32
        self.amp = amp_dtype(amp)
        if on_nan == "stop" and hasattr(strategy, "check_each_step"):
            # no sync per step: a non-finite loss stops the run at the end of its log window,
            # before the next eval row or checkpoint (see SupervisedStrategy.check_each_step)
            strategy.check_each_step = False
        self.eval_unseen = eval_unseen  # True: periodic eval points also score tasks not started yet
        # the lr schedule (strategies/schedules.py), driven by st.step; an infinite schedule's
        # anneal branch (a copy of the strategy trained with the annealed lr over the last
        # steps of each segment) is the deployable model scored at the segment's task-end row
        self.schedule = schedule
        self.lr_driver = LRDriver(schedule) if schedule is not None else None
        self.branch: Strategy | None = None
        self.last_checkpoint: Path | None = None
        self.resume_info: dict[str, Any] = {}
        self.state = RunState()
        self._eval_sets = None
        self._val_sets = None
        self._fault = _fault_from_env()
        self._rss_reset = False
        # None: a classification stream, scored here; else the stream's own eval sets
        self.eval_set_specs = getattr(stream, "eval_sets", None)
        specs = self.eval_set_specs
        task_sets = [s for s in specs if s.task is not None] if specs is not None else []
        self.higher_is_better = task_sets[0].higher_is_better if task_sets else True
        self.score_name = task_sets[0].score if task_sets else "accuracy"
        self.counts_online = getattr(stream, "online_accuracy", True)  # test-then-train accuracy

    # ------------------------------------------------------------------ evaluation
    def _prepare_eval_sets(self) -> None:
        s = self.stream
        splits = ("test", "val") if getattr(s, "has_validation", False) else ("test",)
        sets: dict[str, list[Any]] = {split: [] for split in splits}
        for split in splits:
            for t in range(s.n_tasks):
                x, y = s.eval_set(t, self.eval_max_per_task, split=split) if split == "val" \
                    else s.eval_set(t, self.eval_max_per_task)
                mask = torch.full((s.n_classes,), float("-inf"), device=self.device)
                mask[torch.tensor(s.tasks[t].classes, device=self.device)] = 0.0
                task = torch.full((y.numel(),), t, dtype=torch.long, device=self.device)
                sets[split].append((x.to(self.device), y.to(self.device), mask, task))
        self._eval_sets, self._val_sets = sets["test"], sets.get("val")

    def evaluate(self, kind: str, strategy: Strategy | None = None) -> EvalRow:
        """Score every task's test set with ``strategy`` (default: the run's); returns and
        records the eval row."""
        strategy = strategy or self.strategy
        t0 = time.perf_counter()
        try:
            with self._hook_guard(f"{type(strategy).__name__}'s evaluation ({kind} row)"):
                _call_hook(strategy, "prepare_eval")  # may train (e.g. TAME's selector)
                if self.eval_set_specs is not None:
                    return self._evaluate_by_stream(kind, strategy)
                return self._evaluate_classification(kind, strategy)
        finally:
            self.state.eval_seconds += time.perf_counter() - t0

    def _evaluate_classification(self, kind: str, strategy: Strategy) -> EvalRow:
        if self._eval_sets is None:
            self._prepare_eval_sets()
        show_task = self.stream.task_labels
        started = None  # None: score every task
        if kind == "periodic" and not self.eval_unseen:
            started = {s.task for s in self.stream.segments[: self.state.segment + 1]}
        cil, til = self._accuracies(self._eval_sets, strategy, started, fault=True)
        val = None
        if self._val_sets is not None:  # scored exactly like the test sets
            v_cil, v_til = self._accuracies(self._val_sets, strategy, started)
            val = v_til if show_task else v_cil
        st = self.state
        row = EvalRow(st.step, st.samples, kind, st.segment, til if show_task else cil, til, cil, val_scores=val)
        st.rows.append(row)
        st.evals_done += 1
        self._record_eval(row)
        return row

    def _accuracies(self, sets: list[Any], strategy: Strategy, started: set[int] | None,
                    fault: bool = False) -> tuple[list[float], list[float]]:
        """Class-IL and task-IL accuracy of ``strategy`` on each of ``sets`` (NaN for a task not
        in ``started``, unless that is None)."""
        show_task = self.stream.task_labels
        counts = []
        for i_set, (x, y, mask, task) in enumerate(sets):
            if fault and i_set == len(sets) // 2:
                self._maybe_fault("eval")
            if started is not None and i_set not in started:
                counts.append(torch.full((2,), float("nan"), device=self.device))
                continue
            c_cil = torch.zeros((), device=self.device)
            c_til = torch.zeros((), device=self.device)
            for i in range(0, y.numel(), self.eval_batch_size):
                sl = slice(i, i + self.eval_batch_size)
                with torch.inference_mode():
                    logits = strategy.predict(x[sl], task[sl] if show_task else None)
                    if i == 0 and tuple(logits.shape) != (min(self.eval_batch_size, y.numel()), self.stream.n_classes):
                        raise ConfigError(
                            f"{type(strategy).__name__}.predict returned shape {tuple(logits.shape)} for "
                            f"{min(self.eval_batch_size, y.numel())} inputs; expected (B, n_classes) = "
                            f"({min(self.eval_batch_size, y.numel())}, {self.stream.n_classes}) for stream "
                            f"{self.stream.name!r}")
                    c_cil = c_cil + (logits.argmax(1) == y[sl]).sum()
                    c_til = c_til + ((logits + mask).argmax(1) == y[sl]).sum()
            counts.append(torch.stack([c_cil, c_til]))
        sizes = [y.numel() for _, y, _, _ in sets]
        cil, til = torch.stack(counts).T.tolist()  # one device sync per set of eval sets
        return [c / n for c, n in zip(cil, sizes)], [c / n for c, n in zip(til, sizes)]

    def _evaluate_by_stream(self, kind: str, strategy: Strategy) -> EvalRow:
        """Score the stream's own eval sets (language models); returns and records the row."""
        scores, details = self.stream.score_eval_sets(strategy)
        st = self.state
        row = EvalRow(st.step, st.samples, kind, st.segment, [float(s) for s in scores], [], [],
                      task_scores=[float(s) for s in self.stream.task_scores(scores)])
        st.rows.append(row)
        st.evals_done += 1
        if details:  # e.g. every probe's generated answer, one JSON line each
            import json

            with open(Path(self.out_dir) / DETAILS_FILE, "a") as fh:
                fh.writelines(json.dumps({"eval_point": len(st.rows) - 1, "kind": kind, "step": st.step, **d})
                              + "\n" for d in details)
            st.n_details += len(details)
        self._record_eval(row)
        return row

    def _task_matrix(self, signed: bool = False) -> np.ndarray:
        """Rows = eval points, columns = tasks; ``signed``: negated when lower is better."""
        R = np.array([r.task_scores if r.task_scores is not None else r.scores for r in self.state.rows],
                     dtype=float)
        return R if not signed or self.higher_is_better else -R

    def _record_eval(self, row: EvalRow) -> None:
        # the headline score over the tasks started so far (all tasks for the untrained model)
        seen = self.stream.n_tasks if row.kind == "init" else min(row.segment + 1, self.stream.n_tasks)
        rec: dict[str, Any] = {
            "type": "eval", "kind": row.kind, "step": row.step, "samples_seen": row.samples,
            "time": time.time(),
        }
        if self.eval_set_specs is None:
            rec.update({f"acc_task_{t}": v for t, v in enumerate(row.scores)})
            rec["acc"] = float(np.mean(row.scores[:seen]))
            rec["acc_class_il"] = float(np.mean(row.scores_class_il[:seen]))
            rec["acc_task_il"] = float(np.mean(row.scores_task_il[:seen]))
            columns = [f"task_{t}" for t in range(self.stream.n_tasks)]
        else:
            rec.update({s.name: v for s, v in zip(self.eval_set_specs, row.scores)})
            rec["score"] = float(np.mean(row.task_scores[:seen]))
            if hasattr(self.stream, "eval_metrics"):
                rec.update(self.stream.eval_metrics(self._stream_rows(), self._task_end_rows()))
            columns = [s.name for s in self.eval_set_specs]
        rows = self.metric_rows()
        if rows:
            R = self._task_matrix(signed=True)
            rec["forgetting"] = M.forgetting(R, rows) if len(rows) > 1 else None
            rec["bwt"] = M.backward_transfer(R, rows) if len(rows) > 1 else None
            # per-task forgetting so far (the loggers' forgetting curves): the tasks before the newest metric row
            rec.update({f"forgetting_task_{t}": float(f) for t, f in enumerate(M.forgetting_per_task(R, rows))})
        if row.val_scores is not None:
            rec.update({f"val_acc_task_{t}": v for t, v in enumerate(row.val_scores)})
            rec["val_acc"] = float(np.mean(row.val_scores[:seen]))
            if len(rows) > 1:
                rec["val_forgetting"] = M.forgetting(self._val_matrix(), rows)
        self._log(rec)
        self.records.score_row(["step", "samples_seen", "kind"] + columns,
                               [row.step, row.samples, row.kind, *row.scores])

    def _val_matrix(self) -> np.ndarray:
        """Rows = eval points, columns = tasks: accuracy on each task's validation set."""
        return np.array([r.val_scores for r in self.state.rows], dtype=float)

    def _stream_rows(self) -> list[dict[str, float]]:
        """Every eval row so far as {column name: score} (for a stream's own metrics)."""
        names = [s.name for s in self.eval_set_specs]
        return [dict(zip(names, r.scores)) for r in self.state.rows]

    def metric_rows(self) -> list[int]:
        """The rows forgetting, BWT, FWT, AIA and plasticity read - defined once, for the eval
        records, summary.json and so the report and loggers: the task-end rows of the first pass
        through the task sequence, with the newest row standing for the end of the sequence once
        that pass is complete (recurring streams: the final row), or added as "now" while it is not."""
        ends = self._task_end_rows()
        last = len(self.state.rows) - 1
        if not ends or ends[-1] == last:
            return ends
        if len(ends) == self.stream.n_tasks:
            return ends[:-1] + [last]
        return ends + [last]

    def _task_end_rows(self) -> list[int]:
        """Task-end rows of the first pass through the task sequence (see ``summary``)."""
        rows = [i for i, r in enumerate(self.state.rows) if r.kind == "task_end"]
        return rows[: self.stream.n_tasks]

    # ------------------------------------------------------------------ training
    def _flush(self, sums: dict[str, Any], n_steps: int, segment_task: int) -> None:
        st = self.state
        values = {k: (v.item() if torch.is_tensor(v) else v) for k, v in sums.items()}
        correct = values.pop("online_correct", None)
        if correct is not None:
            st.online_correct += correct
        rec = {"type": "step", "step": st.step, "samples_seen": st.samples, "true_task": segment_task,
               "time": time.time(),
               **{k: v / n_steps for k, v in values.items()},
               "online_acc": M.online_accuracy(st.online_correct, st.online_seen) if self.counts_online else None}
        lr = LRDriver.current_lr(self.strategy)
        if lr is not None:
            rec["lr"] = lr  # of the window's last step
        for k, v in values.items():
            if isinstance(v, float) and not math.isfinite(v):
                self._stop_nonfinite(f"{k} was {v} in the steps up to {st.step}")
        self._log(rec)

    def _check_pending(self, sums: dict[str, Any]) -> None:
        """Stop on a non-finite value logged since the last flush (before an eval point scores
        a model that a NaN step has already corrupted)."""
        for k, v in sums.items():
            if k != "online_correct" and not math.isfinite(float(v)):
                self._stop_nonfinite(f"{k} was {float(v)} in the steps up to {self.state.step}")

    def _log(self, rec: dict[str, Any]) -> None:
        self.records.log(rec)
        self.state.n_records += 1
        for lg in self.loggers:
            lg.log(rec)

    def _train_segment(self, seg_index: int) -> None:
        st, stream, strategy = self.state, self.stream, self.strategy
        seg = stream.segments[seg_index]
        start = seg.start + st.position
        sums: dict[str, Any] = {}
        n_in_window = 0
        driver = self.lr_driver
        i_step = st.position // stream.batch_size  # step within the segment
        seg_steps = stream.segment_steps()[seg_index]
        n_anneal = self.schedule.anneal_steps(seg_index) if self.schedule is not None else 0
        branch_from = seg_steps - n_anneal if n_anneal else -1
        if st.reports_online is None and not self.counts_online:
            st.reports_online = True  # nothing to count: no test-then-train forward pass
        # read once per segment rather than once per step (benchmarks/engine_overhead.py
        # measures what the loop adds to a hand-written one)
        log_every, eval_every, checkpoint_every = self.log_every, self.eval_every, self.checkpoint_every
        fault = self._fault
        t0 = time.perf_counter()
        for batch in stream.batches(seg, st.step, start):
            n = batch.y.shape[0]
            if i_step == branch_from and self.branch is None:
                self.branch = self._copy_for_branch()
            if driver is not None:
                driver.apply(strategy, st.step)
            if not st.reports_online:
                with torch.inference_mode():
                    pre = (strategy.predict(batch.x, batch.task).argmax(1) == batch.y).sum()
            try:
                with self._autocast():
                    out = strategy.observe(batch)
            except NonFiniteLoss as e:
                if self.on_nan == "stop":
                    self._stop_nonfinite(f"{e} at step {st.step}")
                st.skipped_nonfinite += 1
                out = {}
            if self.branch is not None:
                driver.apply_branch(self.branch, i_step - branch_from, n_anneal)
                try:
                    with self._autocast():
                        self.branch.observe(batch)
                except NonFiniteLoss as e:
                    if self.on_nan == "stop":
                        self._stop_nonfinite(f"{e} in the anneal branch at step {st.step}")
            i_step += 1
            if st.reports_online is None:
                st.reports_online = "online_correct" in out
            if not st.reports_online:
                out = {**out, "online_correct": pre}
            for k, v in out.items():
                sums[k] = sums[k] + v if k in sums else v
            st.step += 1
            st.samples += n
            st.online_seen += n
            st.position += n
            n_in_window += 1
            if st.step % log_every == 0:
                self._flush(sums, n_in_window, seg.task)
                sums, n_in_window = {}, 0
                for lg in self.loggers:
                    if hasattr(lg, "progress"):
                        lg.progress(st)
            # not at a segment's last step: its task-end row follows at the same step
            if eval_every and st.step % eval_every == 0 and i_step < seg_steps:
                st.train_seconds += time.perf_counter() - t0
                self._check_pending(sums)
                self.evaluate("periodic")
                t0 = time.perf_counter()
            if checkpoint_every and st.step % checkpoint_every == 0:
                st.train_seconds += time.perf_counter() - t0
                self.save_checkpoint()
                t0 = time.perf_counter()
            if fault is not None:
                self._maybe_fault("step")
        if n_in_window:
            self._flush(sums, n_in_window, seg.task)
        st.train_seconds += time.perf_counter() - t0

    @contextlib.contextmanager
    def _hook_guard(self, where: str):
        """A non-finite loss in training done inside a hook (task ends, evaluation) stops the
        run with the usual message instead of escaping as a generic failure."""
        try:
            yield
        except NonFiniteLoss as e:
            self._stop_nonfinite(f"{e} in {where}")

    def _copy_for_branch(self) -> Strategy:
        try:
            return copy.deepcopy(self.strategy)
        except Exception as e:
            raise ConfigError(
                f"the {type(self.schedule).__name__}'s anneal branch needs a copy of strategy "
                f"{type(self.strategy).__name__}, which cannot be deep-copied ({e}); "
                "set schedule.anneal_fraction=0 to run without the branch"
            ) from None

    def _stop_nonfinite(self, what: str) -> None:
        name = type(self.strategy).__name__
        last = self.last_checkpoint or "none written yet"
        raise RunStopped(
            f"non-finite loss: {what} (strategy {name}); last good checkpoint: {last}. "
            "Lower the learning rate, check the data, or set on_nan=skip to skip such batches"
        )

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """torch.autocast in the ``amp`` dtype on the run's device, or nothing (amp=false)."""
        if self.amp is None:
            return _NO_AUTOCAST
        return torch.autocast(self.device.type, dtype=self.amp)

    # ------------------------------------------------------------------ checkpoints
    def fingerprint(self) -> dict[str, Any]:
        """What shapes training (the strategy's class, the stream, TRAINING_CONFIG_KEYS of the
        config), as stored in every checkpoint and compared on resume."""
        import json

        s = self.strategy
        fp = {"strategy_class": f"{type(s).__module__}.{type(s).__qualname__}", "stream_name": self.stream.name,
              **{k: self.config[k] for k in TRAINING_CONFIG_KEYS if k in self.config}}
        if self.amp is not None:  # only when on: checkpoints of fp32 runs keep their fingerprint
            fp["amp"] = str(self.amp).removeprefix("torch.")
        return json.loads(json.dumps(fp, sort_keys=True, default=str))

    def save_checkpoint(self) -> None:
        """Write everything the rest of the run depends on (atomic; keeps the newest K)."""
        if self.checkpoint_dir is None:
            return
        state = self.strategy.state_dict() if hasattr(self.strategy, "state_dict") else {}
        if not state:
            # nothing to restore a strategy from: resuming would continue from a fresh model
            name = type(self.strategy).__name__
            print(f"continual: strategy {name} has no state_dict() (or returns {{}}): this run writes no "
                  "checkpoints, and a killed run starts over; implement state_dict()/load_state_dict() "
                  "(continual.types.Strategy) to make it resumable", file=sys.stderr)
            self.checkpoint_dir = None
            return
        payload = {
            "format": "continual-run", "version": 1,
            "fingerprint": self.fingerprint(),
            "state": self.state.to_dict(),
            "strategy": state,
            "branch": self.branch.state_dict() if self.branch is not None else None,
            "rng": C.rng_state(),
        }
        self.last_checkpoint = C.save_checkpoint(
            self.checkpoint_dir, self.state.step, payload, keep=self.checkpoint_keep
        )
        self._last_checkpoint_time = time.monotonic()
        for lg in self.loggers:
            if hasattr(lg, "checkpoint"):  # e.g. wandb uploads it as an artifact (loggers.wandb.log_checkpoints)
                lg.checkpoint(self.last_checkpoint, self.state.step)

    def resume(self) -> bool:
        """Restore the newest valid checkpoint in the run folder; False if there is none."""
        if self.checkpoint_dir is None:
            return False
        payload, path, skipped = C.load_latest(self.checkpoint_dir)
        for msg in skipped:
            print(f"continual: skipping corrupt checkpoint: {msg}", file=sys.stderr)
        self.resume_info = {
            "resumed_from": str(path) if path else None, "corrupt_checkpoints_skipped": len(skipped),
        }
        if payload is None:
            if skipped:
                print(f"continual: every checkpoint in {self.checkpoint_dir} ({len(skipped)}) is corrupt; "
                      "starting over from the beginning", file=sys.stderr)
            return False
        self._check_fingerprint(payload, path)
        if not payload["strategy"]:
            raise ConfigError(
                f"checkpoint {path} holds no strategy state (its strategy had no state_dict), so the run "
                "cannot continue where it stopped; start over with resume=false or use a new run folder")
        self.state = RunState.from_dict(payload["state"])
        self.strategy.load_state_dict(payload["strategy"])
        if payload.get("branch") is not None:
            self.branch = self._copy_for_branch()
            self.branch.load_state_dict(payload["branch"])
        C.set_rng_state(payload["rng"])
        self.last_checkpoint = path
        _truncate_lines(Path(self.out_dir) / "metrics.jsonl", self.state.n_records)
        _truncate_lines(Path(self.out_dir) / "scores.csv", 1 + len(self.state.rows))  # header + rows
        _truncate_lines(Path(self.out_dir) / DETAILS_FILE, self.state.n_details)
        return True

    def _check_fingerprint(self, payload: dict[str, Any], path: Path) -> None:
        """Refuse to continue a run whose training options differ from the checkpoint's."""
        saved = payload.get("fingerprint")
        if saved is None:
            print(f"continual: checkpoint {path} has no fingerprint (written before continual 0.2); "
                  "resuming without checking that its options match this run's", file=sys.stderr)
            return
        old, new = flatten_keys(saved), flatten_keys(self.fingerprint())
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if changed:
            shown = "; ".join(f"{k}: {old.get(k)!r} in the checkpoint, {new.get(k)!r} now" for k in changed[:8])
            more = f" (and {len(changed) - 8} more)" if len(changed) > 8 else ""
            raise ConfigError(
                f"the run folder {self.out_dir} holds checkpoints of a run with other training options: "
                f"{shown}{more}. Continuing would train from the old state under the new options. Use a "
                "new run folder (hydra.run.dir=...), or resume=false to start this folder over")

    def _maybe_fault(self, point: str) -> None:
        """Test hook: CONTINUAL_FAULT=<point>:<n> kills the process (SIGKILL) at the n-th <point>."""
        if self._fault is None or self._fault[0] != point:
            return
        self._fault[2] += 1
        if self._fault[2] == self._fault[1]:
            os.kill(os.getpid(), signal.SIGKILL)

    def run(self) -> dict[str, Any]:
        """Run the whole stream (or its rest, after a resume) and return the summary."""
        stream, strategy, st = self.stream, self.strategy, self.state
        append = bool(st.rows)
        self._rss_reset = _reset_peak_rss()
        self.records = RunRecords(self.out_dir, append=append)
        if not append:
            (Path(self.out_dir) / DETAILS_FILE).unlink(missing_ok=True)
        try:
            if not st.rows:
                self.evaluate("init")
            visible = stream.boundaries == "visible"
            for lg in self.loggers:
                if hasattr(lg, "start"):
                    lg.start(self)
            while st.segment < len(stream.segments):
                seg = stream.segments[st.segment]
                extra = stream.task_extra(seg.task) if hasattr(stream, "task_extra") else {}
                info = TaskInfo(seg.task, stream.tasks[seg.task].classes, stream.n_classes, st.step, extra)
                if visible and st.position == 0:
                    t_hook = time.perf_counter()
                    with self._hook_guard(f"on_task_start of task {seg.task}"):
                        _call_hook(strategy, "on_task_start", info)
                    st.train_seconds += time.perf_counter() - t_hook
                self._train_segment(st.segment)
                last = st.segment == len(stream.segments) - 1
                deployed = [strategy] if self.branch is None else [strategy, self.branch]
                t_hook = time.perf_counter()
                for s in deployed:
                    with self._hook_guard(f"the end of task {seg.task}"):
                        if visible:
                            _call_hook(s, "on_task_end", info)
                        if last:
                            _call_hook(s, "finalize")
                st.train_seconds += time.perf_counter() - t_hook  # training in hooks (e.g. a task-end refit)
                if self.branch is not None:
                    # the main trajectory goes on; the annealed copy is what one would deploy
                    self.evaluate("task_end_main")
                    self.evaluate("task_end", self.branch)
                    self.branch = None
                else:
                    self.evaluate("task_end")
                st.segment += 1
                st.position = 0
                # after the last segment only the summary is left to write
                if not last and (time.monotonic() - self._last_checkpoint_time
                                 >= self.checkpoint_min_interval_s):
                    self.save_checkpoint()
                self._maybe_fault("task_end")
                if self.on_segment_end is not None:
                    self.on_segment_end(self)
            summary = self.summary()
            self.records.summary(summary)
            for lg in self.loggers:
                lg.finish(summary)
            return summary
        finally:
            self.records.close()

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict[str, Any]:
        """Final metrics (see docs/metrics.md), timing, memory, config, seed and versions.

        On recurring streams the task-end rows are those of the first pass through the
        task sequence, with the final eval point as the end of the run.
        """
        st, stream = self.state, self.stream
        T = self._task_matrix()  # per-task scores in their own units
        S = self._task_matrix(signed=True)  # higher is better, for forgetting and transfer
        ends = self.metric_rows()
        samples = [r.samples for r in st.rows]
        # default window: a tenth of a segment, and at least three periodic eval points
        window = self.stability_window or max(
            len(stream) // (10 * len(stream.segments)), 3 * self.eval_every * stream.batch_size, 1
        )
        several = len(ends) > 1  # forgetting and transfer need at least two tasks
        classification = self.eval_set_specs is None
        out: dict[str, Any] = {
            "score": M.final_accuracy(T),
            "score_name": self.score_name,
            "higher_is_better": self.higher_is_better,
            "acc": M.final_accuracy(T) if classification else None,
            "aia": M.average_incremental_accuracy(T, ends),
            "forgetting": M.forgetting(S, ends) if several else None,
            "forgetting_per_task": M.forgetting_per_task(S, ends).tolist(),
            "bwt": M.backward_transfer(S, ends) if several else None,
            "fwt": M.forward_transfer(S, ends, init_row=0) if several else None,
            "plasticity": M.plasticity(T, ends),
            "online_acc": M.online_accuracy(st.online_correct, st.online_seen) if self.counts_online else None,
            # measured only between periodic eval points (eval.every); null without them
            "stability_gap": M.stability_gap(S, ends, samples, window)
            if several and any(r.kind == "periodic" for r in st.rows) else None,
        }
        if classification:
            out.update({
                "acc_class_il": M.final_accuracy(np.array([r.scores_class_il for r in st.rows])),
                "acc_task_il": M.final_accuracy(np.array([r.scores_task_il for r in st.rows])),
                "final_task_acc": T[-1].tolist(),
            })
        else:
            names = [s.name for s in self.eval_set_specs]
            out["eval_sets"] = [dataclasses.asdict(s) for s in self.eval_set_specs]
            out["final_scores"] = dict(zip(names, st.rows[-1].scores))
            out["initial_scores"] = dict(zip(names, st.rows[0].scores))
            if hasattr(stream, "summary_metrics"):
                out.update(stream.summary_metrics(self._stream_rows(), ends))
        if classification and st.rows and st.rows[-1].val_scores is not None:
            V = self._val_matrix()  # the held-out training samples, scored like the test sets
            out.update({
                "val_acc": M.final_accuracy(V),
                "val_aia": M.average_incremental_accuracy(V, ends),
                "val_forgetting": M.forgetting(V, ends) if several else None,
                "val_bwt": M.backward_transfer(V, ends) if several else None,
            })
        # what a sweep optimises (the job's return value): validation when there is a split
        out["objective"] = "val_acc" if "val_acc" in out else "score"
        out.update({
            "protocol": ("task_il" if stream.task_labels else "class_il") if classification else stream.kind,
            "steps": st.step,
            "samples_seen": st.samples,
            "train_seconds": st.train_seconds,
            "eval_seconds": st.eval_seconds,
            "samples_per_second": st.samples / st.train_seconds if st.train_seconds else 0.0,
            **_peak_rss(self._rss_reset),
            "params": parameter_count(self.strategy),
            "trainable_params": trainable_parameter_count(self.strategy),
            "stream": stream.name,
            "skipped_nonfinite_batches": st.skipped_nonfinite,
            **self.resume_info,
            **self.extra_summary,
            "n_tasks": stream.n_tasks,
            "seed": self.seed,
            "config": self.config,
            "versions": versions(),
        })
        detected = getattr(self.strategy, "detected_switches", None)
        if detected is not None:
            tol = self.switch_tolerance or max(1, len(stream) // (4 * len(stream.segments)))
            out.update(M.boundary_scores(detected, stream.true_boundaries, tol))
            out["switches_detected"] = len(detected)
        if hasattr(self.strategy, "summary"):
            out.update(self.strategy.summary())
        return out


TIMING_KEYS = (
    "train_seconds", "eval_seconds", "samples_per_second", "peak_rss_mb", "peak_rss_scope", "time", "versions",
    "resumed_from", "corrupt_checkpoints_skipped",
)


def check_run_options(**options: Any) -> None:
    """Refuse run options that would fail deep inside the run or be silently reinterpreted."""
    rules = {  # option: (allowed, what is expected)
        "eval_every": (lambda v: v >= 0, "eval.every must be >= 0 (0: task ends only)"),
        "eval_max_per_task": (lambda v: v is None or v >= 1,
                              "eval.max_per_task must be >= 1 test samples per task, or null for all"),
        "eval_batch_size": (lambda v: v >= 1, "eval.batch_size must be >= 1"),
        "log_every": (lambda v: v >= 1, "log.every must be >= 1 step per metrics.jsonl record"),
        "seed": (lambda v: 0 <= v < 2**32, "seed must be in 0..4294967295 (numpy's range)"),
        "checkpoint_every": (lambda v: v >= 0, "checkpoint.every must be >= 0 (0: task ends only)"),
        "checkpoint_keep": (lambda v: v >= 1, "checkpoint.keep must be >= 1 (the newest checkpoints kept)"),
    }
    for name, value in options.items():
        ok, expected = rules[name]
        if isinstance(value, bool) or not (value is None or isinstance(value, int)) or not ok(value):
            raise ConfigError(f"{expected}; got {value!r}")


def _reset_peak_rss() -> bool:
    """Reset the process's peak-RSS mark (Linux: ``/proc/self/clear_refs``), so a run in a
    sweep's shared process reports its own peak; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss(reset: bool) -> dict[str, Any]:
    """``peak_rss_mb`` and what it covers: ``run`` (since this run started, after a reset) or
    ``process`` (since the process started: it only grows from job to job of a sweep)."""
    if reset:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return {"peak_rss_mb": int(line.split()[1]) / 1024, "peak_rss_scope": "run"}
        except OSError:
            pass
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_rss_scope": "process"}


def _call_hook(strategy: Any, name: str, *args: Any) -> None:
    """Call an optional hook of ``continual.types.Strategy``; a plain class with only
    ``observe`` and ``predict`` (what the contract requires) simply does not have it."""
    hook = getattr(strategy, name, None)
    if hook is not None:
        hook(*args)


def _fault_from_env() -> list | None:
    spec = os.environ.get("CONTINUAL_FAULT")
    if not spec:
        return None
    point, n = spec.split(":")
    return [point, int(n), 0]


def _truncate_lines(path: Path, n: int) -> None:
    """Keep the first n lines of a file (drop records written after the checkpoint)."""
    if not path.exists():
        return
    lines = path.read_bytes().split(b"\n")
    kept = b"\n".join(lines[:n]) + (b"\n" if n else b"")
    from continual.records import write_atomic

    write_atomic(path, kept)


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("continual-sim", "torch", "numpy", "hydra-core", "faiss-gpu", "faiss-cpu"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return tuple(out.items())


def versions() -> dict[str, str]:
    """Python and package versions (read once per process: metadata lookups are slow)."""
    return dict(_versions())
