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

#: metrics where a smaller value is the better one (everything else: larger is better)
LOWER_IS_BETTER = frozenset({"forgetting", "stability_gap", "FUAR", "final_avg_loss", "avg_forgetting",
                             "val_forgetting", "val_loss"})
#: metrics that are fractions of 1 and so shown as percentages with ``percent=True``
FRACTIONS = frozenset({"acc", "acc_task_il", "acc_class_il", "forgetting", "bwt", "fwt", "online_acc", "aia",
                       "stability_gap", "plasticity", "IL", "UL", "NL", "val_acc", "val_acc_task_il",
                       "val_forgetting", "val_bwt", "val_aia"})
#: metrics never marked best: they describe the run, not how well it learned
NOT_RANKED = frozenset({"samples_per_second", "n"})
#: what a cell shows when the metric was not measured or is undefined
MISSING = "-"


def lower_is_better(metric: str, score_name: str = "accuracy") -> bool:
    """Whether a smaller ``metric`` is better; ``score`` follows the stream's ``score_name``."""
    if metric in ("score", "val_score"):
        return score_name == "loss"
    return metric in LOWER_IS_BETTER


def is_fraction(metric: str, score_name: str = "accuracy") -> bool:
    """Whether ``metric`` is a fraction of 1 (accuracy-like), so may be printed as percent."""
    if metric in ("score", "val_score"):
        return score_name in ("accuracy", "exact_match")
    return metric in FRACTIONS


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
    ranked = metric not in NOT_RANKED and math.isfinite(mean)
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
