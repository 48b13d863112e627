"""Phase marks of a run's wall time, for benchmarks/first_result.py (``$CONTINUAL_TIMELINE``)."""

from __future__ import annotations

import os


def mark(phase: str) -> None:
    """Append ``<phase> <unix time>`` to the file named by ``$CONTINUAL_TIMELINE`` (unset: nothing).

    benchmarks/first_result.py reads these marks to split a run's wall time into phases."""
    path = os.environ.get("CONTINUAL_TIMELINE")
    if path:
        import time

        with open(path, "a") as f:
            f.write(f"{phase} {time.time():.6f}\n")
