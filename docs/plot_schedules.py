"""Draw the LR schedules of ``continual.strategies.schedules`` over a 3-task stream.

Regenerate the picture in docs/schedules.md with:  python docs/plot_schedules.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from continual.strategies.schedules import (  # noqa: E402
    ConstantSchedule,
    CosineSchedule,
    InfiniteSchedule,
    RepeatedCosineSchedule,
    WSDSchedule,
)

TASKS = [1000, 1000, 1000]
OUT = Path(__file__).resolve().parent / "img" / "schedules.png"


def main() -> None:
    total = sum(TASKS)
    steps = range(total)
    curves = {
        "constant (eta_const, 30-step warm-up)": ConstantSchedule(warmup_steps=30),
        "cosine (once)": CosineSchedule(task_steps=TASKS),
        "repeated cosine (re-warm per task)": RepeatedCosineSchedule(task_steps=TASKS),
        "WSD per task (1-sqrt decay, 20%)": WSDSchedule(task_steps=TASKS),
        "infinite, cosine cool-down": InfiniteSchedule(task_steps=TASKS),
        "infinite, inverse-sqrt cool-down (alpha 10)": InfiniteSchedule(
            task_steps=TASKS, cooldown="inv_sqrt"),
    }
    fig, axes = plt.subplots(len(curves), 1, figsize=(9, 11), sharex=True)
    for ax, (name, sched) in zip(axes, curves.items()):
        ax.plot(list(steps), [sched.lr(s) * 1e4 for s in steps], lw=1.6)
        if isinstance(sched, InfiniteSchedule):
            start = 0
            for k, n in enumerate(TASKS):
                start += n
                m = sched.anneal_steps(k)
                xs = list(range(start - m, start))
                ax.plot(xs, [sched.anneal_lr(i, m) * 1e4 for i in range(m)], "--", lw=1.4,
                        color="tab:red", label="anneal branch" if k == 0 else None)
            ax.legend(loc="upper right", fontsize=8)
        for b in range(1, len(TASKS)):
            ax.axvline(sum(TASKS[:b]), color="grey", lw=0.8, ls=":")
        ax.set_title(name, fontsize=10, loc="left")
        ax.set_ylabel("lr x 1e4")
        ax.set_ylim(0, 3.3)
    axes[-1].set_xlabel("step (task boundaries dotted)")
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
