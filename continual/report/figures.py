"""The report's figures: accuracy matrices, average curves, per-task curves with seed bands,
and the final comparison, saved as PNG, SVG or PDF.

Plots use matplotlib's object API with the Agg canvas, so no global backend is switched and
no display is needed. Each saved figure is also kept as PNG or SVG bytes (``FigureWriter.embedded``)
so the HTML report can carry it inline.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from continual.report.format import number

if TYPE_CHECKING:
    from continual.report.runs import Group, RunData

#: the figure formats ``continual report --figures`` accepts
FIGURE_FORMATS = ("png", "svg", "pdf")
#: the per-task keys of an eval record
TASK_KEY = re.compile(r"acc_task_\d+")


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


@dataclass
class FigureWriter:
    """Saves the report's figures into ``out`` as ``fmt`` (png, svg or pdf) and keeps each one
    as inline-able bytes for the HTML page: the file itself for PNG and SVG, a PNG rendering
    for PDF (browsers do not show a PDF in an ``<img>``)."""

    out: Path
    fmt: str = "png"
    embedded: dict[Path, tuple[str, bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.fmt not in FIGURE_FORMATS:
            raise ValueError(f"figure format {self.fmt!r} is not one of {', '.join(FIGURE_FORMATS)}")

    def save(self, fig: Any, stem: str) -> Path:
        path = self.out / f"{stem}.{self.fmt}"
        # no creation date in SVG and PDF files, so the same runs give the same bytes
        metadata = {"Date": None} if self.fmt == "svg" else {"CreationDate": None} if self.fmt == "pdf" else None
        fig.savefig(path, format=self.fmt, metadata=metadata)
        if self.fmt == "pdf":
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            self.embedded[path] = ("image/png", buf.getvalue())
        else:
            self.embedded[path] = ("image/svg+xml" if self.fmt == "svg" else "image/png", path.read_bytes())
        return path


def is_dense(group: Group) -> bool:
    """Whether the group's runs were evaluated periodically (``eval.every``): then curves are
    lines; otherwise the eval points are only the untrained model and the task ends, and a line
    between them would draw a ramp that was never measured, so they are drawn as points."""
    return any(e.get("kind") == "periodic" for r in group.runs for e in r.evals)


def draw_series(ax: Any, x: np.ndarray, mean: np.ndarray, std: np.ndarray, dense: bool,
                secondary: bool = False, **style: Any) -> Any:
    """One mean curve with its seed spread: a line with a shaded ± std band when the eval
    points are dense, else points with ± std error bars and no connecting line. ``secondary``:
    a dashed line (crosses when sparse), e.g. an infinite schedule's main trajectory."""
    if dense:
        line = ax.plot(x, mean, marker=".", markersize=3, linewidth=1.2, linestyle="--" if secondary else "-",
                       **style)[0]
        ax.fill_between(x, mean - std, mean + std, alpha=0.2, color=line.get_color(), linewidth=0)
        return line
    bars = ax.errorbar(x, mean, yerr=std, fmt="x" if secondary else "o", markersize=4, capsize=2,
                       linestyle="none", **style)
    return bars.lines[0]


def _color_of(line: Any) -> Any:
    return line.get_color() if line is not None else None


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


#: an infinite schedule's task ends are scored twice: the annealed copy (``task_end``, what one
#: would deploy) and the main trajectory that goes on (``task_end_main``); each is a line of its own
MAIN_KIND = "task_end_main"


def x_key(group: Group) -> str:
    """The x-axis of a group's curves: tokens seen for language-model runs, else samples seen."""
    return "tokens_seen" if any("tokens_seen" in e for r in group.runs for e in r.evals) else "samples_seen"


def has_main_trajectory(group: Group) -> bool:
    return any(e.get("kind") == MAIN_KIND for r in group.runs for e in r.evals)


def _curves(group: Group, key: str, main: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x = samples (or tokens) seen at the eval points of the group's first run; mean and std
    of ``key`` over the runs (each interpolated onto that x when their eval points differ).
    ``main``: the main trajectory's line (its task-end rows instead of the annealed copy's)."""
    series = []
    x_name = x_key(group)
    skip = "task_end" if main else MAIN_KIND
    for run in group.runs:
        evals = [e for e in run.evals if e.get("kind") != skip]
        xs = np.array([e.get(x_name, 0) for e in evals], dtype=float)
        ys = np.array([number(e.get(key)) for e in evals], dtype=float)
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
        counts = np.isfinite(stack).sum(axis=0)
        # the sample std (n-1), as in the tables; no spread where only one seed has a value
        std = np.where(counts > 1, np.nanstd(stack, axis=0, ddof=0) * np.sqrt(counts / np.maximum(counts - 1, 1)), 0.0)
    return x0, mean, std


def _boundaries(group: Group) -> list[int]:
    """Samples (or tokens) seen at the task ends of the group's first run (the last one left out)."""
    evals = group.runs[0].evals
    x_name = x_key(group)
    ends = [int(e.get(x_name, 0)) for e in evals if e.get("kind") == "task_end"]
    return ends[:-1]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "stream"


def _eval_set_columns(groups: Sequence[Group]) -> list[str] | None:
    """None for accuracy-scored streams (columns are tasks); else the stream's eval sets scored
    like the headline (CKL: not its held-out loss), the runs' matrices cut to those columns."""
    first = groups[0].runs[0]
    score_name = first.score_name
    columns = None if score_name == "accuracy" else first.columns
    if columns is not None:
        kind = {s["name"]: s["score"] for s in first.summary.get("eval_sets", [])}
        keep = [i for i, c in enumerate(columns) if kind.get(c, score_name) == score_name]
        columns = [columns[i] for i in keep]
        for g in groups:
            for r in g.runs:
                if r.matrix.size and r.matrix.shape[1] == len(first.columns):
                    r.matrix = r.matrix[:, keep]
    return columns


def _plot_matrices(groups: Sequence[Group], out: FigureWriter, columns: list[str] | None,
                   noun: str) -> Path | None:
    """Accuracy matrices: one panel per group; None when no run has a scores matrix."""
    score_name = groups[0].runs[0].score_name
    with_matrix = [(g, *_mean_matrix(g)) for g in groups]
    with_matrix = [(g, m, lab) for g, m, lab in with_matrix if m.size]
    if not with_matrix:
        return None
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
    fig.suptitle(f"{groups[0].stream}: {noun} after each task", fontsize=10)
    return out.save(fig, f"accuracy_matrix_{_slug(groups[0].stream)}")


def _plot_average(groups: Sequence[Group], out: FigureWriter, headline: str, noun: str) -> Path:
    """Average accuracy (or the headline score) and forgetting against samples seen."""
    fig = _new_figure(10, 3.6)
    axes = [fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)]
    for key, ax in zip((headline, "forgetting"), axes):
        for g in groups:
            x, mean, std = _curves(g, key)
            if x.size:
                line = draw_series(ax, x, mean, std, is_dense(g), label=g.label)
            if x.size and has_main_trajectory(g):
                x, mean, std = _curves(g, key, main=True)
                draw_series(ax, x, mean, std, is_dense(g), secondary=True, color=_color_of(line),
                            label=f"{g.label} (main trajectory, not annealed)")
        for b in _boundaries(groups[0]):
            ax.axvline(b, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xlabel(x_key(groups[0]).replace("_", " "))
        ax.set_ylabel(f"average {noun}" if key == headline else "forgetting")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{groups[0].stream}: mean ± std over seeds; dotted lines: task boundaries", fontsize=10)
    return out.save(fig, f"accuracy_forgetting_{_slug(groups[0].stream)}")


def _plot_tasks(groups: Sequence[Group], out: FigureWriter, columns: list[str] | None, noun: str) -> Path:
    """Per-task accuracy curves (or each eval set's score), one panel per group."""
    score_name = groups[0].runs[0].score_name
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig = _new_figure(max(6.0, 4.2 * cols), 3.2 * rows)
    for i, g in enumerate(groups):
        ax = fig.add_subplot(rows, cols, i + 1)
        if columns is None:  # acc_task_0, acc_task_1, ... (not acc_task_il)
            n_tasks = max((sum(1 for k in e if TASK_KEY.fullmatch(k)) for r in g.runs for e in r.evals), default=0)
            series = [(f"acc_task_{t}", f"task {t + 1}") for t in range(n_tasks)]
        else:  # the stream's eval sets of the headline kind
            series = [(c, c) for c in columns]
        dense = is_dense(g)
        for key, label in series:
            x, mean, std = _curves(g, key)
            if x.size:
                line = draw_series(ax, x, mean, std, dense, label=label)
            if x.size and has_main_trajectory(g):
                x, mean, std = _curves(g, key, main=True)
                draw_series(ax, x, mean, std, dense, secondary=True, color=_color_of(line), label=f"{label} (main)")
        for b in _boundaries(g):
            ax.axvline(b, color="grey", linestyle=":", linewidth=0.8)
        if score_name == "accuracy":
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{g.label} (n={len(g.runs)})", fontsize=9)
        ax.set_xlabel(x_key(g).replace("_", " "))
        ax.set_ylabel(noun)
        if i == 0 and series:
            ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f"{groups[0].stream}: {noun} on each eval set, mean ± std over seeds (dotted: task boundaries)",
                 fontsize=10)
    return out.save(fig, f"task_accuracy_{_slug(groups[0].stream)}")


def plot_stream(groups: Sequence[Group], out: FigureWriter) -> list[Path]:
    """The three per-stream figures for ``groups`` (all of one stream); returns their paths."""
    score_name = groups[0].runs[0].score_name
    headline = "acc" if score_name == "accuracy" else "score"
    columns = _eval_set_columns(groups)
    noun = "accuracy" if score_name == "accuracy" else score_name.replace("_", " ")
    matrices = _plot_matrices(groups, out, columns, noun)
    return [*([matrices] if matrices is not None else []), _plot_average(groups, out, headline, noun),
            _plot_tasks(groups, out, columns, noun)]


def plot_comparison(groups: Sequence[Group], out: FigureWriter) -> Path:
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
    return out.save(fig, "comparison")


def draw_figures(groups: Sequence[Group], out: FigureWriter) -> list[Path]:
    """Every figure of the report: each stream's three, then the comparison; their paths."""
    if not groups:
        return []
    files: list[Path] = []
    for stream in sorted({g.stream for g in groups}):
        files += plot_stream([g for g in groups if g.stream == stream], out)
    files.append(plot_comparison(groups, out))
    return files
