"""What one OnPro training step costs: stream samples/s and its split into parts.

Measures a later-task step (full buffer, 10 classes seen, APF active: the steady state
of a Split-(Fashion-)MNIST / CIFAR-10 run) for each backbone and rotation count:

- time per step (median of ``--steps`` unprofiled steps; CPU time of this process on
  the CPU, wall time with synchronisation on a GPU) and stream samples/s (batch 10 /
  step time), with ER's step beside it for scale;
- the split of a step (torch.profiler over ``--profile-steps`` more steps, by the
  ``record_function`` labels in strategies/onpro.py): views (rotations + augmentation),
  forward, loss parts (L_INS, L_OPE, CE), backward, optimiser, APF sampling, the rest.

CPU (one core, as in the reproduction sweep)::

    python3 benchmarks/onpro_step_cost.py --threads 1 --models cnn resnet18_reduced --rotations 4 16

GPU (the issue's full setting: ResNet-18 nf=64, 32x32x3, 16 copies)::

    python3 benchmarks/onpro_step_cost.py --device cuda --models resnet18 --shape 3 32 32 \
        --rotations 16 --steps 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from continual.models.backbones import build_model  # noqa: E402
from continual.strategies.er import ER  # noqa: E402
from continual.strategies.onpro import OnPro  # noqa: E402
from continual.types import Batch, TaskInfo  # noqa: E402

SECTIONS = ["views", "forward", "loss.ins", "loss.ope", "loss.ce", "backward", "optimizer",
            "sample_apf"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _batch(shape: tuple[int, ...], device: torch.device, classes: list[int]) -> Batch:
    y = torch.tensor(classes, device=device)[torch.randint(len(classes), (10,), device=device)]
    return Batch(torch.rand(10, *shape, device=device), y)


def _steady_state(strategy, shape, device, buffer_size: int) -> None:
    """Fill the buffer with 10 classes and run the first task's and next task's first steps."""
    labels = torch.arange(buffer_size, device=device) % 10
    strategy.buffer.add(torch.rand(buffer_size, *shape, device=device), labels)
    strategy.on_task_start(TaskInfo(0, list(range(8)), 10, 0))
    strategy.observe(Batch(torch.rand(10, *shape, device=device), torch.arange(10, device=device)))
    strategy.on_task_start(TaskInfo(1, [8, 9], 10, 1))
    for _ in range(2):  # the first step of a task skips APF; the second has it
        strategy.observe(_batch(shape, device, [8, 9]))


def time_steps(strategy, shape, device, steps: int) -> tuple[list[float], list[float]]:
    """Wall seconds and this process's CPU seconds per step (CPU time is what a shared,
    busy machine does not inflate; with one thread it is the uncontended step time)."""
    wall, cpu = [], []
    for _ in range(steps):
        batch = _batch(shape, device, [8, 9])
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        strategy.observe(batch)
        _sync(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def profile_split(strategy, shape, device, steps: int) -> dict[str, float]:
    """Seconds per step by section label (inclusive CPU time; device time on CUDA).

    Section times are the profiler's (wall-clock) ones, so on a busy machine compare
    their shares, not their absolute values, with the unprofiled step time."""
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        total = sum(time_steps(strategy, shape, device, steps)[0])
    events = [ev for ev in prof.key_averages()
              if ev.key.startswith("onpro.") and ev.key.removeprefix("onpro.") in SECTIONS]
    use_device = device.type == "cuda" and sum(ev.device_time_total for ev in events) > 0
    split = {name: 0.0 for name in SECTIONS}
    for ev in events:
        us = ev.device_time_total if use_device else ev.cpu_time_total
        split[ev.key.removeprefix("onpro.")] = us / 1e6 / steps
    split["other"] = max(total / steps - sum(split.values()), 0.0)
    split["total (profiled)"] = total / steps
    return split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["cnn", "resnet18_reduced"])
    ap.add_argument("--rotations", nargs="+", type=int, default=[4, 16])
    ap.add_argument("--shape", nargs=3, type=int, default=[1, 28, 28])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--profile-steps", type=int, default=2)
    ap.add_argument("--buffer-size", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model-option", nargs="*", default=[], metavar="KEY=INT",
                    help="backbone options, e.g. channels=16 for the small CNN")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    shape = tuple(args.shape)
    options = {k: int(v) for k, v in (kv.split("=", 1) for kv in args.model_option)}
    cpu = f"CPU, {args.threads} thread(s)"
    name = torch.cuda.get_device_name() if device.type == "cuda" else cpu
    print(f"# OnPro step cost: {name}, input {shape}, batch 10, buffer {args.buffer_size}, "
          f"buffer batch 64, model options {options}, torch {torch.__version__}")
    rows = []
    for model_name in args.models:
        er = ER(build_model(model_name, shape, 10, **options).to(device),
                buffer_size=args.buffer_size, replay_batch_size=10, optimizer="adam", lr=5e-4)
        _steady_state(er, shape, device, args.buffer_size)
        er_wall, er_cpu = time_steps(er, shape, device, max(args.steps, 5))
        er_step = statistics.median(er_cpu if device.type == "cpu" else er_wall)
        for rot in args.rotations:
            model = build_model(model_name, shape, 10, **options).to(device)
            s = OnPro(model, buffer_size=args.buffer_size, rotations=rot)
            _steady_state(s, shape, device, args.buffer_size)
            wall, cpu = time_steps(s, shape, device, args.steps)
            step = statistics.median(cpu if device.type == "cpu" else wall)
            split = profile_split(s, shape, device, args.profile_steps)
            images = rot * 2 * (10 + 64) + 64 + 2 * 64
            row = {"model": model_name, "model_options": options, "rotations": rot,
                   "device": name, "shape": shape,
                   "step_s": step, "step_wall_s": statistics.median(wall),
                   "step_cpu_s": statistics.median(cpu), "samples_per_s": 10 / step,
                   "backbone_images_per_step": images,
                   "er_step_s": er_step, "er_samples_per_s": 10 / er_step, "split_s": split}
            rows.append(row)
            parts = ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in split.items())
            print(f"{model_name:>17} rot={rot:>2}: {step:.3f} s/step = {10 / step:7.1f} samples/s "
                  f"(wall {statistics.median(wall):.3f} s) "
                  f"({images} backbone images/step); ER {10 / er_step:.0f} samples/s\n"
                  f"{'':>19} split: {parts}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
