"""Reports of one run or a whole sweep: a table of mean +- std over seeds, and figures.

``continual report PATH [--out DIR]`` finds every run folder under PATH (any depth: a
folder with ``summary.json``, ``metrics.jsonl`` or ``scores.csv``, or a Hydra job folder
``.hydra/``), groups finished runs by stream x strategy x model (and by any other config
value that differs between them, except the seed), and writes into DIR (default PATH):

- ``report.md``, ``report.html``: the table (acc, acc_task_il, forgetting, bwt, fwt,
  online_acc, aia, stability_gap, samples_per_second as mean +- sample std over seeds, and
  n runs; the best mean of each stream in bold), every run, the failed or unfinished runs
  with their error, and the figures (the HTML page carries them inline: one file to send);
- ``report.tex``: the table for a paper (booktabs), ``report.csv``: at full precision;
- ``hparams.csv`` and a section of the report for a hyper-parameter search (an Optuna sweep):
  every trial sorted by its objective, the best marked (``continual.report_hparams``);
- figures (PNG, SVG or PDF), one set per stream: the accuracy matrix, average accuracy and
  forgetting, each task's accuracy against samples seen, and ``comparison``
  (``continual.report_plots``).

Which folders are runs, what each holds and how runs form groups (``RunData``, ``Group``,
``find_runs``, ``group_runs``) is ``continual.report_runs``; how cells look (``-``, percent,
bold) is ``continual.report_format``. A run writes its own report at its end
(``write_run_report``).
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import math
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from continual.report_format import (
    format_number,
    html_table,
    is_fraction,
    latex_table,
    mark_best,
    markdown_table,
    metric_cell,
)
from continual.report_hparams import describe, find_search, trial_rows
from continual.report_plots import (
    FIGURE_FORMATS,
    FigureWriter,
    plot_comparison,
    plot_stream,
)
from continual.report_runs import (
    EXTRA_METRICS,
    METRICS,
    RUN_MARKERS,
    Group,
    RunData,  # re-exported: write_report's "runs" and "failed" are RunData (docs/reports.md)
    find_runs,
    group_runs,
    metric_value,
    metrics_of,
    table_rows,
)
from continual.types import ConfigError

__all__ = ["RunData", "main", "write_report", "write_run_report"]


# ---------------------------------------------------------------------- writing the report
def _first_line_of_error(error: str) -> str:
    lines = [ln.strip() for ln in error.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _choose_metrics(available: Sequence[str], wanted: Sequence[str] | None) -> tuple[str, ...]:
    if not wanted:
        return tuple(available)
    known = (*METRICS, *EXTRA_METRICS)
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise ConfigError(f"report: unknown metric(s) {', '.join(unknown)} in --metrics; "
                          f"choose from {', '.join(known)}")
    return tuple(wanted)


def _column_name(metric: str, percent: bool, score_name: str) -> str:
    return f"{metric} (%)" if percent and is_fraction(metric, score_name) else metric


def _stream_blocks(groups: Sequence[Group]) -> list[list[int]]:
    """The row indices of each stream (groups are sorted by stream, so each is contiguous)."""
    blocks: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        blocks.setdefault(g.stream, []).append(i)
    return list(blocks.values())


def _latex(groups: Sequence[Group], rows: Sequence[dict[str, Any]], metrics: Sequence[str], percent: bool,
           score_name: str, blocks: list[list[int]]) -> str:
    """report.tex: one booktabs table, a block per stream, the best mean of each stream bold."""
    several_models = len({g.model for g in groups}) > 1
    header = ["stream", "method", *(["model"] if several_models else []),
              *[_column_name(m, percent, score_name) for m in metrics]]
    cells = [[g.stream, g.label, *([g.model] if several_models else []),
              *[metric_cell(r[f"{m}_mean"], r[f"{m}_std"], m, percent, g.runs[0].score_name) for m in metrics]]
             for g, r in zip(groups, rows)]
    mark_best(cells, blocks)
    seeds = sorted({len(g.runs) for g in groups})
    caption = (f"Mean ± sample std over each row's runs (n = {', '.join(map(str, seeds))}); best of each "
               f"stream in bold; - = not measured or undefined.")
    text = latex_table(header, cells, blocks, caption, n_text_columns=3 if several_models else 2)
    return text.replace("Mean ± sample std", "Mean $\\pm$ sample std")


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
    not_ok = [r for r in runs if r.status != "ok"]
    writer = FigureWriter(out_dir, figures)
    files: list[Path] = []

    if plots and groups:
        for stream in sorted({g.stream for g in groups}):
            files += plot_stream([g for g in groups if g.stream == stream], writer)
        files.append(plot_comparison(groups, writer))

    def rel(p: Path) -> str:
        try:
            return os.path.relpath(p, out_dir)
        except ValueError:
            return str(p)

    metrics = _choose_metrics(metrics_of([r for g in groups for r in g.runs]), metrics)
    score_name = groups[0].runs[0].score_name if groups else "accuracy"
    blocks = _stream_blocks(groups)
    header = ["stream", "strategy", "model", "setting", "n", *[_column_name(m, percent, score_name) for m in metrics]]
    shown = [[r["stream"], r["strategy"], r["model"], r["setting"], r["n"],
              *[metric_cell(r[f"{m}_mean"], r[f"{m}_std"], m, percent, g.runs[0].score_name) for m in metrics]]
             for g, r in zip(groups, rows)]
    mark_best(shown, blocks)
    run_header = ["run", "stream", "strategy", "seed", _column_name("acc", percent, score_name),
                  _column_name("forgetting", percent, score_name), "status"]
    run_rows = [[rel(r.path), r.stream, r.strategy, r.summary.get("seed", ""),
                 format_number(metric_value(r, "acc"), "acc", percent),
                 format_number(metric_value(r, "forgetting"), "forgetting", percent), r.status]
                for r in runs if r.status == "ok"]
    bad_header = ["run", "status", "error"]
    bad_rows = [[rel(r.path), r.status, _first_line_of_error(r.error) or "no summary.json "
                 "(still running, killed, or timed out)"] for r in not_ok]
    search = find_search(root, runs, objective)

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
    tex_path = out_dir / "report.tex"
    tex_path.write_text(_latex(groups, rows, metrics, percent, score_name, blocks))
    written = [csv_path, tex_path]
    search_md: list[str] = []
    search_html: list[str] = []
    if search is not None:
        trial_header, trials, plain = trial_rows(search, runs, percent, rel)
        hp_path = out_dir / "hparams.csv"
        with open(hp_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["trial", "best", search.objective, *search.params, "status", "run"])
            w.writeheader()
            w.writerows(plain)
        written.append(hp_path)
        what = describe(search, len(trials))
        search_md = ["## Hyper-parameter search", "", what, "", markdown_table(trial_header, trials), ""]
        search_html = ["<h2>Hyper-parameter search</h2>", f"<p>{html.escape(what)}</p>",
                       html_table(trial_header, trials)]
    # report.md
    title = f"continual report: {root}"
    intro = (f"{len(runs)} run folder(s): {len(runs) - len(not_ok)} finished in {len(groups)} "
             f"group(s), {sum(r.status == 'failed' for r in not_ok)} failed, "
             f"{sum(r.status == 'incomplete' for r in not_ok)} without results. "
             "Cells: mean ± sample std over the group's runs (seeds); the best mean of each stream "
             "in bold (lower is better for forgetting, stability gap and losses); - = not measured "
             "or undefined (fwt on class-incremental streams, stability_gap without eval.every).")
    md = [f"# {title}", "", intro, "", markdown_table(header, shown), "", *search_md]
    if not_ok:
        md += ["## Failed or unfinished runs", "", markdown_table(bad_header, bad_rows), ""]
    md += ["## Runs", "", markdown_table(run_header, run_rows), ""]
    if files:
        md += ["## Plots", ""] + [(f"![{p.stem}]({rel(p)})" if p.suffix != ".pdf" else f"[{p.stem}]({rel(p)})")
                                  for p in files] + [""]
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(md))
    # report.html: one self-contained file (figures inline as base64)
    errors_html = "".join(
        f"<details><summary>{html.escape(rel(r.path))}: "
        f"{html.escape(_first_line_of_error(r.error))}</summary>"
        f"<pre>{html.escape(r.error)}</pre></details>" for r in not_ok if r.error)
    page = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:2em}}"
        ".scroll{overflow-x:auto}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}"
        "th{background:#f3f3f3}td.best{background:#eef6ee}img{max-width:100%;display:block;margin:1em 0}"
        "pre{background:#f6f6f6;padding:1em;overflow:auto}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>", html_table(header, shown), *search_html,
    ]
    if not_ok:
        page += ["<h2>Failed or unfinished runs</h2>", html_table(bad_header, bad_rows), errors_html]
    page += ["<h2>Runs</h2>", html_table(run_header, run_rows)]
    if files:
        page += ["<h2>Plots</h2>"]
        for p in files:
            mime, data = writer.embedded[p]
            page.append(f"<img src='data:{mime};base64,{base64.b64encode(data).decode('ascii')}' "
                        f"alt='{html.escape(p.stem)}' title='{html.escape(rel(p))}'>")
    page.append("</body></html>")
    html_path = out_dir / "report.html"
    html_path.write_text("\n".join(page))
    files = [md_path, html_path, *written, *files]
    return {"runs": runs, "groups": groups, "failed": not_ok, "files": files,
            "table": rows, "markdown": "\n".join(md), "search": search}


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
    """``continual report PATH [--out DIR] [--no-plots] [--percent] [--figures FMT]
    [--metrics M,...] [--objective KEY]``."""
    parser = argparse.ArgumentParser(
        prog="continual report",
        description="Tables (mean ± std over seeds; Markdown, HTML, CSV, LaTeX) and figures of a run "
                    "folder or a whole multirun folder.")
    parser.add_argument("path", help="a run folder, or a multirun folder (searched at any depth)")
    parser.add_argument("--out", default=None, help="where to write the report (default: PATH)")
    parser.add_argument("--no-plots", action="store_true", help="write the tables only")
    parser.add_argument("--percent", action="store_true",
                        help="accuracy-like metrics in percent, one decimal (report.csv keeps fractions)")
    parser.add_argument("--figures", default="png", choices=FIGURE_FORMATS,
                        help="the figures' file format (default png; the HTML page embeds them either way)")
    parser.add_argument("--metrics", default=None,
                        help="the table's columns, comma-separated (default: every metric some run reports)")
    parser.add_argument("--objective", default=None,
                        help="add the hyper-parameter search table for any sweep, trials ranked by this "
                             "summary key (an Optuna sweep gets it by default, ranked by its jobs' objective)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    try:
        result = write_report(args.path, out=args.out, plots=not args.no_plots, percent=args.percent,
                              figures=args.figures, metrics=metrics, objective=args.objective)
    except ConfigError as e:
        print(f"continual: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    buf = io.StringIO()
    buf.write(result["markdown"].split("\n## Runs")[0].rstrip() + "\n\n")
    for p in result["files"]:
        buf.write(f"wrote {p}\n")
    sys.stdout.write(buf.getvalue())
