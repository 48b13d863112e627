"""A scripted self-scoring stream and learners for tests of the engine around language streams.

``ScriptedLossStream``: two tasks of two steps each (batches of 2 rows of 3 tokens); eval row
i returns ``losses[i]`` (lower is better), whatever the model does. ``Idle`` trains nothing;
``Linear`` holds a real optimiser (so a schedule has an lr to drive) and can be deep-copied.
"""

from __future__ import annotations

import torch

from continual.streams.text import TextStream, TextTask
from continual.types import Batch, EvalSet, Segment, Strategy


class ScriptedLossStream(TextStream):
    """Two tasks; eval row i returns ``losses[i]`` (lower is better), whatever the model does."""

    def __init__(self, losses=((1.0, 1.0),) * 16):
        super().__init__("scripted", batch_size=2, seed=0)
        self.losses = iter(losses)
        self.tasks = [TextTask(0, "a"), TextTask(1, "b")]
        self.segments = [Segment(0, 4, 0), Segment(4, 8, 1)]
        self.eval_sets = [EvalSet("loss/a", "loss", False, 0), EvalSet("loss/b", "loss", False, 1)]

    def batches(self, segment, first_step=0, start=None):
        pos, step = segment.start if start is None else start, first_step
        while pos < segment.end:
            yield Batch(x=torch.zeros(2, 3, dtype=torch.long), y=torch.zeros(2, 3, dtype=torch.long), step=step)
            pos, step = pos + 2, step + 1

    def score_eval_sets(self, strategy):
        return list(next(self.losses)), None


class Idle(Strategy):
    def observe(self, batch):
        return {"loss": 1.0}


class Linear(Strategy):
    """One weight and plain SGD at ``lr``: enough for a schedule and an anneal branch to act on."""

    def __init__(self, lr: float = 0.1):
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.opt = torch.optim.SGD([self.w], lr=lr)

    def observe(self, batch):
        loss = (self.w - 1.0).pow(2).sum()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach()}
