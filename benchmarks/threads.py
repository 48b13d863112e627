"""The ``threads`` setting: the default run with ``OMP_NUM_THREADS`` unset against explicit thread counts.

Runs the README's main job (Split-MNIST 5k, ER, MLP, online) as a new user would - in a fresh
process, ``OMP_NUM_THREADS`` unset, ``threads=auto`` - and with ``threads=1`` and ``threads=2``,
alternated ``--repeats`` times, and prints the median ``train_seconds`` of each and the ratio
auto / best explicit (target <= 1.10, issue 18). Then the same for a 4-job basic-launcher sweep
(wall seconds of the whole command) and for the joblib (2 workers) and submitit-local
(``hydra/launcher=local``) launchers (their jobs' train_seconds summed), and one ResNet-18
step on 32x32 inputs (11.2M parameters) with ``auto`` (decided in each fresh process, right
after the previous one ended, as ``choose_threads`` decides it for a run), 1 and 2 threads.

    python3 benchmarks/threads.py [--repeats 3] [--part all|launchers|resnet]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def single_run(threads: str) -> float:
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-m", "continual", f"threads={threads}", "log.console=false",
                        f"hydra.run.dir={out}"], env=_env(), check=True, capture_output=True, cwd=out)
        return json.loads((Path(out) / "summary.json").read_text())["train_seconds"]


def sweep(threads: str, launcher: str = "basic") -> float:
    """The 4-job sweep's wall seconds (basic launcher), or the sum of its jobs' train_seconds
    (joblib, 2 workers; ``local``, submitit's local executor): what parallel jobs each spend."""
    extra = [] if launcher == "basic" else [f"hydra/launcher={launcher}"]
    extra += ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "continual", "-m", "strategy=naive,er", "seed=0,1",
                        f"threads={threads}", "log.console=false", f"hydra.sweep.dir={out}", *extra],
                       env=_env(), check=True, capture_output=True, cwd=out)
        wall = time.perf_counter() - t0
        if launcher == "basic":
            return wall
        runs = [json.loads(p.read_text())["train_seconds"] for p in Path(out).rglob("summary.json")]
        if len(runs) != 4:
            raise SystemExit(f"threads: the {launcher} sweep wrote {len(runs)} summaries, not 4")
        return sum(runs)


PICKED: list[int] = []  # the thread counts ``auto`` chose in resnet_step's processes


def resnet_step(threads: str) -> float:
    """Seconds of one ResNet-18 training step (batch 10, 32x32x3) in a fresh process whose thread
    count is ``threads``: a number, or ``auto`` decided by ``choose_threads`` as a run decides it."""
    code = ("import time, torch; from continual.models import build_model\n"
            "from continual.threads import choose_threads\n"
            "m = build_model('resnet18', (3, 32, 32), 10)\n"
            f"n = choose_threads({threads if threads == 'auto' else int(threads)!r}, "
            "sum(p.numel() for p in m.parameters()), in_sweep=False)\n"
            "torch.set_num_threads(n)\n"
            "opt = torch.optim.SGD(m.parameters(), lr=0.01); x = torch.randn(10, 3, 32, 32); "
            "y = torch.randint(0, 10, (10,))\n"
            "def step():\n loss = torch.nn.functional.cross_entropy(m(x), y); opt.zero_grad(); loss.backward(); "
            "opt.step()\n"
            "[step() for _ in range(3)]; t = time.perf_counter(); [step() for _ in range(20)]\n"
            "print(n, (time.perf_counter() - t) / 20)")
    r = subprocess.run([sys.executable, "-c", code], env=_env(), check=True, capture_output=True, text=True)
    picked, seconds = r.stdout.split()
    if threads == "auto":
        PICKED.append(int(picked))
    return float(seconds)


def alternate(fn, settings: list[str], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {s: [] for s in settings}
    for r in range(repeats):
        for s in settings[r % len(settings):] + settings[:r % len(settings)]:
            times[s].append(fn(s))
    return {s: statistics.median(v) for s, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--part", choices=("all", "launchers", "resnet"), default="all",
                   help="the launchers' rows, the ResNet-18 row, or both")
    args = p.parse_args()
    print(f"cores {os.cpu_count()}, load average at start {os.getloadavg()[0]:.2f}")
    rows = (("default run, train_seconds", single_run), ("4-job basic sweep, wall s", sweep),
            ("4-job joblib sweep (2 workers), train_seconds summed", lambda t: sweep(t, "joblib")),
            ("4-job submitit local sweep, train_seconds summed", lambda t: sweep(t, "local")))
    for name, fn in rows if args.part != "resnet" else ():
        med = alternate(fn, ["auto", "1", "2"], args.repeats)
        best = min(med["1"], med["2"])
        print(f"{name}: auto {med['auto']:.3f}, threads=1 {med['1']:.3f}, threads=2 {med['2']:.3f}; "
              f"auto / best explicit {med['auto'] / best:.3f}")
    if args.part == "launchers":
        return
    med = alternate(resnet_step, ["auto", "1", "2"], args.repeats)
    best = min(med["1"], med["2"])
    print(f"ResNet-18 step (batch 10, 32x32), s: auto {med['auto']:.3f} (picked {PICKED}), threads=1 "
          f"{med['1']:.3f}, threads=2 {med['2']:.3f}; auto / best explicit {med['auto'] / best:.3f}; "
          f"load average at end {os.getloadavg()[0]:.2f}")

if __name__ == "__main__":
    main()
