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

How cells look (``-``, percent, bold) is ``continual.report_format``. A run writes its own
report at its end (``write_run_report``).
"""

from __future__ import annotations

import argparse
import base64
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
from continual.report_format import (
    format_number,
    html_table,
    is_fraction,
    latex_table,
    mark_best,
    markdown_table,
    metric_cell,
    number,
)
from continual.report_hparams import describe, find_search, trial_rows
from continual.report_plots import (
    FIGURE_FORMATS,
    FigureWriter,
    plot_comparison,
    plot_stream,
)
from continual.types import ConfigError

#: the table's columns, in order (each as mean and std over the group's runs)
METRICS = ("acc", "acc_task_il", "forgetting", "bwt", "fwt", "online_acc", "aia", "stability_gap",
           "samples_per_second")
#: columns added when some run reports them: the headline score of streams not scored by
#: accuracy (language models), CKL's IL / UL / NL / FUAR, continual pre-training's losses, and
#: the validation split's accuracy and forgetting (stream.val_fraction)
EXTRA_METRICS = ("score", "IL", "UL", "NL", "FUAR", "final_avg_loss", "avg_forgetting", "val_acc",
                 "val_forgetting")


def metrics_of(runs: Sequence[Any]) -> tuple[str, ...]:
    """The table's columns for these runs: METRICS, then each extra one some run reports."""
    extra = [m for m in EXTRA_METRICS if any(math.isfinite(number(r.summary.get(m))) for r in runs)]
    if any(r.summary.get("acc") is None and r.summary.get("score") is not None for r in runs):
        return (*extra, *(m for m in METRICS if m not in ("acc", "acc_task_il", "online_acc")))
    return (*METRICS, *(m for m in extra if m != "score"))
RUN_MARKERS = ("summary.json", "metrics.jsonl", "scores.csv", "error.txt")
#: folders inside a run that are never runs themselves
NOT_RUNS = {"wandb", "tensorboard", "checkpoints", "__pycache__"}
#: config keys that never split a group: seeds, logging, checkpointing, the device
IGNORED_KEYS = re.compile(r"^(seed|device|threads|loggers|resume|on_nan)$|^(log|loggers|checkpoint)\.|(^|\.)seed$")


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
        for m in (*METRICS, *EXTRA_METRICS):
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
