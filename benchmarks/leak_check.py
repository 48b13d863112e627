"""Bounded resources: peak RSS after 10k steps against after 1k steps, per strategy.

Each strategy runs in its own process (peak RSS is per process) on a long task-free
stream (Permuted MNIST 5k, batch 10, eval every 500 steps on 200 items per task), once
for 1k steps and once for 10k steps. A leak (graphs kept by eval or logging, growing
lists) shows as growth; the target is at most 10%. ``joint`` keeps every sample by
design and is reported for reference only. Each strategy runs with its shipped config
(conf/strategy/<name>.yaml) and the overrides in ``SETTINGS`` (printed and saved with the
figures), which only make 10k steps affordable on a CPU.

    python3 benchmarks/leak_check.py [--strategies naive er] [--steps 1000 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

# Overrides per strategy: OnPro with 4 rotation views instead of the paper's 16 (the documented
# CPU saving); TAME with 5 selector epochs and 2 fine-tuning epochs after pruning instead of 200
# each (both run once, after the stream). Memory sizes (buffers, stores, capacities) are as shipped.
SETTINGS: dict[str, list[str]] = {
    "naive": [], "er": [], "joint": [],
    "onpro": ["strategy.rotations=4"],
    "tame": ["strategy.selector_epochs=5", "strategy.prune_epochs=2"],
    "ltm_knn": [], "ltm_replay": [],
}
# Summary fields that explain legitimate growth (experts spawned, memories stored).
STATE_KEYS = ("n_experts", "memories", "memory_bytes")

CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(1)
from hydra import compose, initialize_config_module
from continual.config import register_configs
from continual.experiment import run_experiment
register_configs()
strategy, steps, out, keys, extra = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split(","), sys.argv[5:]
n_tasks = max(1, -(-steps * 10 // 4000))
with initialize_config_module(config_module="continual.conf", version_base="1.3"):
    cfg = compose("config", overrides=[
        "stream=permuted_mnist", f"stream.n_tasks={n_tasks}", "stream.boundaries=hidden", f"strategy={strategy}",
        "log.console=false", "eval.every=500", "eval.max_per_task=200", "checkpoint.enabled=false", *extra])
t0 = time.perf_counter()
s = run_experiment(cfg, out_dir=out, report=False)
print(json.dumps({"steps": s["steps"], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "wall_s": round(time.perf_counter() - t0, 1), **{k: s[k] for k in keys if k in s}}))
"""


def measure(strategy: str, steps: int, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        r = subprocess.run([sys.executable, "-c", CHILD, strategy, str(steps), out, ",".join(STATE_KEYS),
                            *overrides], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{strategy} ({steps} steps) failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--strategies", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--steps", nargs=2, type=int, default=[1000, 10000])
    p.add_argument("--out", default="benchmarks/results/leak_check.json")
    args = p.parse_args()
    rows = []
    print(f"{'strategy':<12}{'steps':>8}{'peak RSS MB':>14}{'steps':>8}{'peak RSS MB':>14}{'growth':>9}  overrides")
    for strategy in args.strategies:
        overrides = SETTINGS[strategy]
        a, b = (measure(strategy, n, overrides) for n in args.steps)
        growth = b["peak_rss_mb"] / a["peak_rss_mb"] - 1
        rows.append({"strategy": strategy, "overrides": overrides, "short": a, "long": b, "growth": growth})
        print(f"{strategy:<12}{a['steps']:>8}{a['peak_rss_mb']:>14.1f}{b['steps']:>8}{b['peak_rss_mb']:>14.1f}"
              f"{growth:>8.1%}  {' '.join(overrides) or '-'}", flush=True)
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:  # after each strategy: a long run keeps what it measured
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
