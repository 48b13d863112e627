"""report.md: the table, the search's trials, the failed runs, every run and links to the
figures, as Markdown."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from continual.report.format import as_cell
from continual.report.table import Tables


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        c = as_cell(v)
        text = c.plain().replace("|", "\\|").replace("\n", " ")
        return f"**{text}**" if c.best else text

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_report(t: Tables) -> str:
    """The text of report.md."""
    md = [f"# {t.title}", "", t.intro, "", markdown_table(t.header, t.shown), ""]
    if t.search is not None:
        md += ["## Hyper-parameter search", "", t.search_text, "", markdown_table(t.trial_header, t.trials), ""]
    if t.not_ok:
        md += ["## Failed or unfinished runs", "", markdown_table(t.bad_header, t.bad_rows), ""]
    md += ["## Runs", "", markdown_table(t.run_header, t.run_rows), ""]
    if t.figures:
        md += ["## Plots", ""] + [(f"![{p.stem}]({t.rel(p)})" if p.suffix != ".pdf" else f"[{p.stem}]({t.rel(p)})")
                                  for p in t.figures] + [""]
    return "\n".join(md)


def write_markdown(t: Tables) -> tuple[Path, str]:
    """Write report.md; returns its path and its text."""
    path = t.out_dir / "report.md"
    text = markdown_report(t)
    path.write_text(text)
    return path, text
