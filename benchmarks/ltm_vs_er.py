"""The LTM-vs-ER experiment (conf/experiment/ltm_vs_er.yaml): byte budget and results table.

    python3 benchmarks/ltm_vs_er.py                 # print the budget computation only
    python3 benchmarks/ltm_vs_er.py <sweep dir>     # ... and the table of its runs

Budget: ER stores raw inputs (float32); LTM stores float32 keys, plus raw inputs when it
replays. Capacities are read from conf/strategy/*.yaml. Payload columns (labels; the
store's 56 B of bookkeeping per memory) are not counted for either. The table gives
mean +- sample standard deviation (ddof=1) over seeds of each summary.json.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
IMAGE_BYTES = 4 * 28 * 28  # one float32 28x28 image
PREFIX = "taskfree_split_fashion_mnist_"
METRICS = ("acc", "forgetting", "online_acc", "train_seconds")


def budget() -> dict[str, tuple[int, int, int]]:
    """strategy -> (bytes per memory, capacity, total bytes), from the shipped configs."""
    conf = ROOT / "conf" / "strategy"
    er = yaml.safe_load((conf / "er.yaml").read_text())
    out = {"er": (IMAGE_BYTES, er["buffer_size"], IMAGE_BYTES * er["buffer_size"])}
    for name in ("ltm_knn", "ltm_replay"):
        cfg = yaml.safe_load((conf / f"{name}.yaml").read_text())
        per = 4 * cfg["embed_dim"] + (IMAGE_BYTES if cfg.get("consolidate_every") else 0)
        out[name] = (per, cfg["capacity"], per * cfg["capacity"])
    return out


def table(sweep: Path) -> list[str]:
    runs: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(sweep.glob("*/summary.json")):
        # a run folder is <arm>_s<seed>[_<job>]: group the seeds of each arm
        arm = re.sub(r"_s\d+(_\d+)?$", "", path.parent.name).removeprefix(PREFIX)
        runs[arm].append(json.loads(path.read_text()))
    rows = ["| strategy | seeds | " + " | ".join(METRICS) + " |",
            "| --- | --- | " + " | ".join("---" for _ in METRICS) + " |"]
    for name, summaries in sorted(runs.items()):
        cells = []
        for m in METRICS:
            values = [s[m] for s in summaries]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.1f} +- {sd:.1f}" if m == "train_seconds"
                         else f"{statistics.mean(values):.3f} +- {sd:.3f}")
        rows.append(f"| {name} | {len(summaries)} | " + " | ".join(cells) + " |")
    return rows


def main(argv: list[str]) -> int:
    print("memory budget (data bytes; labels and store bookkeeping not counted):")
    for name, (per, cap, total) in budget().items():
        print(f"  {name:<11} {cap:>5} memories x {per:>5} B = {total:>9,} B")
    if argv:
        print("\n".join(table(Path(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
