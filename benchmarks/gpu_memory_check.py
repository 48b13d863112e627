"""GPU check of memory.VectorStore: `flat` on the GPU finds the CPU's neighbours, and how much faster.

A prepared device check (issue 3), under 5 minutes on one GPU:

1. N = 1M vectors of dimension 128 around 256 Gaussian centres (``memory_store.clustered``)
   go into two ``flat`` stores, one with ``device="cpu"``, one with ``device="cuda"``;
2. the same 1k queries (k=10) search both. The GPU answer counts as the same when every
   query's ids agree with the CPU's, or where they differ, the true distances of the GPU's
   ids (recomputed in float64) equal the CPU's within ``--rtol`` (ties and float rounding
   at the k-th neighbour may order equal candidates differently). The raw id match rate is
   recorded beside it;
3. search throughput (queries per second, median of ``--repeats``, alternating CPU and GPU,
   after one warm-up each; ``recall=False`` so only the search is timed) for query batches
   of 1k and 10k; the ratio GPU/CPU is the figure to record in benchmarks/RESULTS.md.

Without a GPU (``faiss.get_num_gpus() == 0``) it prints that, writes
``{"status": "skipped: no GPU"}`` and exits 0. ``--second-device cpu`` runs the whole
comparison CPU against CPU (a self-check of this script on any machine).

    python3 benchmarks/gpu_memory_check.py --out $OUT/gpu_memory_check.json
    python3 benchmarks/gpu_memory_check.py --n 20000 --second-device cpu   # a quick self-check
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in memory_store.py; before faiss loads

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory_store import clustered  # noqa: E402

from continual.memory.vector_store import VectorStore  # noqa: E402


def true_sq_distances(base: np.ndarray, queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Squared L2 distances (Q, k), float64, of each query to the vectors ``ids`` (Q, k)."""
    diff = base[ids].astype(np.float64) - queries[:, None, :].astype(np.float64)
    return (diff * diff).sum(-1)


def compare(base: np.ndarray, queries: np.ndarray, ids_a: np.ndarray, ids_b: np.ndarray,
            rtol: float) -> dict[str, Any]:
    """Is answer b the same exact kNN answer as a, up to ties? ids (Q, k) of two searches."""
    d_a = np.sort(true_sq_distances(base, queries, ids_a), axis=1)
    d_b = np.sort(true_sq_distances(base, queries, ids_b), axis=1)
    gap = np.abs(d_a - d_b) / np.maximum(np.abs(d_a), 1e-12)
    per_query_sets = [len(set(a) & set(b)) / a.shape[0] for a, b in zip(ids_a, ids_b)]
    return {
        "id_match_rate": float((ids_a == ids_b).mean()),
        "set_match_rate": float(np.mean(per_query_sets)),
        "max_relative_distance_gap": float(gap.max()),
        "same_neighbours": bool((ids_a == ids_b).all() or (gap <= rtol).all()),
    }


def search_seconds(store: VectorStore, queries: np.ndarray, k: int) -> float:
    t0 = time.perf_counter()
    store.search(queries, k, recall=False)  # returns host arrays: the GPU work is finished
    return time.perf_counter() - t0


def run_check(n: int = 1_000_000, dim: int = 128, queries: int = 1000, k: int = 10,
              repeats: int = 3, batch_sizes: tuple[int, ...] = (1000, 10_000),
              second_device: str = "cuda", rtol: float = 1e-4, seed: int = 0) -> dict[str, Any]:
    """Build both stores, compare their answers and time them; returns the record."""
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    base = clustered(n, dim, 256, rng)
    q_all = clustered(max((queries, *batch_sizes)), dim, 256, rng)
    stores, add_s = {}, {}
    for name, device in (("cpu", "cpu"), ("second", second_device)):
        s = VectorStore(dim, kind="flat", metric="l2", device=device)
        t = time.perf_counter()
        s.add(base)
        add_s[name] = time.perf_counter() - t
        stores[name] = s
    q = q_all[:queries]
    ids_cpu = stores["cpu"].search(q, k, recall=False).ids
    ids_second = stores["second"].search(q, k, recall=False).ids
    record: dict[str, Any] = {
        "n": n, "dim": dim, "queries": queries, "k": k, "second_device": second_device,
        "store_devices": {name: s.device for name, s in stores.items()},
        "add_seconds": add_s, **compare(base, q, ids_cpu, ids_second, rtol), "throughput": {},
    }
    for b in batch_sizes:
        qb = q_all[:b]
        for s in stores.values():
            search_seconds(s, qb, k)  # warm-up (cuBLAS handles, GPU memory)
        times: dict[str, list[float]] = {"cpu": [], "second": []}
        for _ in range(repeats):
            for name, s in stores.items():
                times[name].append(search_seconds(s, qb, k))
        qps = {name: b / statistics.median(ts) for name, ts in times.items()}
        record["throughput"][str(b)] = {
            "cpu_qps": qps["cpu"], "second_qps": qps["second"],
            "ratio": qps["second"] / qps["cpu"],
            "cpu_seconds": times["cpu"], "second_seconds": times["second"],
        }
    record["throughput_ratio"] = record["throughput"][str(batch_sizes[0])]["ratio"]
    record["total_seconds"] = time.perf_counter() - t0
    return record


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {"faiss": faiss.__version__, "faiss_gpus": faiss.get_num_gpus(),
                            "faiss_threads": faiss.omp_get_max_threads(),
                            "cpu": platform.processor() or platform.machine(),
                            "cpu_count": os.cpu_count()}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-sizes", default="1000,10000")
    p.add_argument("--second-device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--out", default=None, help="write the record as JSON here")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else None
    if args.second_device == "cuda" and faiss.get_num_gpus() == 0 and torch.cuda.is_available():
        print("gpu_memory_check: FAILED: torch sees a GPU but FAISS does not (a CPU-only faiss "
              "build): install faiss-gpu to check the GPU store", file=sys.stderr)
        record = {"status": "FAILED: torch sees a GPU but FAISS does not", **environment()}
    elif args.second_device == "cuda" and faiss.get_num_gpus() == 0:
        print("gpu_memory_check: no GPU (faiss.get_num_gpus() == 0): nothing to check here; "
              "run it on a CUDA machine with faiss-gpu, or pass --second-device cpu to "
              "self-check the script")
        record = {"status": "skipped: no GPU", **environment()}
    else:
        batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
        record = run_check(args.n, args.dim, args.queries, args.k, args.repeats, batch_sizes,
                           args.second_device, args.rtol)
        record = {"status": "passed" if record["same_neighbours"] else "FAILED: neighbours differ",
                  **record, **environment()}
        print(f"flat, N={args.n}, dim={args.dim}, {args.queries} queries, k={args.k}: "
              f"same neighbours: {record['same_neighbours']} (ids equal: "
              f"{record['id_match_rate']:.4f}, max relative distance gap "
              f"{record['max_relative_distance_gap']:.2e})")
        for b, t in record["throughput"].items():
            print(f"  batch {b}: cpu {t['cpu_qps']:,.0f} q/s, {args.second_device} "
                  f"{t['second_qps']:,.0f} q/s, ratio {t['ratio']:.1f}x")
        print(f"  total {record['total_seconds']:.1f} s")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
    return 0 if record["status"] in ("passed", "skipped: no GPU") else 1


if __name__ == "__main__":
    sys.exit(main())
