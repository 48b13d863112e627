"""TAME's switch rule on four task streams and two stationary ones (issue 17, item 5): the
default (``strategy=tame``) against the paper's rule and the default's parts added one by one;
boundary precision / recall per stream and the false switches on the stationary streams.

Each run is the main CLI, one process after the other (one thread each); a run whose
``summary.json`` exists is read, not rerun, so an interrupted study resumes. The selector and
the pruning fine-tuning run 50 epochs (``conf/experiment/tame_mnist.yaml``'s CPU protocol):
the selector plays no part in switch detection, and every setting gets the same::

    export OMP_NUM_THREADS=1
    python3 benchmarks/tame_window.py --out runs/tame_window --seeds 0,1,2,3,4 --variants tame
    python3 benchmarks/tame_window.py --out runs/tame_window --seeds 0,1,2 \
        --variants paper,window,window_patience
    python3 benchmarks/tame_window.py --out runs/tame_window --seeds 0,1,2 \
        --variants no_patience --settings online,stationary_mnist
    python3 benchmarks/tame_window.py --out runs/tame_window --seeds 5,6,7,8,9,10,11,12,13,14 \
        --variants tame,window_patience --settings online

Boundary precision / recall are the runner's (``continual.metrics.boundary_scores``, tolerance a
quarter of a task's samples); on a stationary stream every detected switch is a false one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

EXPERIMENT = "+experiment=tame_mnist"  # task-free, batch 128, MLP, TAME's SGD for every setting
CPU = ["strategy.selector_epochs=50", "strategy.prune_epochs=50"]
# name -> (what it is, overrides of the CLI's defaults)
SETTINGS: dict[str, tuple[str, list[str]]] = {
    "online": ("Split-MNIST 5k, online (batch 10, 1 pass: 80 steps a task), the CLI's default stream", []),
    "fmnist": ("task-free Split-Fashion-MNIST (batch 128, 3 passes: 282 steps a task)", [EXPERIMENT]),
    "mnist10": ("Split-MNIST 5k, batch 128, 10 passes (63 steps a task)",
                [EXPERIMENT, "stream=split_mnist", "stream.passes=10"]),
    "pmnist": ("Permuted MNIST, 10 tasks x 4,000, batch 128, 5 passes (157 steps a task)",
               [EXPERIMENT, "stream=permuted_mnist", "stream.passes=5"]),
    "stationary_fmnist": ("stationary: Fashion-MNIST, one task of 10 classes, 20,000 samples, "
                          "batch 10, 1 pass (2,000 steps)",
                          ["stream=split_fashion_mnist", "stream.n_tasks=1",
                           "stream.train_per_class=2000"]),
    "stationary_mnist": ("stationary: MNIST 5k, one task of 10 classes repeated 5 passes, "
                         "20,000 samples, batch 10 (2,000 steps)",
                         ["stream=split_mnist", "stream.n_tasks=1", "stream.passes=5"]),
}


# variant -> strategy overrides. ``paper`` is conf/strategy/tame_paper.yaml's values spelled out:
# the CLI refuses options a preset inherits through its defaults list (selector_epochs here)
# unless an +experiment is given, as on the online and stationary streams.
PAPER = ["strategy=tame", "strategy.window=100", "strategy.patience=1",
         "strategy.decision_statistic=mean", "strategy.min_std=0.005"]
VARIANTS: dict[str, list[str]] = {
    "tame": ["strategy=tame"],  # window=auto, patience=2, decision_statistic=median, min_std=0.05
    "paper": PAPER,
    "window": [*PAPER, "strategy.window=auto"],
    "window_patience": [*PAPER, "strategy.window=auto", "strategy.patience=2"],
    "no_patience": ["strategy=tame", "strategy.patience=1"],
}


def command(setting: str, variant: str, seed: int, folder: Path) -> list[str]:
    return ["continual", *SETTINGS[setting][1], *VARIANTS[variant], *CPU, f"seed={seed}",
            "log.console=false", "report.per_run=false", "checkpoint.enabled=false",
            f"hydra.run.dir={folder}"]


def run(setting: str, variant: str, seed: int, out: Path, rerun: bool = False) -> dict:
    """One CLI run's summary.json (run unless it is there already)."""
    folder = out / f"{setting}_{variant}_s{seed}"
    summary = folder / "summary.json"
    if rerun or not summary.exists():
        cmd = command(setting, variant, seed, folder)
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        print(f"  {setting} {variant} seed {seed}: {time.perf_counter() - t0:.0f} s",
              file=sys.stderr, flush=True)
    return json.loads(summary.read_text())


def cell(values: list[float]) -> str:
    mean = statistics.mean(values)
    per_seed = " / ".join(f"{v:.2f}" for v in values)
    return f"{mean:.2f} ({per_seed})" if len(values) > 1 else f"{mean:.2f}"


def table(results: dict[tuple[str, str], list[dict]], variants: list[str]) -> str:
    """Markdown: per stream and strategy, precision and recall (mean, then per seed), switches
    found of the true ones, false switches (detections matching no boundary), experts, and the
    final class-IL accuracy (mean, then per seed)."""
    lines = ["| stream | variant | boundary P (seeds) | boundary R (seeds) | switches found / true "
             "| false switches | experts | acc (class-IL) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for setting in SETTINGS:
        for variant in variants:
            runs = results.get((setting, variant))
            if not runs:
                continue
            true = [int(r["n_tasks"]) - 1 for r in runs]  # these streams do not repeat tasks
            found = [round(r["boundary_recall"] * t) for r, t in zip(runs, true)]
            false = [r["switches_detected"] - f for r, f in zip(runs, found)]
            has_switches = any(true)
            lines.append(" | ".join([
                f"| {setting}", variant,
                cell([r["boundary_precision"] for r in runs]) if has_switches else "-",
                cell([r["boundary_recall"] for r in runs]) if has_switches else "-",
                " / ".join(f"{f}/{t}" for f, t in zip(found, true)) if has_switches else "-",
                " / ".join(str(f) for f in false),
                " / ".join(str(r["n_experts"]) for r in runs),
                cell([r["acc"] for r in runs]) + " |",
            ]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/tame_window"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--rerun", action="store_true", help="run again even if summary.json exists")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    variants, settings = args.variants.split(","), args.settings.split(",")
    for asked, known in ((settings, SETTINGS), (variants, VARIANTS)):
        if set(asked) - set(known):
            raise SystemExit(f"unknown {sorted(set(asked) - set(known))}; choose from {list(known)}")
    results: dict[tuple[str, str], list[dict]] = {}
    for setting in settings:
        for variant in variants:
            results[(setting, variant)] = [run(setting, variant, s, args.out, args.rerun)
                                           for s in seeds]
    print("Streams (add the variant's overrides, seed=S and hydra.run.dir):")
    for name in settings:
        print(f"- {name}: {SETTINGS[name][0]}: `{' '.join(['continual', *SETTINGS[name][1], *CPU])}`")
    print("Variants: " + "; ".join(f"{v}: `{' '.join(VARIANTS[v])}`" for v in variants))
    print()
    print(table(results, variants))


if __name__ == "__main__":
    main()
