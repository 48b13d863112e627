"""The run folder as a record: metrics.jsonl and scores.csv (appended a line at a time and
flushed; a resumed run first cuts both back to its checkpoint) and summary.json (replaced
atomically), so a crash never leaves a half-written file behind."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from continual.atomic import write_atomic  # noqa: F401 - also imported from here
from continual.run_folder import METRICS_FILE, SCORES_FILE, SUMMARY_FILE


def _clean(value: Any) -> Any:
    """JSON-safe numbers: NaN/Inf become None; numpy/torch scalars become floats."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cell(v: Any) -> str:
    return "nan" if isinstance(v, float) and math.isnan(v) else str(_clean(v))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_atomic(path, (json.dumps(_clean(obj), indent=2, sort_keys=True) + "\n").encode())


class RunRecords:
    """Writes one run's records into ``out_dir``."""

    def __init__(self, out_dir: str | os.PathLike, append: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.out_dir / METRICS_FILE, "a" if append else "w")
        self._append = append
        self._scores = None  # scores.csv, opened at the first eval row

    def log(self, record: dict[str, Any]) -> None:
        """Append one record (a logged step or an eval point) and flush it to disk."""
        self._jsonl.write(json.dumps(_clean(record), sort_keys=True) + "\n")
        self._jsonl.flush()

    def scores(self, header: list[str], rows: list[list[Any]]) -> None:
        """Replace scores.csv with a whole table (for tables whose rows change)."""
        lines = [",".join(header)] + [",".join(_cell(v) for v in row) for row in rows]
        write_atomic(self.out_dir / SCORES_FILE, ("\n".join(lines) + "\n").encode(), fsync=False)

    def score_row(self, header: list[str], row: list[Any]) -> None:
        """Append one row to scores.csv (writing the header first in a new file) and flush it."""
        if self._scores is None:
            path = self.out_dir / SCORES_FILE
            fresh = not (self._append and path.exists() and path.stat().st_size)
            self._scores = open(path, "w" if fresh else "a")
            if fresh:
                self._scores.write(",".join(header) + "\n")
        self._scores.write(",".join(_cell(v) for v in row) + "\n")
        self._scores.flush()

    def summary(self, summary: dict[str, Any]) -> None:
        write_json(self.out_dir / SUMMARY_FILE, summary)

    def close(self) -> None:
        self._jsonl.close()
        if self._scores is not None:
            self._scores.close()


def flatten_keys(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as {dotted key: leaf value} (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``)."""
    if not isinstance(d, dict):
        return {prefix[:-1]: d} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten_keys(v, f"{prefix}{k}."))
    return out
