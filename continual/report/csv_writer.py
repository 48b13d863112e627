"""report.csv (the main table at full precision, empty cells for NaN) and hparams.csv (the
search's trials, for a hyper-parameter search)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from continual.report.table import Tables


def write_csv(t: Tables) -> Path:
    """report.csv: one row per group, every metric's mean and std at full precision."""
    path = t.out_dir / "report.csv"
    columns = ["stream", "strategy", "model", "setting", "n"] + [f"{m}_{s}" for m in t.metrics
                                                                 for s in ("mean", "std")]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in t.rows:
            w.writerow(["" if isinstance(r[c], float) and not math.isfinite(r[c]) else r[c]
                        for c in columns])
    return path


def write_hparams_csv(t: Tables) -> Path | None:
    """hparams.csv: every trial of the search, best first; None (nothing written) without a search."""
    if t.search is None:
        return None
    path = t.out_dir / "hparams.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["trial", "best", t.search.objective, *t.search.params, "status", "run"])
        w.writeheader()
        w.writerows(t.trial_plain)
    return path
