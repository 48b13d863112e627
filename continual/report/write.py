"""``write_report``: find the runs, draw the figures, build the tables once and hand them to
each format's writer; ``write_run_report``: the same for one run, at its end, never raising."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from continual.report.csv_writer import write_csv, write_hparams_csv
from continual.report.figures import FIGURE_FORMATS, FigureWriter, draw_figures
from continual.report.html_page import write_html
from continual.report.latex import write_latex
from continual.report.markdown import write_markdown
from continual.report.runs import RUN_MARKERS, find_runs, group_runs, table_rows
from continual.report.table import build_tables
from continual.types import ConfigError


def write_report(path: str | os.PathLike, out: str | os.PathLike | None = None,
                 plots: bool = True, percent: bool = False, figures: str = "png",
                 metrics: Sequence[str] | None = None, objective: str | None = None) -> dict[str, Any]:
    """Find the runs under ``path`` and write report.md, report.csv, report.html, report.tex
    and the figures into ``out`` (default: ``path``, or its folder when it is a file).

    percent: accuracy-like metrics as percentages (one decimal) in md, html and tex (the CSV
    keeps fractions at full precision). figures: ``png``, ``svg`` or ``pdf``. metrics: the
    table's columns (default: every metric some run reports). objective: write the
    hyper-parameter search table for any sweep, ranked by this summary key (an Optuna sweep
    gets it anyway, ranked by the objective its jobs returned).

    Returns ``{"runs", "groups", "failed", "files", "table", "markdown", "search"}``.
    Raises ConfigError when ``path`` does not exist or holds no run.
    """
    root = Path(path)
    runs = find_runs(root)
    if not runs:
        raise ConfigError(f"report: no run folder under {str(root)!r} (looked for "
                          f"{', '.join(RUN_MARKERS)} and .hydra/ at any depth)")
    if figures not in FIGURE_FORMATS:
        raise ConfigError(f"report: figures={figures!r}; use one of {', '.join(FIGURE_FORMATS)}")
    out_dir = Path(out) if out is not None else (root.parent if root.is_file() else root)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    rows = table_rows(groups)
    drawn = FigureWriter(out_dir, figures)
    figure_files = draw_figures(groups, drawn) if plots else []
    tables = build_tables(root, out_dir, runs, groups, rows, percent=percent, metrics=metrics,
                          objective=objective, figures=figure_files, embedded=drawn.embedded)
    written = [write_csv(tables), write_latex(tables)]
    hparams = write_hparams_csv(tables)
    written += [hparams] if hparams is not None else []
    md_path, markdown = write_markdown(tables)
    html_path = write_html(tables)
    return {"runs": runs, "groups": groups, "failed": tables.not_ok,
            "files": [md_path, html_path, *written, *figure_files],
            "table": rows, "markdown": markdown, "search": tables.search}


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
