"""How the report's numbers look: cells (fractions or percent, ``-`` when undefined) and the
best cell of each stream.

A table is a header and rows of :class:`Cell`; each writer (``markdown``, ``html_page``,
``latex``) escapes for its own format and marks a cell's ``best`` flag its own way
(``**..**``, ``<b>``, ``\\textbf``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from continual import metric_table

#: what a cell shows when the metric was not measured or is undefined
MISSING = "-"


def lower_is_better(metric: str, score_name: str = "accuracy") -> bool:
    """Whether a smaller ``metric`` is better on a stream scored by ``score_name``, as the
    metric table declares it (``continual.metric_table``): metrics of the score matrix such as
    ``score``, ``aia`` and ``plasticity`` follow the score (lower is better for a loss)."""
    return metric_table.lower_is_better(metric, score_name)


def is_fraction(metric: str, score_name: str = "accuracy") -> bool:
    """Whether ``metric`` is a fraction of 1 (so may be printed as percent) on a stream scored
    by ``score_name``, as the metric table declares it: metrics of the score matrix only when
    the score is accuracy; exact match (already 0-100) and losses never."""
    return metric_table.is_fraction(metric, score_name)


def is_ranked(metric: str) -> bool:
    """Whether a best cell of ``metric`` is marked: not for what describes the run (samples/s)."""
    return metric != "n" and metric_table.is_ranked(metric)


def format_number(value: float, metric: str, percent: bool = False, score_name: str = "accuracy") -> str:
    """One number as the tables print it: 3 decimals, 1 in percent, none for samples/s."""
    if not math.isfinite(value):
        return MISSING
    if metric == "samples_per_second":
        return f"{value:.0f}"
    if percent and is_fraction(metric, score_name):
        return f"{100 * value:.1f}"
    return f"{value:.3f}"


@dataclass
class Cell:
    """One table cell: its text, the ``± std`` part (may be empty) and whether it is the best
    of its stream. ``key`` is what "best" compares (the mean as printed), None if unranked."""

    text: str
    std: str = ""
    best: bool = False
    key: float | None = None

    def plain(self) -> str:
        return self.text + (f" ± {self.std}" if self.std else "")


def metric_cell(mean: float, std: float, metric: str, percent: bool = False,
                score_name: str = "accuracy") -> Cell:
    """The cell of a mean ± std; ``-`` when the mean is undefined, no std for one run."""
    text = format_number(mean, metric, percent, score_name)
    spread = format_number(std, metric, percent, score_name) if math.isfinite(mean) and math.isfinite(std) else ""
    ranked = is_ranked(metric) and math.isfinite(mean)
    key = None
    if ranked:
        key = float(text)  # as printed: two cells that read the same tie
        key = -key if lower_is_better(metric, score_name) else key
    return Cell(text, spread, key=key)


def mark_best(rows: Sequence[Sequence[Cell]], blocks: Iterable[Sequence[int]]) -> None:
    """Set ``best`` on the highest-keyed cell of every column within each block of row
    indices (a block: the rows of one stream); ties are all best; a block of one row, or a
    column with fewer than two ranked cells, has no best. Cells that are not :class:`Cell`
    (plain text, counts) are never ranked."""
    def key(i: int, col: int) -> float | None:
        value = rows[i][col]
        return value.key if isinstance(value, Cell) else None

    for block in blocks:
        if len(block) < 2:
            continue
        for col in range(len(rows[block[0]])):
            keys = [k for k in (key(i, col) for i in block) if k is not None]
            if len(keys) < 2:
                continue
            top = max(keys)
            for i in block:
                if key(i, col) == top:
                    rows[i][col].best = True


def as_cell(value: Any) -> Cell:
    return value if isinstance(value, Cell) else Cell(str(value))


def number(value: Any) -> float:
    """A summary value as a float: NaN for null, booleans and anything not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return float("nan")
    return float(value)
