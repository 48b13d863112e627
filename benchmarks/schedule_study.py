"""Learning-rate schedules on a vision stream: ER on Split-Fashion-MNIST, visible and hidden boundaries.

Does the infinite schedule forget less at equal plasticity, as the papers find for language
models? The study is two Hydra multiruns of the main CLI (one per stream: the per-task schedules
need boundaries and refuse the task-free stream, so it takes ``cosine`` and ``wsd_once`` instead),
then this script reads their ``summary.json`` files and prints the table (mean ± sd over seeds)
and the paired differences against ``constant``::

    continual -m stream=split_fashion_mnist strategy=er schedule=constant,repeated_cosine,wsd,infinite \
seed=0,1,2 hydra.sweep.dir=runs/schedules/class_incremental
    continual -m stream=taskfree_split_fashion_mnist stream.passes=1 stream.batch_size=10 strategy=er \
schedule=constant,cosine,wsd_once,infinite seed=0,1,2 hydra.sweep.dir=runs/schedules/task_free
    python3 benchmarks/schedule_study.py runs/schedules/class_incremental runs/schedules/task_free
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ORDER = ("constant", "cosine", "repeated_cosine", "wsd", "wsd_once", "infinite")
COLUMNS = ("acc", "forgetting", "plasticity", "bwt", "aia", "online_acc")


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(folder: Path) -> str:
    runs = [json.loads(p.read_text()) for p in sorted(folder.rglob("summary.json"))]
    if not runs:
        raise SystemExit(f"no summary.json under {folder}")
    boundaries = runs[0]["config"]["stream"]["boundaries"]
    scheds = sorted({r["schedule"] for r in runs}, key=lambda s: (ORDER.index(s) if s in ORDER else 99, s))
    by = {(r["schedule"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    lines = [f"{folder} ({runs[0]['stream']}, boundaries {boundaries}, {len(seeds)} seeds)", "",
             "| schedule | n | " + " | ".join(COLUMNS) + " | forgetting - constant's (per seed) |",
             "|" + " --- |" * (len(COLUMNS) + 3)]
    for s in scheds:
        rows = [by[(s, k)] for k in seeds if (s, k) in by]
        diffs = [by[(s, k)]["forgetting"] - by[("constant", k)]["forgetting"] for k in seeds
                 if (s, k) in by and ("constant", k) in by]
        lines.append(f"| {s} | {len(rows)} | " + " | ".join(_cell([r[c] for r in rows]) for c in COLUMNS)
                     + " | " + " / ".join(f"{d:+.3f}" for d in diffs) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    folders = [Path(a) for a in sys.argv[1:]]
    if not folders:
        raise SystemExit(__doc__)
    for folder in folders:
        print(table(folder))


if __name__ == "__main__":
    main()
