"""Time to first result (issue 18): where the wall time of the README's commands goes.

Runs, as a user would, in fresh processes (``OMP_NUM_THREADS`` as given, default 1):

- the default single run, ``python -m continual`` (README's first command after setup);
- the README's 3x3 sweep, ``python -m continual -m strategy=naive,er,joint seed=0,1,2``;
- ``python -c "import torch"``, the floor any torch program pays.

Each process writes phase marks (``continual.timeline.mark``, enabled by ``$CONTINUAL_TIMELINE``) and
each job its ``summary.json`` (``train_seconds``, ``eval_seconds``); the wall time of a process
is split into:

- start: interpreter start and ``import continual.cli`` (before ``main``);
- hydra: config composition and job setup (``main`` to the first job; between jobs in a sweep);
- imports: torch and the engine, imported by the first job (near zero for later jobs);
- setup: checks and the stream's data (job start to stream built), the model and strategy (to
  strategy built), loggers and the runner (to the run's start);
- train, eval: the runner's own timers; runner other: the rest of ``Runner.run`` (records,
  checkpoints, summary);
- report: the per-run report (single runs) and, after the last job, the sweep's end (its report);
- teardown: ``main`` returning to the process exiting.

Targets printed as ratios: the sweep spends at least 50% of its wall time in training and
evaluation; the single run's wall time is at most 2x (torch import + training + evaluation).

    OMP_NUM_THREADS=1 python3 benchmarks/first_result.py --repeats 3
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
SWEEP = ["-m", "strategy=naive,er,joint", "seed=0,1,2"]
PHASES = ("start", "hydra", "imports", "setup", "train", "eval", "runner other", "report", "teardown")


def _env(timeline: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if timeline is not None:
        env["CONTINUAL_TIMELINE"] = str(timeline)
    return env


def torch_import_seconds() -> float:
    t0 = time.time()
    subprocess.run([sys.executable, "-c", "import torch"], check=True, env=_env(None))
    return time.time() - t0


def timed_run(args: list[str], work: Path) -> dict[str, float]:
    """One ``python -m continual <args>`` process: its wall time split into PHASES."""
    work.mkdir(parents=True, exist_ok=True)
    timeline = work / "timeline.txt"
    out = work / "out"
    folder = [f"hydra.sweep.dir={out}"] if "-m" in args else [f"hydra.run.dir={out}"]
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "continual", *args, *folder], env=_env(timeline),
                          cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t_exit = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"first_result: continual {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    marks = [(line.split()[0], float(line.split()[1])) for line in timeline.read_text().splitlines()]
    summaries = [json.loads(p.read_text()) for p in sorted(out.rglob("summary.json"))]
    train = sum(s["train_seconds"] for s in summaries)
    evaluation = sum(s["eval_seconds"] for s in summaries)
    t = dict.fromkeys(PHASES, 0.0)
    t["start"] = marks[0][1] - t0
    previous = marks[0]
    for name, at in marks[1:]:
        gap = at - previous[1]
        if name == "job_entry":
            t["hydra"] += gap
        elif name == "job_start":
            t["imports"] += gap
        elif name in ("stream_built", "strategy_built", "run_start"):
            t["setup"] += gap
        elif name == "run_end":
            t["runner other"] += gap  # train and eval are taken out below
        elif name in ("job_end", "main_end"):
            t["report"] += gap
        previous = (name, at)
    t["train"], t["eval"] = train, evaluation
    t["runner other"] -= train + evaluation
    t["teardown"] = t_exit - previous[1]
    t["wall"] = t_exit - t0
    t["jobs"] = len(summaries)
    return t


def _row(name: str, runs: list[dict[str, float]]) -> str:
    med = {k: statistics.median(r[k] for r in runs) for k in (*PHASES, "wall")}
    cells = " | ".join(f"{med[k]:.2f} ({100 * med[k] / med['wall']:.0f}%)" for k in PHASES)
    return f"| {name} | {med['wall']:.2f} | {cells} |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="alternating repeats of each command")
    p.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    args = p.parse_args(argv)
    print(f"# first_result: load average at start {[round(x, 2) for x in os.getloadavg()]}, "
          f"OMP_NUM_THREADS={_env(None)['OMP_NUM_THREADS']}, {os.cpu_count()} cores, "
          f"python {sys.version.split()[0]}")
    single, sweep, torch_s = [], [], []
    with tempfile.TemporaryDirectory(prefix="first_result_") as tmp:
        work = Path(tmp)
        for _ in range(args.repeats):
            torch_s.append(torch_import_seconds())
            single.append(timed_run([], work / f"single{len(single)}"))
            sweep.append(timed_run(SWEEP, work / f"sweep{len(sweep)}"))
    print("\nMedians over repeats, seconds (share of the wall time):\n")
    print("| command | wall s | " + " | ".join(PHASES) + " |")
    print("|---|---|" + "---|" * len(PHASES))
    print(_row("python -m continual", single))
    print(_row("python -m continual " + " ".join(SWEEP), sweep))
    torch_med = statistics.median(torch_s)
    s_wall = statistics.median(r["wall"] for r in single)
    s_work = statistics.median(r["train"] + r["eval"] for r in single)
    w_share = statistics.median((r["train"] + r["eval"]) / r["wall"] for r in sweep)
    ratio = s_wall / (torch_med + s_work)
    print(f"\npython -c 'import torch': {torch_med:.2f} s (median of {len(torch_s)})")
    print(f"single run: wall / (torch import + train + eval) = {s_wall:.2f} / ({torch_med:.2f} + {s_work:.2f})"
          f" = {ratio:.2f}x (target <= 2.0x: {'met' if ratio <= 2.0 else 'NOT met'})")
    print(f"README sweep: train + eval share of wall = {100 * w_share:.0f}% "
          f"(target >= 50%: {'met' if w_share >= 0.5 else 'NOT met'})")
    if args.json:
        args.json.write_text(json.dumps({"single": single, "sweep": sweep, "torch_import": torch_s}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
