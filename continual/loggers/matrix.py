"""The run's accuracy matrix for the loggers: read once from ``scores.csv``, drawn as a heatmap.

The loggers show the matrix once, at the end of a run (or when it fails), rather than a growing
copy at every eval point: per-task curves already carry each eval point (``eval/acc_task_<t>``).
The heatmap is drawn with matplotlib directly (no pyplot state, no import of the report code).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

#: the bookkeeping columns of scores.csv; the rest are one score per task (or eval set)
LEADING = ("step", "samples_seen", "kind")


def read_scores(out_dir: str | Path) -> tuple[list[str], list[list[Any]]]:
    """``scores.csv`` of a run folder as (header, rows): step and samples_seen as ints, kind
    as text, scores as floats (NaN where a task was not scored). ([], []) when there is none."""
    path = Path(out_dir) / "scores.csv"
    if not path.is_file():
        return [], []
    with open(path, newline="") as fh:
        lines = [row for row in csv.reader(fh) if row]
    if not lines:
        return [], []
    header, rows = lines[0], []
    for line in lines[1:]:
        if len(line) != len(header):  # a line cut short by a crash
            continue
        rows.append([int(line[0]), int(line[1]), line[2], *(_number(v) for v in line[3:])])
    return header, rows


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def heatmap_rows(rows: list[list[Any]]) -> tuple[list[str], np.ndarray]:
    """The rows worth a picture: the untrained model, each task end, and the final eval point
    when it is none of those. Returns (row labels, (n_rows, n_tasks) scores)."""
    chosen = [i for i, r in enumerate(rows) if r[2] in ("init", "task_end")]
    if rows and (not chosen or chosen[-1] != len(rows) - 1):
        chosen.append(len(rows) - 1)
    labels, ends = [], 0
    for i in chosen:
        kind = rows[i][2]
        ends += kind == "task_end"
        labels.append("init" if kind == "init" else f"after task {ends}" if kind == "task_end"
                      else f"final ({rows[i][1]} samples)")
    return labels, np.array([rows[i][3:] for i in chosen], dtype=float).reshape(len(chosen), -1)


def heatmap_image(columns: list[str], labels: list[str], matrix: np.ndarray,
                  title: str = "accuracy matrix") -> np.ndarray:
    """The matrix as an (H, W, 3) uint8 image: one cell per eval point (rows) and task
    (columns), the score written in each cell, NaN cells blank."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_rows, n_cols = matrix.shape
    width, height = 2.4 + 0.55 * n_cols, 1.3 + 0.3 * min(n_rows, 40)
    fig = Figure(figsize=(width, height), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((1.3 / width, 0.8 / height, 1 - 2.1 / width, 1 - 1.2 / height))
    finite = matrix[np.isfinite(matrix)]
    unit = finite.size == 0 or (finite.min() >= 0 and finite.max() <= 1)
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", aspect="auto",
                      vmin=0.0 if unit else None, vmax=1.0 if unit else None)
    ax.set_xticks(range(n_cols), [c.removeprefix("task_") for c in columns], fontsize=7)
    ax.set_yticks(range(n_rows), labels, fontsize=7)
    ax.set_xlabel("task" if all(c.startswith("task_") for c in columns) else "eval set", fontsize=8)
    ax.set_title(title, fontsize=9)
    if n_rows * n_cols <= 400:
        for (i, j), value in np.ndenumerate(matrix):
            if math.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if unit and value > 0.6 else "white")
    fig.colorbar(image, cax=fig.add_axes((1 - 0.7 / width, 0.8 / height, 0.12 / width, 1 - 1.2 / height)))
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def matrix_image(header: list[str], rows: list[list[Any]]) -> np.ndarray | None:
    """The heatmap of a run's scores.csv (``read_scores``), or None when it has no rows."""
    if not rows:
        return None
    labels, matrix = heatmap_rows(rows)
    return heatmap_image(header[len(LEADING):], labels, matrix)
