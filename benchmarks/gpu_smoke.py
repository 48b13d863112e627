"""GPU smoke check (issue 22): what only a GPU can show, in one script of under 5 minutes.

1. every image-stream strategy end to end with ``device=cuda`` on ``stream=split_digits``
   (the ``continual`` command, as a user runs it);
2. SIGKILL on the GPU mid-run, then resume on the CPU and on the GPU (the run must finish),
   and under ``deterministic=true`` a killed-and-resumed GPU run against an uninterrupted one;
3. host-device synchronisations per ``observe()``, counted with
   ``torch.cuda.set_sync_debug_mode("warn")`` (targets: 0 for er and joint, at most 2 for
   onpro, tame and ltm_knn), in-process;
4. the FAISS GPU store against the CPU store when faiss with GPU support is importable, else a
   skip line saying why.

Without a GPU it runs nothing and exits 2 saying so. Exit 1 when a check fails, 0 otherwise.
Results: printed, and written as JSON to ``--out`` (default ``gpu_smoke.json``).

On the lent GPU machine (Python 3.12, torch with CUDA; no hydra-core, omegaconf or faiss, no
package registry) carry the three small wheels the command needs, made here in the repo root::

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux2014_x86_64 -d .whl \
        hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3
    # antlr4-python3-runtime 4.9.3 ships as a source archive only: build its wheel here with
    # python3 -m pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
    # optional, for the LTM strategies and the FAISS comparison: faiss-cpu (about 30 MB)

and run (``carry: [".whl"]``)::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
    PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 python3 benchmarks/gpu_smoke.py --out $OUT/gpu_smoke.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NO_GPU_EXIT = 2
#: strategies whose syncs per observe() are counted, and the most each may have (issue 22)
SYNC_TARGETS = {"er": 0, "joint": 0, "onpro": 2, "tame": 2, "ltm_knn": 2}
#: options that keep the end-to-end runs short on split_digits (the checks are about running,
#: not about accuracy)
FAST = ["stream=split_digits", "log.console=false", "report.per_run=false", "report.sweep=false"]
STRATEGY_FAST = {"onpro": ["strategy.rotations=4"]}
RESUME_STRATEGIES = ("er", "onpro", "ltm_knn")
AMP_STRATEGIES = ("er", "onpro")  # amp=bf16 end to end (OnPro's official code trains under autocast)
FAULT = "step:45"  # SIGKILL at the 45th step: after the checkpoint at step 40
CHECKPOINTS = ["checkpoint.every=20", "log.every=10", "checkpoint.min_interval_s=0"]


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def faiss_state() -> tuple[bool, bool, str]:
    """(importable, sees a GPU, why not) of faiss."""
    if not has_module("faiss"):
        return False, False, "faiss is not importable (carry a faiss-cpu or faiss-gpu wheel to run it)"
    import faiss

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    return True, gpus > 0, "" if gpus else "faiss sees no GPU (a CPU-only build); the GPU store cannot be compared"


def image_strategies() -> tuple[list[str], list[str]]:
    """Strategies to run end to end on split_digits, and skip lines for the others."""
    run, skipped = [], []
    faiss_ok = faiss_state()[0]
    for path in sorted((ROOT / "conf" / "strategy").glob("*.yaml")):
        name = path.stem
        target = next((line.split(":", 1)[1].strip() for line in path.read_text().splitlines()
                       if line.startswith("_target_:")), "")
        if ".ckl." in target or name.startswith(("ckl_", "lm_")):
            skipped.append(f"{name}: a language-model strategy (stream=knowledge/corpora), not run here")
        elif name.startswith("avl_") and not has_module("avalanche"):
            skipped.append(f"{name}: avalanche-lib is not installed here")
        elif name.startswith("ltm_") and not faiss_ok:
            skipped.append(f"{name}: faiss is not importable here")
        else:
            run.append(name)
    return run, skipped


def _env(fault: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CONTINUAL_FAULT"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(ROOT)]))
    env.setdefault("OMP_NUM_THREADS", "1")
    if fault:
        env["CONTINUAL_FAULT"] = fault
    return env


def continual(args: list[str], run_dir: Path, fault: str | None = None, timeout: float = 240) -> dict[str, Any]:
    """Run ``python -m continual <args>`` into run_dir; exit code, seconds, summary, stderr tail."""
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "continual", *args, f"hydra.run.dir={run_dir}"],
                           env=_env(fault), capture_output=True, text=True, timeout=timeout, cwd=run_dir.parent)
        rc, err = r.returncode, r.stderr
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        rc, err = "timeout", stderr
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return {"rc": rc, "seconds": round(time.perf_counter() - t0, 1), "summary": summary,
            "resumed": "resumed from" in (err or ""), "stderr_tail": (err or "")[-600:]}


def _acc(result: dict[str, Any]) -> float | None:
    s = result.get("summary")
    return None if s is None else s.get("acc", s.get("score"))


def end_to_end(names: list[str], work: Path, jobs: int) -> dict[str, Any]:
    def one(name: str) -> tuple[str, dict[str, Any]]:
        return name, continual([*FAST, f"strategy={name}", "device=cuda", *STRATEGY_FAST.get(name, [])],
                               work / f"e2e_{name}")

    with ThreadPoolExecutor(jobs) as pool:
        return dict(pool.map(one, names))


def kill_and_resume(name: str, work: Path) -> dict[str, Any]:
    """SIGKILL a GPU run after its step-40 checkpoint; resume it on the CPU, and (a second run)
    on the GPU; under deterministic=true compare a killed-and-resumed GPU run with an
    uninterrupted one."""
    base = [*FAST, f"strategy={name}", *STRATEGY_FAST.get(name, []), *CHECKPOINTS]
    out: dict[str, Any] = {}
    for resume_on in ("cpu", "cuda"):
        run_dir = work / f"kill_{name}_{resume_on}"
        killed = continual([*base, "device=cuda"], run_dir, fault=FAULT)
        resumed = continual([*base, f"device={resume_on}"], run_dir)
        out[f"resume_on_{resume_on}"] = {
            "killed_rc": killed["rc"], "rc": resumed["rc"], "resumed": resumed["resumed"],
            "acc": _acc(resumed), "ok": killed["rc"] == -9 and resumed["rc"] == 0 and resumed["resumed"],
            "stderr_tail": "" if resumed["rc"] == 0 else resumed["stderr_tail"]}
    det = [*base, "device=cuda", "deterministic=true"]
    whole = continual(det, work / f"det_{name}_whole")
    run_dir = work / f"det_{name}_killed"
    continual(det, run_dir, fault=FAULT)
    resumed = continual(det, run_dir)
    same = None
    if whole["summary"] and resumed["summary"]:
        keys = ("acc", "forgetting", "bwt", "online_acc", "final_task_acc")
        same = all(whole["summary"].get(k) == resumed["summary"].get(k) for k in keys)
    out["deterministic_gpu"] = {"rc": [whole["rc"], resumed["rc"]], "acc": [_acc(whole), _acc(resumed)],
                                "identical_after_resume": same,
                                "stderr_tail": "" if whole["rc"] == 0 else whole["stderr_tail"]}
    return out


def count_syncs(name: str, device: str, work: Path) -> dict[str, Any]:
    """Synchronisations per observe() of one strategy over split_digits on ``device``."""
    import torch
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from continual.config import CheckpointConfig, accepted_options, instantiate_checked, register_configs
    from continual.experiment import build_model_from_config, instantiate_target
    from continual.runner import Runner

    register_configs()
    with initialize_config_module(config_module="continual.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*FAST, f"strategy={name}", *STRATEGY_FAST.get(name, [])])
    torch.manual_seed(0)
    stream = instantiate_checked(cfg.stream, "stream", seed=0)
    model = build_model_from_config(cfg.model, stream).to(device)
    options = OmegaConf.to_container(cfg.strategy, resolve=True)
    params, _ = accepted_options(instantiate_target(options))
    strategy = instantiate_checked(options, "strategy", model=model,
                                   **({"seed": 0} if "seed" in params and "seed" not in options else {}))
    stream.to(device)
    counts: list[int] = []
    observe = strategy.observe

    def counted(batch: Any) -> Any:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = observe(batch)
        counts.append(sum("synchroniz" in str(w.message) for w in caught))
        return out

    strategy.observe = counted
    runner = Runner(stream, strategy, out_dir=str(work / f"syncs_{name}"), device=device,
                    checkpoint=CheckpointConfig(enabled=False))
    t0 = time.perf_counter()
    on_gpu = device.startswith("cuda")
    if on_gpu:
        torch.cuda.set_sync_debug_mode("warn")
    try:
        runner.run()
    finally:
        if on_gpu:
            torch.cuda.set_sync_debug_mode(0)
    steady = counts[5:] or counts
    return {"observes": len(counts), "median": statistics.median(steady), "max": max(steady),
            "first_5": counts[:5], "mean": round(sum(counts) / max(1, len(counts)), 2),
            "seconds": round(time.perf_counter() - t0, 1), "target": SYNC_TARGETS[name],
            "ok": statistics.median(steady) <= SYNC_TARGETS[name]}


def faiss_gpu_vs_cpu() -> dict[str, Any]:
    importable, gpu, why = faiss_state()
    if not (importable and gpu):
        return {"skipped": why}
    import numpy as np

    from continual.memory.vector_store import VectorStore

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((64, 64)).astype(np.float32)
    base = centres[rng.integers(0, 64, 50_000)] + 0.1 * rng.standard_normal((50_000, 64)).astype(np.float32)
    q = base[rng.integers(0, 50_000, 1000)] + 0.01
    out: dict[str, Any] = {}
    for kind in ("flat", "ivf"):
        opts = {"nlist": 256} if kind == "ivf" else {}
        stores = {d: VectorStore(64, kind=kind, device=d, **opts) for d in ("cpu", "cuda")}
        row: dict[str, Any] = {}
        for d, s in stores.items():
            s.add(base)
            s.search(q[:10], 10)  # warm-up (the GPU copy is made here)
            t0 = time.perf_counter()
            row[f"ids_{d}"] = s.search(q, 10).ids
            row[f"search_ms_{d}"] = round(1000 * (time.perf_counter() - t0), 2)
        row["agreement"] = float((row.pop("ids_cpu") == row.pop("ids_cuda")).mean())
        out[kind] = row
    out["ok"] = out["flat"]["agreement"] >= 0.999
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu_smoke.json", help="where the JSON results go")
    p.add_argument("--jobs", type=int, default=4, help="end-to-end runs at a time")
    p.add_argument("--only", nargs="*", choices=("e2e", "amp", "resume", "syncs", "faiss"),
                   default=["e2e", "amp", "resume", "syncs", "faiss"])
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(f"gpu_smoke: no GPU: torch {torch.__version__} sees none (torch.cuda.is_available() is "
              "False), so nothing was run; run this on a CUDA machine", file=sys.stderr)
        return NO_GPU_EXIT
    missing = [m for m in ("hydra", "omegaconf") if not has_module(m)]
    if missing:
        print(f"gpu_smoke: {', '.join(missing)} not importable: carry the hydra-core, omegaconf and "
              "antlr4-python3-runtime wheels (this script's docstring says how)", file=sys.stderr)
        return 1
    t_start = time.perf_counter()
    results: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                               "python": sys.version.split()[0]}
    names, skipped = image_strategies()
    results["skipped"] = skipped
    for line in skipped:
        print(f"skip  {line}")
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gpu_smoke_") as tmp:
        work = Path(tmp)
        if "e2e" in args.only:
            e2e = end_to_end(names, work, args.jobs)
            for name, r in e2e.items():
                device = str((r["summary"] or {}).get("config", {}).get("device", ""))
                ok = r["rc"] == 0 and device.startswith("cuda")
                r["ok"] = ok
                print(f"{'ok  ' if ok else 'FAIL'}  e2e {name}: rc {r['rc']}, {r['seconds']} s, acc {_acc(r)}")
                if not ok:
                    failed.append(f"e2e {name}")
                    print(r["stderr_tail"])
                r["acc"] = _acc(r)
                r.pop("summary", None)
            results["end_to_end"] = e2e
        if "amp" in args.only:
            results["amp_bf16"] = {}
            for name in (n for n in AMP_STRATEGIES if n in names):
                r = continual([*FAST, f"strategy={name}", "device=cuda", "amp=bf16",
                               *STRATEGY_FAST.get(name, [])], work / f"amp_{name}")
                summary = r.get("summary") or {}
                r["acc"] = _acc(r)
                r.pop("summary", None)
                r["ok"] = r["rc"] == 0 and summary.get("amp") == "bf16"
                fp32 = results.get("end_to_end", {}).get(name, {})
                print(f"{'ok  ' if r['ok'] else 'FAIL'}  amp=bf16 {name}: rc {r['rc']}, {r['seconds']} s, "
                      f"acc {r['acc']} (fp32 run above: {fp32.get('seconds')} s, acc {fp32.get('acc')})")
                if not r["ok"]:
                    failed.append(f"amp {name}")
                    print(r["stderr_tail"])
                results["amp_bf16"][name] = r
        if "resume" in args.only:
            results["kill_and_resume"] = {}
            for name in (n for n in RESUME_STRATEGIES if n in names):
                r = kill_and_resume(name, work)
                results["kill_and_resume"][name] = r
                for where in ("resume_on_cpu", "resume_on_cuda"):
                    print(f"{'ok  ' if r[where]['ok'] else 'FAIL'}  SIGKILL on cuda, {where.replace('_', ' ')} "
                          f"{name}: killed rc {r[where]['killed_rc']}, rc {r[where]['rc']}, acc {r[where]['acc']}")
                    if not r[where]["ok"]:
                        failed.append(f"{where} {name}")
                        print(r[where]["stderr_tail"])
                det = r["deterministic_gpu"]
                print(f"info  deterministic=true on cuda {name}: uninterrupted vs killed+resumed acc "
                      f"{det['acc']}, identical {det['identical_after_resume']}")
        if "syncs" in args.only:
            results["syncs_per_observe"] = {}
            for name in SYNC_TARGETS:
                if name not in names:
                    print(f"skip  syncs {name}: not runnable here (see the skip lines above)")
                    continue
                try:
                    r = count_syncs(name, "cuda", work)
                except Exception as e:  # report and go on: one strategy's failure is a finding
                    r = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                results["syncs_per_observe"][name] = r
                print(f"{'ok  ' if r['ok'] else 'FAIL'}  syncs per observe {name}: "
                      + (r["error"] if "error" in r else
                         f"median {r['median']}, max {r['max']} (target <= {r['target']}), first 5 {r['first_5']}"))
                if not r["ok"]:
                    failed.append(f"syncs {name}")
        if "faiss" in args.only:
            r = faiss_gpu_vs_cpu()
            results["faiss_gpu_vs_cpu"] = r
            if "skipped" in r:
                print(f"skip  FAISS GPU vs CPU: {r['skipped']}")
            else:
                print(f"{'ok  ' if r['ok'] else 'FAIL'}  FAISS GPU vs CPU: {json.dumps(r)}")
                if not r["ok"]:
                    failed.append("faiss")
    results["failed"] = failed
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    print(f"gpu_smoke: {len(failed)} check(s) failed{': ' + ', '.join(failed) if failed else ''}; "
          f"{results['seconds']} s; results in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
