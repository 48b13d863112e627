"""Reports of one run or a whole sweep: a table of mean +- std over seeds, and plots.

``continual report PATH [--out DIR]`` finds every run folder under PATH (any depth: a
folder with ``summary.json``, ``metrics.jsonl`` or ``scores.csv``, or a Hydra job folder
``.hydra/``), groups finished runs by stream x strategy x model (and by any other config
value that differs between them, except the seed), and writes into DIR (default PATH):

- ``report.md``, ``report.html``: the table (acc, forgetting, bwt, fwt, online_acc, aia,
  stability_gap, samples_per_second as mean +- sample std over seeds, and n runs), every
  run, the failed or unfinished runs with their error, and the plots;
- ``report.csv``: the table with full precision (``<metric>_mean``, ``<metric>_std``);
- PNG plots, one set per stream: ``accuracy_matrix_<stream>.png`` (the accuracy matrix
  after each task, averaged over seeds), ``accuracy_forgetting_<stream>.png`` (average
  accuracy and forgetting against samples seen), ``task_accuracy_<stream>.png`` (each
  task's accuracy against samples seen, task boundaries marked), and ``comparison.png``
  (final accuracy and forgetting of every group, with std error bars).

A run writes its own report at its end (``write_run_report``). Plots use matplotlib's
object API with the Agg canvas, so no global backend is switched and no display is needed.
"""

from __future__ import annotations

import argparse
import csv
import html
import io
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from continual.records import flatten_keys
from continual.types import ConfigError

#: the table's columns, in order (each as mean and std over the group's runs)
METRICS = ("acc", "forgetting", "bwt", "fwt", "online_acc", "aia", "stability_gap",
           "samples_per_second")
#: columns added when some run reports them: the headline score of streams not scored by
#: accuracy (language models), CKL's IL / UL / NL / FUAR, continual pre-training's losses
EXTRA_METRICS = ("score", "IL", "UL", "NL", "FUAR", "final_avg_loss", "avg_forgetting")


def metrics_of(runs: Sequence[Any]) -> tuple[str, ...]:
    """The table's columns for these runs: METRICS, then each extra one some run reports."""
    extra = [m for m in EXTRA_METRICS if any(math.isfinite(_number(r.summary.get(m))) for r in runs)]
    if any(r.summary.get("acc") is None and r.summary.get("score") is not None for r in runs):
        return (*extra, *(m for m in METRICS if m not in ("acc", "online_acc")))
    return (*METRICS, *(m for m in extra if m != "score"))
RUN_MARKERS = ("summary.json", "metrics.jsonl", "scores.csv", "error.txt")
#: folders inside a run that are never runs themselves
NOT_RUNS = {"wandb", "tensorboard", "checkpoints", "__pycache__"}
#: config keys that never split a group: seeds, logging, checkpointing, the device
IGNORED_KEYS = re.compile(r"^(seed|device|threads|loggers|resume|on_nan)$|^(log|checkpoint)\.|(^|\.)seed$")


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


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return float("nan")
    return float(value)


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
        runs that report the metric, and ``n`` (the number of runs in the group)."""
        out: dict[str, float] = {"n": len(self.runs)}
        for m in (*METRICS, *EXTRA_METRICS):
            values = np.array([_number(r.summary.get(m)) for r in self.runs])
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
    return [Group(*key, runs=sorted(members, key=lambda r: _number(r.summary.get("seed"))))
            for key, members in sorted(groups.items())]


def _fmt(mean: float, std: float, metric: str) -> str:
    if not math.isfinite(mean):
        return "n/a"
    digits = 0 if metric == "samples_per_second" else 3
    text = f"{mean:.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if math.isfinite(std) else "")


def table_rows(groups: Sequence[Group]) -> list[dict[str, Any]]:
    """One row per group: stream, strategy, model, setting, n and every metric's mean/std."""
    return [{"stream": g.stream, "strategy": g.strategy, "model": g.model, "setting": g.setting,
             **g.stats()} for g in groups]


# ---------------------------------------------------------------------- plots
def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _draw_matrix(ax: Any, matrix: np.ndarray, row_labels: Sequence[str], title: str,
                 column_labels: Sequence[str] | None = None, score_name: str = "accuracy") -> Any:
    """A heatmap of ``matrix`` (rows: eval points, columns: tasks, or a stream's named eval
    sets), values written in the cells when there are few of them. Accuracies span [0, 1];
    other scores their own range (a loss's colours reversed, so brighter is always better)."""
    matrix = np.asarray(matrix, dtype=float)
    if score_name == "accuracy":
        low, high, cmap = 0.0, 1.0, "viridis"
    else:
        finite = matrix[np.isfinite(matrix)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        cmap = "viridis_r" if score_name == "loss" else "viridis"
    image = ax.imshow(matrix, vmin=low, vmax=high if high > low else low + 1.0, cmap=cmap, aspect="auto",
                      interpolation="nearest")
    labels = list(column_labels) if column_labels else [str(t + 1) for t in range(matrix.shape[1])]
    ax.set_xticks(range(matrix.shape[1]), labels, fontsize=7 if column_labels else None,
                  rotation=45 if column_labels else 0)
    ax.set_xlabel("evaluated on task" if not column_labels else "eval set")
    step = max(1, len(row_labels) // 12)
    ax.set_yticks(range(0, len(row_labels), step), list(row_labels)[::step], fontsize=7)
    ax.set_title(title, fontsize=9)
    if matrix.size <= 121:
        for (i, j), v in np.ndenumerate(matrix):
            if math.isfinite(v):
                bright = (v - low) / (high - low) if high > low else 0.0
                bright = 1.0 - bright if score_name == "loss" else bright
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if bright < 0.6 else "black")
    return image


def accuracy_matrix_figure(matrix: Any, row_labels: Sequence[str], title: str = "accuracy") -> Any:
    """One accuracy-matrix heatmap as a matplotlib Figure (Agg canvas, fixed layout: cheap
    enough to draw at every eval point, about 0.1 s).

    matrix: (rows, n_tasks) accuracies in [0, 1], NaN for missing cells.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix, dtype=float)
    width, height = 2.2 + 0.5 * matrix.shape[1], 1.2 + 0.25 * min(len(row_labels), 40)
    fig = Figure(figsize=(width, height), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((1.1 / width, 0.7 / height, 1 - 2.0 / width, 1 - 1.1 / height))
    image = _draw_matrix(ax, matrix, row_labels, title)
    fig.colorbar(image, cax=fig.add_axes((1 - 0.75 / width, 0.7 / height, 0.12 / width,
                                          1 - 1.1 / height)))
    return fig


def figure_to_array(fig: Any) -> np.ndarray:
    """The rendered figure as an (H, W, 3) uint8 image."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path


def _task_end_matrix(run: RunData) -> tuple[np.ndarray, list[str]]:
    """The init row and the task-end rows of a run's scores (the classic accuracy matrix)."""
    keep = [i for i, k in enumerate(run.kinds) if k in ("init", "task_end")]
    labels = ["init" if run.kinds[i] == "init" else f"after task {n}"
              for n, i in enumerate(keep)]
    return run.matrix[keep], labels


def _mean_matrix(group: Group) -> tuple[np.ndarray, list[str]]:
    mats = [_task_end_matrix(r) for r in group.runs if r.matrix.size]
    if not mats:
        return np.zeros((0, 0)), []
    shape = mats[0][0].shape
    same = [m for m, _ in mats if m.shape == shape]
    return np.nanmean(np.stack(same), axis=0), mats[0][1]


def _curves(group: Group, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x = samples seen at the eval points of the group's first run; mean and std of ``key``
    over the runs (each interpolated onto that x when their eval points differ)."""
    series = []
    for run in group.runs:
        xs = np.array([e.get("samples_seen", 0) for e in run.evals], dtype=float)
        ys = np.array([_number(e.get(key)) for e in run.evals], dtype=float)
        if xs.size:
            series.append((xs, ys))
    if not series:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    x0 = series[0][0]
    ys = []
    for xs, y in series:
        if xs.shape == x0.shape and np.array_equal(xs, x0):
            ys.append(y)
        else:
            ok = np.isfinite(y)
            ys.append(np.interp(x0, xs[ok], y[ok]) if ok.sum() > 1 else np.full_like(x0, np.nan))
    stack = np.stack(ys)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (no forgetting yet)
        mean = np.nanmean(stack, axis=0)
        std = np.nanstd(stack, axis=0)
    return x0, mean, std


def _boundaries(group: Group) -> list[int]:
    """Samples seen at the task ends of the group's first run (the last one left out)."""
    evals = group.runs[0].evals
    ends = [int(e.get("samples_seen", 0)) for e in evals if e.get("kind") == "task_end"]
    return ends[:-1]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "stream"


def plot_stream(groups: Sequence[Group], out: Path) -> list[Path]:
    """The three per-stream PNGs for ``groups`` (all of one stream); returns their paths."""
    stream = groups[0].stream
    slug = _slug(stream)
    written = []
    first = groups[0].runs[0]
    score_name = first.score_name
    headline = "acc" if score_name == "accuracy" else "score"
    columns = None if score_name == "accuracy" else first.columns
    if columns is not None:  # only the eval sets scored like the headline (CKL: not its held-out loss)
        kind = {s["name"]: s["score"] for s in first.summary.get("eval_sets", [])}
        keep = [i for i, c in enumerate(columns) if kind.get(c, score_name) == score_name]
        columns = [columns[i] for i in keep]
        for g in groups:
            for r in g.runs:
                if r.matrix.size and r.matrix.shape[1] == len(first.columns):
                    r.matrix = r.matrix[:, keep]
    noun = "accuracy" if score_name == "accuracy" else score_name.replace("_", " ")
    # accuracy matrices: one panel per group
    with_matrix = [(g, *_mean_matrix(g)) for g in groups]
    with_matrix = [(g, m, lab) for g, m, lab in with_matrix if m.size]
    if with_matrix:
        cols = min(3, len(with_matrix))
        rows = math.ceil(len(with_matrix) / cols)
        n_tasks = with_matrix[0][1].shape[1]
        n_rows = with_matrix[0][1].shape[0]
        fig = _new_figure(max(4.5, cols * (2.2 + 0.5 * n_tasks)),
                          rows * (1.5 + 0.25 * min(n_rows, 30)))
        image = None
        for i, (g, m, lab) in enumerate(with_matrix):
            ax = fig.add_subplot(rows, cols, i + 1)
            image = _draw_matrix(ax, m, lab, f"{g.label} (n={len(g.runs)})", columns, score_name)
        fig.colorbar(image, ax=fig.axes, fraction=0.03)
        fig.suptitle(f"{stream}: {noun} after each task", fontsize=10)
        written.append(_save(fig, out / f"accuracy_matrix_{slug}.png"))
    # average accuracy and forgetting against samples seen
    fig = _new_figure(10, 3.6)
    axes = [fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)]
    for key, ax in zip((headline, "forgetting"), axes):
        for g in groups:
            x, mean, std = _curves(g, key)
            if x.size:
                line = ax.plot(x, mean, marker=".", label=g.label)[0]
                ax.fill_between(x, mean - std, mean + std, alpha=0.2, color=line.get_color())
        for b in _boundaries(groups[0]):
            ax.axvline(b, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xlabel("samples seen")
        ax.set_ylabel(f"average {noun}" if key == headline else "forgetting")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{stream}: mean ± std over seeds; dotted lines: task boundaries", fontsize=10)
    written.append(_save(fig, out / f"accuracy_forgetting_{slug}.png"))
    # per-task accuracy curves, one panel per group
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig = _new_figure(max(6.0, 4.2 * cols), 3.2 * rows)
    for i, g in enumerate(groups):
        ax = fig.add_subplot(rows, cols, i + 1)
        if columns is None:
            n_tasks = max((sum(1 for k in e if k.startswith("acc_task_"))
                           for r in g.runs for e in r.evals), default=0)
            series = [(f"acc_task_{t}", f"task {t + 1}") for t in range(n_tasks)]
        else:  # the stream's eval sets of the headline kind
            series = [(c, c) for c in columns]
        for key, label in series:
            x, mean, _ = _curves(g, key)
            if x.size:
                ax.plot(x, mean, label=label, linewidth=1.2)
        for b in _boundaries(g):
            ax.axvline(b, color="grey", linestyle=":", linewidth=0.8)
        if score_name == "accuracy":
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{g.label} (n={len(g.runs)})", fontsize=9)
        ax.set_xlabel("samples seen")
        ax.set_ylabel(noun)
        if i == 0 and series:
            ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f"{stream}: {noun} on each eval set (dotted: task boundaries)", fontsize=10)
    written.append(_save(fig, out / f"task_accuracy_{slug}.png"))
    return written


def plot_comparison(groups: Sequence[Group], out: Path) -> Path:
    """Final accuracy and forgetting of every group as bars with std error bars, one panel
    per stream."""
    streams = sorted({g.stream for g in groups})
    width = max(5.0, 0.9 * max(sum(g.stream == s for g in groups) for s in streams) + 2.5)
    fig = _new_figure(width, 3.4 * len(streams))
    for i, s in enumerate(streams):
        mine = [g for g in groups if g.stream == s]
        stats = [g.stats() for g in mine]
        ax = fig.add_subplot(len(streams), 1, i + 1)
        x = np.arange(len(mine))
        score_name = mine[0].runs[0].score_name
        headline = ("acc", "accuracy") if score_name == "accuracy" else ("score", score_name.replace("_", " "))
        for j, (m, name) in enumerate((headline, ("forgetting", "forgetting"))):
            means = [st[f"{m}_mean"] for st in stats]
            stds = [0.0 if not math.isfinite(st[f"{m}_std"]) else st[f"{m}_std"] for st in stats]
            ax.bar(x + (j - 0.5) * 0.38, means, 0.38, yerr=stds, capsize=3, label=name)
        ax.set_xticks(x, [g.label for g in mine], rotation=20, ha="right", fontsize=8)
        ax.set_title(s, fontsize=10)
        if score_name == "accuracy":
            ax.set_ylim(min(0.0, ax.get_ylim()[0]), max(1.0, ax.get_ylim()[1]))
        ax.axhline(0, color="black", linewidth=0.6)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, out / "comparison.png")


# ---------------------------------------------------------------------- writing the report
def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _first_line_of_error(error: str) -> str:
    lines = [ln.strip() for ln in error.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def write_report(path: str | os.PathLike, out: str | os.PathLike | None = None,
                 plots: bool = True) -> dict[str, Any]:
    """Find the runs under ``path`` and write report.md, report.csv, report.html and the
    PNGs into ``out`` (default: ``path``, or its folder when it is a file).

    Returns ``{"runs": [...], "groups": [...], "failed": [...], "files": [...]}``.
    Raises ConfigError when ``path`` does not exist or holds no run.
    """
    root = Path(path)
    runs = find_runs(root)
    if not runs:
        raise ConfigError(f"report: no run folder under {str(root)!r} (looked for "
                          f"{', '.join(RUN_MARKERS)} and .hydra/ at any depth)")
    out_dir = Path(out) if out is not None else (root.parent if root.is_file() else root)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    rows = table_rows(groups)
    not_ok = [r for r in runs if r.status != "ok"]
    files: list[Path] = []

    if plots and groups:
        for stream in sorted({g.stream for g in groups}):
            files += plot_stream([g for g in groups if g.stream == stream], out_dir)
        files.append(plot_comparison(groups, out_dir))

    def rel(p: Path) -> str:
        try:
            return os.path.relpath(p, out_dir)
        except ValueError:
            return str(p)

    metrics = metrics_of([r for g in groups for r in g.runs])
    header = ["stream", "strategy", "model", "setting", "n", *metrics]
    shown = [[r["stream"], r["strategy"], r["model"], r["setting"], r["n"],
              *[_fmt(r[f"{m}_mean"], r[f"{m}_std"], m) for m in metrics]] for r in rows]
    run_header = ["run", "stream", "strategy", "seed", "acc", "forgetting", "status"]
    run_rows = [[rel(r.path), r.stream, r.strategy, r.summary.get("seed", ""),
                 _fmt(_number(r.summary.get("acc")), float("nan"), "acc"),
                 _fmt(_number(r.summary.get("forgetting")), float("nan"), "forgetting"), r.status]
                for r in runs if r.status == "ok"]
    bad_header = ["run", "status", "error"]
    bad_rows = [[rel(r.path), r.status, _first_line_of_error(r.error) or "no summary.json "
                 "(still running, killed, or timed out)"] for r in not_ok]
    pngs = [p for p in files if p.suffix == ".png"]

    # report.csv: full precision, empty cells for NaN
    csv_path = out_dir / "report.csv"
    columns = ["stream", "strategy", "model", "setting", "n"] + [f"{m}_{s}" for m in metrics
                                                                 for s in ("mean", "std")]
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow(["" if isinstance(r[c], float) and not math.isfinite(r[c]) else r[c]
                        for c in columns])
    # report.md
    title = f"continual report: {root}"
    intro = (f"{len(runs)} run folder(s): {len(runs) - len(not_ok)} finished in {len(groups)} "
             f"group(s), {sum(r.status == 'failed' for r in not_ok)} failed, "
             f"{sum(r.status == 'incomplete' for r in not_ok)} without results. "
             "Cells: mean ± sample std over the group's runs (seeds).")
    md = [f"# {title}", "", intro, "", _md_table(header, shown), ""]
    if not_ok:
        md += ["## Failed or unfinished runs", "", _md_table(bad_header, bad_rows), ""]
    md += ["## Runs", "", _md_table(run_header, run_rows), ""]
    if pngs:
        md += ["## Plots", ""] + [f"![{p.stem}]({rel(p)})" for p in pngs] + [""]
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(md))
    # report.html
    errors_html = "".join(
        f"<details><summary>{html.escape(rel(r.path))}: "
        f"{html.escape(_first_line_of_error(r.error))}</summary>"
        f"<pre>{html.escape(r.error)}</pre></details>" for r in not_ok if r.error)
    page = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}th{background:#f3f3f3}img{max-width:100%;display:block;margin:1em 0}"
        "pre{background:#f6f6f6;padding:1em;overflow:auto}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>", _html_table(header, shown),
    ]
    if not_ok:
        page += ["<h2>Failed or unfinished runs</h2>", _html_table(bad_header, bad_rows),
                 errors_html]
    page += ["<h2>Runs</h2>", _html_table(run_header, run_rows)]
    if pngs:
        page += ["<h2>Plots</h2>"]
        page += [f"<img src='{html.escape(rel(p))}' alt='{html.escape(p.stem)}'>" for p in pngs]
    page.append("</body></html>")
    html_path = out_dir / "report.html"
    html_path.write_text("\n".join(page))
    files = [md_path, csv_path, html_path, *files]
    return {"runs": runs, "groups": groups, "failed": not_ok, "files": files,
            "table": rows, "markdown": "\n".join(md)}


def write_run_report(run_dir: str | os.PathLike) -> Path | None:
    """Write one run's own report into its folder (called at the end of every run).

    Never raises: a failure warns and returns None (the run's records are already safe).
    Returns the path of report.html.
    """
    try:
        result = write_report(run_dir, out=run_dir)
        return next(p for p in result["files"] if p.name == "report.html")
    except Exception as e:
        warnings.warn(f"could not write the report of {run_dir}: {type(e).__name__}: {e}; "
                      f"run `continual report {run_dir}` to retry", RuntimeWarning, stacklevel=2)
        return None


def main(argv: Sequence[str] | None = None) -> None:
    """``continual report PATH [--out DIR] [--no-plots]``."""
    parser = argparse.ArgumentParser(
        prog="continual report",
        description="Tables (mean ± std over seeds) and plots of a run folder or a whole "
                    "multirun folder.")
    parser.add_argument("path", help="a run folder, or a multirun folder (searched at any depth)")
    parser.add_argument("--out", default=None, help="where to write the report (default: PATH)")
    parser.add_argument("--no-plots", action="store_true", help="write the tables only")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        result = write_report(args.path, out=args.out, plots=not args.no_plots)
    except ConfigError as e:
        print(f"continual: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    buf = io.StringIO()
    buf.write(result["markdown"].split("\n## Runs")[0].rstrip() + "\n\n")
    for p in result["files"]:
        buf.write(f"wrote {p}\n")
    sys.stdout.write(buf.getvalue())
