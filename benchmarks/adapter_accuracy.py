"""Is the adapter the same strategy as plain Avalanche? Accuracy over torch seeds (issue 18, item 5).

``avalanche_sweep.py`` times the adapter (``AvalancheStrategy`` under our ``Runner``) against the
same Avalanche strategy in a plain Avalanche loop, from seed 0 only; its accuracies differ for
the strategies that draw random numbers (online DER 0.654 against 0.720, experience Replay
0.713 against 0.757), because the runner's own draws shift torch's generator. This script runs
both sides of every row of that comparison (the same stream, initial weights, optimiser and
protocol: ``avalanche_sweep.adapter_run`` and ``plain_avalanche_run``) under ``--seeds`` torch
seeds each and prints, per row, mean +- std over seeds, the difference and two standard errors
of it: the same strategy reads the same within seed noise.

    OMP_NUM_THREADS=1 python3 benchmarks/adapter_accuracy.py [--seeds 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def compare(seeds: int) -> list[dict[str, Any]]:
    from benchmarks import avalanche_sweep as A
    from benchmarks.engine_overhead import avalanche_benchmark, fresh_model, initial_model
    from benchmarks.run import single_thread
    from continual.streams.datasets import load_dataset
    from continual.streams.generators import class_incremental

    single_thread()
    stream = class_incremental(load_dataset("mnist"), n_tasks=5, batch_size=A.BATCH, passes=1, seed=0)
    state, bench = initial_model(stream, 0), avalanche_benchmark(stream)
    rows = []
    for protocol, name, _ in A.ADAPTER_ROWS:
        acc: dict[str, list[float]] = {"adapter": [], "plain": []}
        for seed in range(seeds):
            acc["adapter"].append(A.adapter_run(name, protocol, {}, stream, fresh_model(stream, state, "cpu"),
                                                seed=seed)["acc"])
            acc["plain"].append(A.plain_avalanche_run(name, protocol, bench, stream,
                                                      fresh_model(stream, state, "cpu"), seed=seed)["acc"])
        a, p = acc["adapter"], acc["plain"]
        sd = {k: statistics.stdev(v) if len(v) > 1 else float("nan") for k, v in acc.items()}
        two_se = 2 * math.sqrt((sd["adapter"] ** 2 + sd["plain"] ** 2) / seeds)
        diff = statistics.fmean(a) - statistics.fmean(p)
        row = {"protocol": protocol, "strategy": name, "seeds": seeds, "adapter": a, "plain": p,
               "adapter_mean": statistics.fmean(a), "adapter_std": sd["adapter"],
               "plain_mean": statistics.fmean(p), "plain_std": sd["plain"], "difference": diff,
               "two_standard_errors": two_se, "within_seed_noise": abs(diff) <= two_se}
        rows.append(row)
        print(f"  {protocol:10s} {name:7s} adapter {row['adapter_mean']:.3f} +- {sd['adapter']:.3f}  plain "
              f"{row['plain_mean']:.3f} +- {sd['plain']:.3f}  difference {diff:+.3f} (2 SE {two_se:.3f})",
              flush=True)
    return rows


def markdown(result: dict[str, Any]) -> str:
    from benchmarks.run import md_table

    env = result["environment"]
    rows = result["rows"]
    lines = [
        "## The adapter and plain Avalanche: the same strategy? (issue 18, item 5)", "",
        f"`{result['command']}` ({env['date']}, {env['machine']}, commit {env['commit']}, load average "
        f"at start {env['load_average_at_start']}; took {result['seconds']:.0f} s). The rows of "
        "`avalanche_sweep.py`'s item 5, each side run once per torch seed (`torch.manual_seed(seed)` "
        "before the run; same stream, initial weights, optimiser and protocol); final average "
        "accuracy over the 5 tasks.", "",
        md_table(["protocol", "strategy", "adapter (mean +- std)", "plain Avalanche", "difference",
                  "2 standard errors", "within seed noise", "adapter, per seed", "plain, per seed"],
                 [[r["protocol"], r["strategy"], f"{r['adapter_mean']:.3f} +- {r['adapter_std']:.3f}",
                   f"{r['plain_mean']:.3f} +- {r['plain_std']:.3f}", f"{r['difference']:+.3f}",
                   f"{r['two_standard_errors']:.3f}", "yes" if r["within_seed_noise"] else "NO",
                   " ".join(f"{v:.3f}" for v in r["adapter"]), " ".join(f"{v:.3f}" for v in r["plain"])]
                  for r in rows]),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5, help="torch seeds per side and row (at least 2)")
    p.add_argument("--out", default=str(HERE / "results" / "adapter_accuracy.json"),
                   help="the JSON; the markdown is written beside it")
    args = p.parse_args(argv)
    if args.seeds < 2:
        p.error("--seeds must be at least 2 (a standard deviation needs two runs)")
    from benchmarks.run import environment, write_json

    t0 = time.perf_counter()
    result: dict[str, Any] = {"environment": environment(),
                              "command": "OMP_NUM_THREADS=1 python3 benchmarks/adapter_accuracy.py "
                                         + " ".join(argv if argv is not None else sys.argv[1:])}
    with warnings.catch_warnings():  # Avalanche's chatter
        warnings.simplefilter("ignore")
        result["rows"] = compare(args.seeds)
    result["seconds"] = time.perf_counter() - t0
    result["markdown"] = markdown(result)
    out = Path(args.out)
    write_json(out, result)
    out.with_suffix(".md").write_text(result["markdown"])
    print(result["markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
