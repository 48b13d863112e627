"""The conformance kit for loggers: check a logger against ``continual.types.Logger`` in one call.

    from continual.testing import check_logger
    check_logger(lambda: MyLogger(project="x"))

``check_logger(logger_factory)`` builds the logger with ``logger_factory()`` (or
``logger_factory(out_dir=...)`` when the factory takes ``out_dir``: a fresh folder) and checks:

- ``declared``: a ``continual.types.Logger`` (the runner refuses anything else);
- ``run``: a short real run (``synthetic_stream``, ``Naive``, ``log_every=2``, a checkpoint
  after the first task) completes with it, calling ``start`` once before any ``progress`` or
  ``checkpoint`` and ``finish`` once, last;
- ``records_unchanged``: ``log`` leaves each record as it was given, during the call and
  until the run ends (records are shared with ``metrics.jsonl`` and the other loggers), and
  ``finish`` leaves the summary alone;
- ``abort``: after a run that fails mid-way, ``abort(error)`` (what the CLI calls then)
  returns without raising.

It returns ``{check: "passed" | "skipped"}`` and raises ``continual.testing.ContractViolation``
listing every failed check (``continual.testing`` re-exports ``check_logger``).
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from continual.testing_common import (
    accepts,
    first_difference,
    run_checks,
    seed_all,
    synthetic_stream,
    violation,
)
from continual.types import Batch, Logger

LOGGER_CHECKS = ("declared", "run", "records_unchanged", "abort")
#: batches of each segment whose contents are checked (and compared for determinism, resume)
LOOK_AT = 3
#: a segment of up to this many steps is counted by iterating it; a longer one through a resume
#: at its last batch (one batch must come back), so that a long real stream stays cheap
COUNT_UP_TO = 64


# ---------------------------------------------------------------------- loggers
class _Recorder(Logger):
    """Forwards every call to ``inner``, recording the calls, where one raised, and what ``log``
    and ``finish`` did to their arguments."""

    def __init__(self, inner: Logger) -> None:
        self.inner = inner
        self.calls: list[str] = []
        self.raised: tuple[str, BaseException] | None = None
        self.logged: list[tuple[dict, dict]] = []  # (record as given, a copy made before the call)
        self.changed: list[str] = []  # what log() and finish() did to their arguments during the call
        self.changed_in_call: set[int] = set()  # indices into logged

    def _call(self, method: str, *args: Any) -> None:
        self.calls.append(method)
        try:
            getattr(self.inner, method)(*args)
        except BaseException as e:
            self.raised = self.raised or (method, e)
            raise

    def start(self, runner: Any) -> None:
        self._call("start", runner)

    def log(self, record: dict[str, Any]) -> None:
        before = copy.deepcopy(record)
        self.logged.append((record, before))
        self._call("log", record)
        found = _record_change(record, before)
        if found:
            self.changed.append(f"log() {found} of the {_kind(before)} record")
            self.changed_in_call.add(len(self.logged) - 1)

    def progress(self, state: Any) -> None:
        self._call("progress", state)

    def checkpoint(self, path: Path, step: int) -> None:
        self._call("checkpoint", path, step)

    def finish(self, summary: dict[str, Any]) -> None:
        before = copy.deepcopy(summary)
        self._call("finish", summary)
        found = _record_change(summary, before)
        if found:
            self.changed.append(f"finish() {found} of the summary")

    def abort(self, error: BaseException | None = None) -> None:
        self._call("abort", error)


def _kind(record: dict[str, Any]) -> str:
    return " ".join(str(record[k]) for k in ("type", "kind") if record.get(k) is not None) or "a"


def _record_change(live: dict[str, Any], before: dict[str, Any]) -> str | None:
    """What was done to a record: keys removed, added or changed; None when nothing."""

    if not isinstance(live, dict):
        return "replaced"
    removed, added = sorted(set(before) - set(live)), sorted(set(live) - set(before))
    if removed:
        return f"removed {removed}"
    if added:
        return f"added {added}"
    changed = [k for k in before if first_difference(live[k], before[k], k) is not None]
    return f"changed {changed}" if changed else None


def _failing(base: type) -> type:
    """``base`` whose third ``observe`` raises: a run that fails mid-way."""

    class Failing(base):
        n = 0

        def observe(self, batch: Batch) -> dict[str, Any]:
            self.n += 1
            if self.n == 3:
                raise RuntimeError("check_logger: a strategy failing on purpose")
            return super().observe(batch)

    return Failing


def _short_run(logger: Logger, out_dir: Path, fail: bool = False) -> None:
    from continual.config import CheckpointConfig, LogConfig
    from continual.models import build_model
    from continual.runner import Runner
    from continual.strategies.naive import Naive

    seed_all(0)
    stream = synthetic_stream(n_classes=4, n_tasks=2, train_per_class=12, batch_size=8)
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=16)
    strategy = (_failing(Naive) if fail else Naive)(model, lr=0.05)
    Runner(stream, strategy, out_dir=str(out_dir), loggers=[logger], log=LogConfig(every=2, console=False),
           checkpoint=CheckpointConfig(min_interval_s=0)).run()


def check_logger(logger_factory: Callable[..., Logger], *, skip: Sequence[str] = ()) -> dict[str, str]:
    """Check the loggers ``logger_factory`` builds against the logger contract
    (``continual.types.Logger``); returns ``{check: "passed" | "skipped"}``.

    logger_factory: called with no argument, or with ``out_dir=`` (a fresh folder, the run's)
        when it takes that argument; it is called once per run the checks make (two).
    skip: names from ``LOGGER_CHECKS`` to leave out, e.g. ``("abort",)``.
    Raises ``ContractViolation`` listing every failed check; when the factory's object is not a
    Logger, only that.
    """
    unknown = set(skip) - set(LOGGER_CHECKS)
    if unknown:
        raise ValueError(f"unknown checks in skip: {sorted(unknown)}; choose from {list(LOGGER_CHECKS)}")
    takes_dir = accepts(logger_factory, "out_dir")
    with tempfile.TemporaryDirectory(prefix="continual-check-logger-") as tmp:
        def build(name: str) -> Any:
            out = Path(tmp) / name
            out.mkdir()
            return (logger_factory(out_dir=str(out)) if takes_dir else logger_factory()), out

        logger, out = build("run")
        label = type(logger).__name__
        if not isinstance(logger, Logger) and "declared" not in skip:
            raise violation(label, "logger", [
                f"[declared] a {type(logger).__name__} is not a continual.types.Logger, and the runner refuses it: "
                f"subclass it (class {type(logger).__name__}(Logger): ...); its start, log, progress, checkpoint, "
                "finish and abort are no-ops until you override them"])
        recorder = _Recorder(logger)
        crash: list[BaseException] = []
        if "run" not in skip or "records_unchanged" not in skip:
            try:
                _short_run(recorder, out)
            except Exception as e:
                crash.append(e)

        checks = {
            "declared": lambda: [],
            "run": lambda: _run_problems(recorder, crash),
            "records_unchanged": lambda: _records_problems(recorder),
            "abort": lambda: _abort_problems(build),
        }
        return run_checks(checks, skip, LOGGER_CHECKS, label, "logger")


def _run_problems(r: _Recorder, crash: list[BaseException]) -> list[str]:
    if crash:
        if r.raised is not None:
            method, e = r.raised
            return [f"the logger's {method}() raised {type(e).__name__}: {e}; a logger must not stop the run (the "
                    "CLI's GuardedLogger switches a failing logger off, a Runner built in Python does not)"]
        e = crash[0]
        return [f"the run with this logger raised {type(e).__name__}: {e}"]
    problems = []
    calls = r.calls
    if calls.count("start") != 1:
        problems.append(f"start() was called {calls.count('start')} times in one run; expected once")
    elif any(c in ("progress", "checkpoint") for c in calls[:calls.index("start")]):
        problems.append("progress() or checkpoint() came before start()")
    if calls.count("finish") != 1 or calls[-1] != "finish":
        problems.append(f"finish() must come once, last; the calls ended with {calls[-3:]}")
    for method in ("log", "progress", "checkpoint"):
        if method not in calls:
            problems.append(f"the run never called {method}(): the check's run did not exercise it")
    return problems


def _records_problems(r: _Recorder) -> list[str]:
    changed = list(r.changed)
    for i, (record, before) in enumerate(r.logged):  # a reference kept and changed later (e.g. in finish)
        found = _record_change(record, before) if i not in r.changed_in_call else None
        if found:
            changed.append(f"a {_kind(before)} record was changed after log() returned ({found}): the logger kept "
                           "it and changed it later")
    if not changed:
        return []
    more = f" (and {len(changed) - 1} more change(s) like it)" if len(changed) > 1 else ""
    return [f"{changed[0]}{more}; records are shared with metrics.jsonl and the other loggers, and the summary "
            "is what the run returns: copy one (rec = dict(record)) before renaming, dropping or converting values"]


def _abort_problems(build: Callable[[str], Any]) -> list[str]:
    logger, out = build("abort")
    try:
        _short_run(logger, out, fail=True)
    except Exception as e:  # the strategy's failure (or the logger's own: the run check reports that)
        error: BaseException = e
    else:
        return ["not checked: the failing run did not fail"]
    try:
        logger.abort(error)
    except Exception as e:
        return [f"abort(error) raised {type(e).__name__}: {e}; the CLI calls it when a run fails, to release "
                "what the logger holds (wandb marks its run failed): it must never raise"]
    return []


__all__ = ["LOGGER_CHECKS", "check_logger"]
