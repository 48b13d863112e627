"""The Runner: drives one strategy over one stream, evaluates, and records metrics.

Test-then-train: every incoming batch is scored before the learner trains on it
(the ``online`` record). The test split of every task, seen or not, is evaluated
before training (the ``init`` row, for FWT), every ``eval_every`` steps
(``periodic`` rows) and after each segment of the stream (``task_end`` rows).

Every kind of stream goes through this one path; scoring a strategy on every task and the
metrics the eval rows feed are ``continual.evaluation``'s, and what a checkpoint holds and how
a run resumes from it are ``continual.resume``'s, the summary's memory, parameter counts and
versions ``continual.run_facts``'. This module holds the training loop, when to evaluate and
checkpoint, the records and the summary.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from continual import checkpoint as C
from continual import metrics as M
from continual.config import CheckpointConfig, EvalConfig, LogConfig, amp_mode, check_run_options
from continual.evaluation import EvalRow, Evaluator
from continual.records import RunRecords
from continual.resume import (
    RunState,
    check_resumable,
    load_run_checkpoint,
    save_run_checkpoint,
)
from continual.resume import fingerprint as run_fingerprint
from continual.run_facts import parameter_count, peak_rss, reset_peak_rss, trainable_parameter_count, versions
from continual.run_folder import RunFolder
from continual.strategies.schedules import LRDriver, Schedule
from continual.types import ConfigError, Logger, NonFiniteLoss, Strategy, Stream, TaskInfo, strategy_member


def amp_dtype(value: Any) -> torch.dtype | None:
    """The autocast dtype of the ``amp`` setting (``continual.config.amp_mode``): None for false
    (fp32), bfloat16 for bf16."""
    return torch.bfloat16 if amp_mode(value) == "bf16" else None


_NO_AUTOCAST = contextlib.nullcontext()  # reusable and reentrant: one for every step


class RunStopped(RuntimeError):
    """The run stopped on purpose (e.g. a NaN loss with on_nan=stop); the message says why."""


class Runner:
    """Runs ``strategy`` over ``stream`` and writes the run folder ``out_dir``."""

    def __init__(
        self,
        stream: Stream,
        strategy: Strategy,
        out_dir: str | os.PathLike | RunFolder = ".",
        *,
        eval: EvalConfig | None = None,
        log: LogConfig | None = None,
        checkpoint: CheckpointConfig | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
        on_nan: str = "stop",
        amp: Any = False,
        schedule: Schedule | None = None,
        loggers: Sequence[Logger] = (),
        config: dict[str, Any] | None = None,
        extra_summary: dict[str, Any] | None = None,
        on_segment_end: Callable[[Runner], None] | None = None,
    ) -> None:
        """out_dir: the run folder (a path, or the ``RunFolder`` the caller has locked).
        eval, log, checkpoint: the run's sections (``continual.config``; defaults as there).
        seed: recorded in summary.json (seeding is the caller's). device: where eval sets go.
        on_nan: ``stop`` or ``skip`` a batch whose loss is not finite. amp: ``false`` or ``bf16``.
        schedule: the learning-rate schedule of the strategy's optimisers. loggers: views of the
        records (``continual.types.Logger``). config: the resolved config, kept in summary.json
        and fingerprinted for resume. extra_summary: more summary.json entries.
        on_segment_end: called with the runner after each segment's task-end row."""
        eval, log, checkpoint = eval or EvalConfig(), log or LogConfig(), checkpoint or CheckpointConfig()
        check_run_options(eval, log, checkpoint, seed, on_nan, amp)
        check_parts(stream, loggers)
        self.stream, self.strategy = stream, strategy
        self.folder = out_dir if isinstance(out_dir, RunFolder) else RunFolder(out_dir)
        self.folder.checkpoint_dir = self.folder.path / "checkpoints" if checkpoint.enabled else None
        self.out_dir = str(self.folder.path)
        self.eval_every, self.log_every = int(eval.every), int(log.every)
        self.stability_window = eval.stability_window
        self.switch_tolerance = eval.switch_tolerance
        self.loggers = list(loggers)
        self.config, self.seed, self.device = config or {}, seed, torch.device(device)
        self.on_segment_end = on_segment_end
        self.extra_summary = extra_summary or {}
        self.checkpoint_every, self.checkpoint_keep = int(checkpoint.every), int(checkpoint.keep)
        self.checkpoint_min_interval_s = float(checkpoint.min_interval_s)
        self._last_checkpoint_time = time.monotonic()
        self.on_nan = on_nan
        # amp=bf16: every observe() (forward, loss; backward in guarded_step runs outside it)
        # under torch.autocast on the run's device; evaluation and task-end hooks stay fp32
        self.amp = amp_dtype(amp)
        if on_nan == "stop" and isinstance(strategy, Strategy):
            # no sync per step: a non-finite loss stops the run at the end of its log window,
            # before the next eval row or checkpoint (see SupervisedStrategy.check_each_step)
            strategy.check_each_step = False
        # the lr schedule (strategies/schedules.py), driven by st.step; an infinite schedule's
        # anneal branch (a copy of the strategy trained with the annealed lr over the last
        # steps of each segment) is the deployable model scored at the segment's task-end row
        self.schedule = schedule
        self.lr_driver = LRDriver(schedule) if schedule is not None else None
        self.branch: Strategy | None = None
        self.last_checkpoint: Path | None = None
        self.resume_info: dict[str, Any] = {}
        self.state = RunState()
        # eval_unseen=True: periodic eval points also score tasks not started yet
        self.evaluator = Evaluator(stream, self.device, eval.max_per_task, int(eval.batch_size), eval.unseen)
        self._fault = _fault_from_env()
        self._rss_reset = False
        self.counts_online = stream.online_accuracy  # test-then-train accuracy
        self.counts_tokens = stream.counts_tokens

    @property
    def checkpoint_dir(self) -> Path | None:
        """Where the run's checkpoints go; None: it writes none (``checkpoint.enabled=false``, or
        a strategy with no state to save)."""
        return self.folder.checkpoint_dir

    @checkpoint_dir.setter
    def checkpoint_dir(self, value: Path | None) -> None:
        self.folder.checkpoint_dir = value

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, kind: str, strategy: Strategy | None = None) -> EvalRow:
        """Score every task's test set with ``strategy`` (default: the run's); returns and
        records the eval row."""
        strategy = strategy or self.strategy
        st = self.state
        t0 = time.perf_counter()
        try:
            with self._hook_guard(f"{type(strategy).__name__}'s evaluation ({kind} row)"):
                _call_hook(strategy, "prepare_eval")  # may train (e.g. TAME's selector)
                row, details = self.evaluator.score(kind, strategy, st.step, st.samples, st.segment,
                                                    midway=functools.partial(self._maybe_fault, "eval"))
                st.rows.append(row)
                st.evals_done += 1
                if details:  # e.g. every probe's generated answer, one JSON line each
                    st.n_details += self.folder.append_details(details, len(st.rows) - 1, kind, st.step)
                self._record_eval(row)
                return row
        finally:
            st.eval_seconds += time.perf_counter() - t0

    def _record_eval(self, row: EvalRow) -> None:
        rec = self.evaluator.record(row, self.state.rows)
        if self.counts_tokens:  # the x-axis of language-model runs
            rec = {**rec, "tokens_seen": self.state.tokens}
        self._log(rec)
        self.records.score_row(["step", "samples_seen", "kind"] + self.evaluator.columns(),
                               [row.step, row.samples, row.kind, *row.scores])

    def metric_rows(self) -> list[int]:
        """The eval rows forgetting, BWT, FWT, AIA and plasticity read (``Evaluator.metric_rows``)."""
        return self.evaluator.metric_rows(self.state.rows)

    # ------------------------------------------------------------------ training
    def _flush(self, sums: dict[str, Any], n_steps: int, segment_task: int) -> None:
        st = self.state
        values = {k: (v.item() if torch.is_tensor(v) else v) for k, v in sums.items()}
        correct = values.pop("online_correct", None)
        if correct is not None:
            st.online_correct += correct
        tokens = values.pop("__tokens", None)
        if tokens is not None:
            st.tokens += int(tokens)
        rec = {"type": "step", "step": st.step, "samples_seen": st.samples,
               **({"tokens_seen": st.tokens} if self.counts_tokens else {}), "true_task": segment_task,
               "time": time.time(),
               **{k: v / n_steps for k, v in values.items()},
               "online_acc": M.online_accuracy(st.online_correct, st.online_seen) if self.counts_online else None}
        lr = LRDriver.current_lr(self.strategy)
        if lr is not None:
            rec["lr"] = lr  # of the window's last step
        if self.branch is not None:  # the infinite schedule's annealed copy trains beside it
            rec["lr_anneal"] = LRDriver.current_lr(self.branch)
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
        count_tokens = self.counts_tokens
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
            if count_tokens:
                out = {**out, "__tokens": stream.batch_tokens(batch)}
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
        """What shapes training, as stored in every checkpoint and compared on resume
        (``continual.resume.fingerprint``)."""
        return run_fingerprint(self.strategy, self.stream.name, self.config, self.amp)

    def save_checkpoint(self) -> None:
        """Write everything the rest of the run depends on (atomic; keeps the newest K)."""
        if self.checkpoint_dir is None:
            return
        path = save_run_checkpoint(self.checkpoint_dir, self.state.step, self.state, self.strategy, self.branch,
                                   self.fingerprint(), self.checkpoint_keep)
        if path is None:  # the strategy has no state to save: this run writes no checkpoints
            self.checkpoint_dir = None
            return
        self.last_checkpoint = path
        self._last_checkpoint_time = time.monotonic()
        for lg in self.loggers:  # e.g. wandb uploads it as an artifact (loggers.wandb.log_checkpoints)
            lg.checkpoint(self.last_checkpoint, self.state.step)

    def resume(self) -> bool:
        """Restore the newest valid checkpoint in the run folder; False if there is none."""
        if self.checkpoint_dir is None:
            return False
        payload, path, self.resume_info = load_run_checkpoint(self.checkpoint_dir)
        if payload is None:
            return False
        check_resumable(payload, path, self.fingerprint(), self.out_dir)
        self.state = RunState.from_dict(payload["state"])
        strategy_member(self.strategy, "load_state_dict")(payload["strategy"])
        if payload.get("branch") is not None:
            self.branch = self._copy_for_branch()
            strategy_member(self.branch, "load_state_dict")(payload["branch"])
        C.set_rng_state(payload["rng"])
        self.last_checkpoint = path
        self.folder.truncate(self.state.n_records, len(self.state.rows), self.state.n_details)
        return True

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
        self._rss_reset = reset_peak_rss()
        self.folder.lock()  # one run at a time in a folder (a no-op when the caller holds it)
        self.folder.clean_temporaries()
        try:
            self.records = RunRecords(self.folder.path, append=append)
        except BaseException:
            self.folder.unlock()
            raise
        self.folder.start_details(append)
        try:
            if not st.rows:
                self.evaluate("init")
            visible = stream.boundaries == "visible"
            for lg in self.loggers:
                lg.start(self)
            while st.segment < len(stream.segments):
                seg = stream.segments[st.segment]
                extra = stream.task_extra(seg.task)
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
            self.folder.clear_error()  # an earlier attempt's error.txt no longer describes the folder
            for lg in self.loggers:
                lg.finish(summary)
            return summary
        finally:
            self.records.close()
            self.folder.unlock()

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict[str, Any]:
        """Final metrics (``Evaluator.summary``, see docs/metrics.md), timing, memory, config,
        seed and versions."""
        st, stream = self.state, self.stream
        # default window: a tenth of a segment, and at least three periodic eval points
        window = self.stability_window or max(
            len(stream) // (10 * len(stream.segments)), 3 * self.eval_every * stream.batch_size, 1
        )
        online_acc = M.online_accuracy(st.online_correct, st.online_seen) if self.counts_online else None
        out = self.evaluator.summary(st.rows, window, online_acc)
        classification = self.evaluator.classification
        out.update({
            "protocol": ("task_il" if stream.task_labels else "class_il") if classification else stream.kind,
            "steps": st.step,
            "samples_seen": st.samples,
            "train_seconds": st.train_seconds,
            "eval_seconds": st.eval_seconds,
            "samples_per_second": st.samples / st.train_seconds if st.train_seconds else 0.0,
            **({"tokens_seen": st.tokens,
                "tokens_per_second": st.tokens / st.train_seconds if st.train_seconds else 0.0}
               if self.counts_tokens else {}),
            **peak_rss(self._rss_reset),
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
        detected = strategy_member(self.strategy, "detected_switches")
        if detected is not None:
            tol = self.switch_tolerance or max(1, len(stream) // (4 * len(stream.segments)))
            out.update(M.boundary_scores(detected, stream.true_boundaries, tol))
            out["switches_detected"] = len(detected)
        out.update(strategy_member(self.strategy, "summary")())
        return out


TIMING_KEYS = (
    "train_seconds", "eval_seconds", "samples_per_second", "tokens_per_second", "peak_rss_mb", "peak_rss_scope",
    "time", "versions", "resumed_from", "corrupt_checkpoints_skipped",
)


def _call_hook(strategy: Any, name: str, *args: Any) -> None:
    """Call an optional hook of ``continual.types.Strategy`` (a no-op for a plain class that
    only has ``observe`` and ``predict``, what the contract requires)."""
    strategy_member(strategy, name)(*args)


def check_parts(stream: Any, loggers: Sequence[Any]) -> None:
    """Refuse a stream or a logger that does not declare its contract (``continual.types``)."""
    if not isinstance(stream, Stream):
        raise ConfigError(
            f"the stream is a {type(stream).__name__}, which is not a continual.types.Stream: subclass "
            "continual.types.ClassificationStream or SelfScoringStream (docs/plugins.md), or build it "
            "with continual.streams (from_arrays, class_incremental, ...)")
    for lg in loggers:
        if not isinstance(lg, Logger):
            raise ConfigError(
                f"logger {type(lg).__name__} is not a continual.types.Logger: subclass it (its methods "
                "start, log, progress, checkpoint, finish and abort are no-ops until you override them)")


def _fault_from_env() -> list | None:
    spec = os.environ.get("CONTINUAL_FAULT")
    if not spec:
        return None
    point, n = spec.split(":")
    return [point, int(n), 0]
