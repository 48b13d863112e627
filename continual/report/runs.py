"""Finding and grouping runs for a report: which folders under a path are runs, what each holds
(``RunData``: summary, eval records, the scores matrix, the error of a failed run), and the
groups of finished runs (``Group``: stream x strategy x model x setting) with their mean and
std over seeds (``table_rows``).

A group's setting is every config value that differs between runs of the same stream x
strategy x model, except the seed and logging options (``assign_settings``). Rendering the
tables and figures is the rest of ``continual.report``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from continual import metric_table
from continual.records import flatten_keys
from continual.report.format import number
from continual.types import ConfigError

#: the files that make a folder a run folder (a Hydra job folder ``.hydra/`` is one too)
RUN_MARKERS = ("summary.json", "metrics.jsonl", "scores.csv", "error.txt")
#: folders inside a run that are never runs themselves
NOT_RUNS = {"wandb", "tensorboard", "checkpoints", "__pycache__"}
#: config keys that never split a group: seeds, logging, checkpointing, the device
IGNORED_KEYS = re.compile(r"^(seed|device|threads|loggers|resume|on_nan)$|^(log|loggers|checkpoint)\.|(^|\.)seed$")


def __getattr__(name: str) -> tuple[str, ...]:
    """``METRICS`` (the table's default columns, in order) and ``EXTRA_METRICS`` (columns added
    when some run reports them), read from the metric table (``continual.metric_table``) each
    time they are asked for."""
    if name == "METRICS":
        return metric_table.report_metrics()
    if name == "EXTRA_METRICS":
        return metric_table.extra_metrics()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def metrics_of(runs: Sequence[RunData]) -> tuple[str, ...]:
    """The table's columns for these runs, from the metric table: the default columns, then
    each extra one some run reports (a metric ``hidden_by`` a column is left out: ``score`` is
    ``acc``). Runs not scored by accuracy (``acc`` null, ``score`` set) get their extra columns
    first and no accuracy-only default column."""
    table = {m.name: m for m in metric_table.metrics()}
    defaults = metric_table.report_metrics()
    extra = [m for m in metric_table.extra_metrics()
             if any(math.isfinite(number(r.summary.get(m))) for r in runs)]
    if any(r.summary.get("acc") is None and r.summary.get("score") is not None for r in runs):
        columns = (*extra, *(m for m in defaults if not table[m].accuracy_only))
    else:
        columns = (*defaults, *extra)
    return tuple(m for m in columns if table[m].hidden_by not in columns)


# ---------------------------------------------------------------------- reading runs
@dataclass
class RunData:
    """One run folder as the report sees it.

    status: ``ok`` (has summary.json), ``failed`` (has error.txt or a traceback in its
    log) or ``incomplete`` (neither: still running, killed or timed out).
    matrix: (rows, n_tasks) accuracies of scores.csv; ``kinds``/``samples`` per row.
    evals: the eval records of metrics.jsonl, in order.
    """

    path: Path
    status: str
    summary: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    evals: list[dict[str, Any]] = field(default_factory=list)
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    kinds: list[str] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)  # the score columns of scores.csv
    setting: str = ""

    @property
    def score_name(self) -> str:
        """What the scores are: ``accuracy``, ``exact_match`` or ``loss``."""
        return str(self.summary.get("score_name") or "accuracy")

    @property
    def stream(self) -> str:
        return str(self.summary.get("stream", "?"))

    @property
    def strategy(self) -> str:
        return str(self.summary.get("strategy", "?"))

    @property
    def model(self) -> str:
        return str(self.summary.get("model", ""))


def _read_scores(path: Path) -> tuple[np.ndarray, list[str], list[int], list[str]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        return np.zeros((0, 0)), [], [], []
    header, body = rows[0], rows[1:]
    kind_i, samples_i = header.index("kind"), header.index("samples_seen")
    # classification: one column per task; streams scoring their own eval sets: every column
    tasks = [i for i, h in enumerate(header) if h.startswith("task_")] or \
        [i for i in range(len(header)) if i > kind_i]

    def number(v: str) -> float:
        return float("nan") if v in ("", "None", "nan") else float(v)

    matrix = np.array([[number(r[i]) for i in tasks] for r in body], dtype=float)
    return matrix, [r[kind_i] for r in body], [int(float(r[samples_i])) for r in body], [header[i] for i in tasks]


def _find_error(path: Path) -> str:
    """The error of a failed job: ``error.txt`` (written by the CLI), else the last
    traceback in the job's Hydra ``*.log`` file; empty when there is none."""
    err = path / "error.txt"
    if err.is_file():
        return err.read_text(errors="replace").strip() or "failed (empty error.txt)"
    for log in sorted(path.glob("*.log")):
        text = log.read_text(errors="replace")
        at = text.rfind("Traceback (most recent call last)")
        if at >= 0:
            return text[at:].strip()
    return ""


def load_run(path: str | os.PathLike) -> RunData:
    """Read one run folder (any of summary.json, metrics.jsonl, scores.csv may be missing)."""
    path = Path(path)
    run = RunData(path=path, status="incomplete")
    if (path / "summary.json").is_file():
        try:
            run.summary = json.loads((path / "summary.json").read_text())
            run.status = "ok"
        except json.JSONDecodeError as e:
            run.error = f"unreadable summary.json: {e}"
    if run.status != "ok":
        run.error = _find_error(path) or run.error
        if run.error:
            run.status = "failed"
    if (path / "metrics.jsonl").is_file():
        with open(path / "metrics.jsonl") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
                if rec.get("type") == "eval":
                    run.evals.append(rec)
    if (path / "scores.csv").is_file():
        try:
            run.matrix, run.kinds, run.samples, run.columns = _read_scores(path / "scores.csv")
        except (ValueError, IndexError) as e:
            warnings.warn(f"{path / 'scores.csv'} is not a scores table ({e}); skipped",
                          stacklevel=2)
    return run


def find_runs(root: str | os.PathLike) -> list[RunData]:
    """Every run folder under ``root`` (or ``root`` itself), at any depth, sorted by path.

    A run folder holds summary.json, metrics.jsonl, scores.csv or error.txt, or is a Hydra
    job folder (``.hydra/``). Hidden folders and a run's wandb/tensorboard/checkpoints
    folders are not searched.
    """
    root = Path(root)
    if root.is_file():
        root = root.parent
    if not root.is_dir():
        raise ConfigError(f"report: {str(root)!r} is not a folder; give a run folder or a "
                          "multirun folder")
    found = []
    for here, dirs, files in os.walk(root):
        is_run = any(m in files for m in RUN_MARKERS) or ".hydra" in dirs
        if is_run:
            found.append(load_run(here))
            dirs[:] = []  # a run folder's children are its own files
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in NOT_RUNS)
    return sorted(found, key=lambda r: str(r.path))


# ---------------------------------------------------------------------- grouping and the table
def assign_settings(runs: Sequence[RunData]) -> None:
    """Label each finished run with the config values that set it apart from other runs of
    the same stream x strategy x model (``strategy.lr=0.1, stream.batch_size=32``); the
    seed and logging options never count. Runs with the same label form one group."""
    buckets: dict[tuple[str, str, str], list[RunData]] = {}
    for run in runs:
        buckets.setdefault((run.stream, run.strategy, run.model), []).append(run)
    for members in buckets.values():
        flat = [flatten_keys(r.summary.get("config") or {}) for r in members]
        keys = sorted(set().union(*flat)) if flat else []
        varied = [k for k in keys if not IGNORED_KEYS.search(k)
                  and len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1]
        by_name = _schedule_names(members, flat, varied)
        if by_name is not None:  # schedule=<name> instead of every option of every schedule class
            varied = [k for k in varied if not k.startswith("schedule.") or k in by_name]
        for run, f in zip(members, flat):
            named = [f"schedule={run.summary.get('schedule')}"] if by_name is not None else []
            run.setting = ", ".join(named + [f"{k}={f.get(k)}" for k in varied])


def _schedule_names(members: Sequence[RunData], flat: list[dict[str, Any]], varied: list[str]) -> set[str] | None:
    """When runs differ in their lr schedule: the schedule options that still differ between
    runs of the same schedule name (usually none); None when the schedule does not vary."""
    if not any(k.startswith("schedule.") for k in varied):
        return None
    names = [r.summary.get("schedule") for r in members]
    if None in names:
        return None
    keep = set()
    for name in set(names):
        same = [f for f, n in zip(flat, names) if n == name]
        keep |= {k for k in varied if k.startswith("schedule.")
                 and len({json.dumps(f.get(k), sort_keys=True) for f in same}) > 1}
    return keep


def metric_value(run: RunData, metric: str) -> float:
    """A run's ``metric`` from its summary; NaN when it was not measured (null) or is
    undefined: ``fwt`` on a class-incremental stream, where a task's classes cannot be
    predicted before it is trained, so fwt only measures the untrained model."""
    if metric == "fwt" and run.summary.get("protocol") == "class_il":
        return float("nan")
    return number(run.summary.get(metric))


@dataclass
class Group:
    """Runs of one stream x strategy x model x setting (normally: the seeds of one cell)."""

    stream: str
    strategy: str
    model: str
    setting: str
    runs: list[RunData]

    @property
    def label(self) -> str:
        return f"{self.strategy}" + (f" [{self.setting}]" if self.setting else "")

    def stats(self) -> dict[str, float]:
        """``<metric>_mean`` and ``<metric>_std`` (sample std, n-1; NaN for one run) over the
        runs that report it (see ``metric_value``), and ``n`` (the number of runs in the group)."""
        out: dict[str, float] = {"n": len(self.runs)}
        for m in (*metric_table.report_metrics(), *metric_table.extra_metrics()):
            values = np.array([metric_value(r, m) for r in self.runs])
            values = values[np.isfinite(values)]
            out[f"{m}_mean"] = float(values.mean()) if values.size else float("nan")
            out[f"{m}_std"] = float(values.std(ddof=1)) if values.size > 1 else float("nan")
        return out


def group_runs(runs: Sequence[RunData]) -> list[Group]:
    """Finished runs grouped by (stream, strategy, model, setting), sorted by those."""
    ok = [r for r in runs if r.status == "ok"]
    assign_settings(ok)
    groups: dict[tuple[str, str, str, str], list[RunData]] = {}
    for r in ok:
        groups.setdefault((r.stream, r.strategy, r.model, r.setting), []).append(r)
    return [Group(*key, runs=sorted(members, key=lambda r: number(r.summary.get("seed"))))
            for key, members in sorted(groups.items())]


def table_rows(groups: Sequence[Group]) -> list[dict[str, Any]]:
    """One row per group: stream, strategy, model, setting, n and every metric's mean/std."""
    return [{"stream": g.stream, "strategy": g.strategy, "model": g.model, "setting": g.setting,
             **g.stats()} for g in groups]
