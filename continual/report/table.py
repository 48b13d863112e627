"""The report's content, computed once for every writer: the main table (mean ± std of each
metric per group, the best mean of each stream marked), the table of every run, the failed or
unfinished runs, and the hyper-parameter search's trials (``Tables``, ``build_tables``).

Cells are display cells (``continual.report.format``); ``rows`` keeps every value at full
precision for report.csv. Each writer (``csv_writer``, ``markdown``, ``html_page``, ``latex``)
only lays these out in its own format.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from continual import metric_table
from continual.report.format import format_number, is_fraction, mark_best, metric_cell
from continual.report.hparams import Search, describe, find_search, trial_rows
from continual.report.runs import Group, RunData, metric_value, metrics_of
from continual.types import ConfigError


def first_line_of_error(error: str) -> str:
    lines = [ln.strip() for ln in error.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def choose_metrics(available: Sequence[str], wanted: Sequence[str] | None) -> tuple[str, ...]:
    """The table's columns: ``wanted`` (each checked), else every metric some run reports."""
    if not wanted:
        return tuple(available)
    known = (*metric_table.report_metrics(), *metric_table.extra_metrics())
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise ConfigError(f"report: unknown metric(s) {', '.join(unknown)} in --metrics; "
                          f"choose from {', '.join(known)}")
    return tuple(wanted)


def column_name(metric: str, percent: bool, score_name: str) -> str:
    """A column's header: the metric, labelled by the score's kind where it is not accuracy
    (``score (loss)``, ``score (exact match)``), with ``(%)`` when shown in percent."""
    if metric == "score" and score_name != "accuracy":
        return f"score ({score_name.replace('_', ' ')})"
    return f"{metric} (%)" if percent and is_fraction(metric, score_name) else metric


def stream_blocks(groups: Sequence[Group]) -> list[list[int]]:
    """The row indices of each stream (groups are sorted by stream, so each is contiguous)."""
    blocks: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        blocks.setdefault(g.stream, []).append(i)
    return list(blocks.values())


@dataclass
class Tables:
    """Everything a report file shows. ``rows``: one dict per group at full precision
    (``table_rows``); ``header``/``shown``: the same as display cells; ``figures``: the figure
    files written, ``embedded``: their inline-able bytes (``FigureWriter.embedded``)."""

    root: Path
    out_dir: Path
    runs: list[RunData]
    groups: list[Group]
    rows: list[dict[str, Any]]
    metrics: tuple[str, ...]
    percent: bool
    score_name: str
    blocks: list[list[int]]
    header: list[str] = field(default_factory=list)
    shown: list[list[Any]] = field(default_factory=list)
    run_header: list[str] = field(default_factory=list)
    run_rows: list[list[Any]] = field(default_factory=list)
    bad_header: list[str] = field(default_factory=list)
    bad_rows: list[list[Any]] = field(default_factory=list)
    search: Search | None = None
    trial_header: list[str] = field(default_factory=list)
    trials: list[list[Any]] = field(default_factory=list)
    trial_plain: list[dict[str, Any]] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    embedded: dict[Path, tuple[str, bytes]] = field(default_factory=dict)

    @property
    def not_ok(self) -> list[RunData]:
        """The failed or unfinished runs."""
        return [r for r in self.runs if r.status != "ok"]

    @property
    def title(self) -> str:
        return f"continual report: {self.root}"

    @property
    def intro(self) -> str:
        not_ok = self.not_ok
        return (f"{len(self.runs)} run folder(s): {len(self.runs) - len(not_ok)} finished in {len(self.groups)} "
                f"group(s), {sum(r.status == 'failed' for r in not_ok)} failed, "
                f"{sum(r.status == 'incomplete' for r in not_ok)} without results. "
                "Cells: mean ± sample std over the group's runs (seeds); the best mean of each stream "
                "in bold (lower is better for forgetting, stability gap and losses); - = not measured "
                "or undefined (fwt on class-incremental streams, stability_gap without eval.every).")

    @property
    def search_text(self) -> str:
        """One sentence on the search (empty without one)."""
        return describe(self.search, len(self.trials)) if self.search is not None else ""

    def rel(self, p: Path) -> str:
        """``p`` relative to the report's folder (as the report's links and run names show it)."""
        try:
            return os.path.relpath(p, self.out_dir)
        except ValueError:
            return str(p)


def _fill_main_table(t: Tables) -> None:
    t.header = ["stream", "strategy", "model", "setting", "n",
                *[column_name(m, t.percent, t.score_name) for m in t.metrics]]
    t.shown = [[r["stream"], r["strategy"], r["model"], r["setting"], r["n"],
                *[metric_cell(r[f"{m}_mean"], r[f"{m}_std"], m, t.percent, g.runs[0].score_name) for m in t.metrics]]
               for g, r in zip(t.groups, t.rows)]
    mark_best(t.shown, t.blocks)


def _fill_run_tables(t: Tables) -> None:
    headline = "acc" if t.score_name == "accuracy" else "score"  # a language stream's own score
    t.run_header = ["run", "stream", "strategy", "seed", column_name(headline, t.percent, t.score_name),
                    column_name("forgetting", t.percent, t.score_name), "status"]
    t.run_rows = [[t.rel(r.path), r.stream, r.strategy, r.summary.get("seed", ""),
                   format_number(metric_value(r, headline), headline, t.percent, r.score_name),
                   format_number(metric_value(r, "forgetting"), "forgetting", t.percent, r.score_name), r.status]
                  for r in t.runs if r.status == "ok"]
    t.bad_header = ["run", "status", "error"]
    t.bad_rows = [[t.rel(r.path), r.status, first_line_of_error(r.error) or "no summary.json "
                   "(still running, killed, or timed out)"] for r in t.not_ok]


def build_tables(root: Path, out_dir: Path, runs: list[RunData], groups: list[Group], rows: list[dict[str, Any]],
                 percent: bool = False, metrics: Sequence[str] | None = None, objective: str | None = None,
                 figures: Sequence[Path] = (), embedded: dict[Path, tuple[str, bytes]] | None = None) -> Tables:
    """The report's tables for ``runs`` (grouped as ``groups``, ``rows`` their ``table_rows``).

    Raises ConfigError for an unknown metric in ``metrics``.
    """
    chosen = choose_metrics(metrics_of([r for g in groups for r in g.runs]), metrics)
    score_name = groups[0].runs[0].score_name if groups else "accuracy"
    t = Tables(root=root, out_dir=out_dir, runs=runs, groups=groups, rows=rows, metrics=chosen, percent=percent,
               score_name=score_name, blocks=stream_blocks(groups), figures=list(figures),
               embedded=dict(embedded or {}))
    _fill_main_table(t)
    _fill_run_tables(t)
    t.search = find_search(root, runs, objective)
    if t.search is not None:
        t.trial_header, t.trials, t.trial_plain = trial_rows(t.search, runs, percent, t.rel)
    return t
