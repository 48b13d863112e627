"""Joint training, the upper bound: the model is trained on the union of all data seen so far.

The literature's joint (or "offline", "cumulative") baseline trains on all tasks' data
together, i.i.d., instead of one task after another: Avalanche's ``Cumulative`` ("at each
experience, train model with data from all previous experiences and current experience")
and ``JointTraining`` (offline training on the entire stream, "an 'offline' upper bound");
Mammoth's ``joint`` (``models/joint.py``) re-initialises the network after the last task and
trains it for the run's number of epochs on all tasks' data.

``Joint`` (``strategy=joint``) does the cumulative version, so that every task-end row of the
score matrix is an upper bound for what was seen up to then, not only the last one:

- each step trains on a batch of the incoming batch's size drawn uniformly from everything
  seen so far (the incoming batch included);
- at each visible task end it refits on the union for ``refit_epochs`` shuffled passes of
  ``refit_batch_size`` (default: the stream's batch size). The union keeps one copy of a
  sample per pass the stream made over it, so ``refit_epochs=1`` gives the union as many
  passes as the stream gave each task. After the last task this is joint training on all
  tasks' data, started from the cumulatively trained weights rather than from scratch
  (Mammoth re-initialises), which only helps it.
- on streams with hidden boundaries the one refit happens at the end of the stream
  (``finalize``), so the final row is the upper bound there too.

``refit_epochs=0`` (``strategy=joint_equal_steps``) is the equal-compute variant: the same
number of steps of the same size as the other strategies, drawn from the union. That is not
an upper bound: on Split-MNIST with batches of 10 it scores below ER (README sweep).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from continual.strategies.base import SupervisedStrategy
from continual.types import Batch, ConfigError, NonFiniteLoss, TaskInfo


class Joint(SupervisedStrategy):
    """Trains i.i.d. on the union of the data seen so far (unbounded memory).

    refit_epochs: passes over the union at each task end (0: none, the equal-steps variant).
    refit_batch_size: minibatch size of the refit (None: the size of the incoming batches).
    """

    def __init__(self, model: nn.Module, refit_epochs: int = 1, refit_batch_size: int | None = None,
                 seed: int = 0, **train_options: Any) -> None:
        super().__init__(model, **train_options)
        if refit_epochs < 0:
            raise ConfigError(f"refit_epochs must be >= 0 (0: no refit), got {refit_epochs}")
        if refit_batch_size is not None and refit_batch_size < 1:
            raise ConfigError(f"refit_batch_size must be >= 1 or null (the stream's batch size), "
                              f"got {refit_batch_size}")
        self.refit_epochs, self.refit_batch_size = int(refit_epochs), refit_batch_size
        self.x: torch.Tensor | None = None  # storage grown by doubling; rows [0, n) are used
        self.y: torch.Tensor | None = None
        self.n = 0
        self.n_refitted = 0  # size of the union at the last refit
        self.batch_size = 0  # the largest incoming batch (the default refit minibatch)
        self.generator = torch.Generator().manual_seed(seed)

    def _append(self, x: torch.Tensor, y: torch.Tensor) -> None:
        b = y.shape[0]
        if self.x is None or self.n + b > self.x.shape[0]:
            cap = max(1024, 2 * (self.n + b))
            new_x = torch.empty((cap, *x.shape[1:]), dtype=x.dtype, device=x.device)
            new_y = torch.empty((cap,), dtype=y.dtype, device=y.device)
            if self.n:
                new_x[: self.n], new_y[: self.n] = self.x[: self.n], self.y[: self.n]
            self.x, self.y = new_x, new_y
        self.x[self.n : self.n + b], self.y[self.n : self.n + b] = x.detach(), y.detach()
        self.n += b

    def _union(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[: self.n], self.y[: self.n]

    def observe(self, batch: Batch) -> dict[str, Any]:
        b = batch.y.shape[0]
        self.batch_size = max(self.batch_size, b)  # a segment's last batch may be short
        self._append(batch.x, batch.y)
        with torch.no_grad():
            self.model.eval()
            online = (self.model(batch.x).argmax(1) == batch.y).sum()
        x, y = self._union()
        # drawn on the host (the same draws on every device), copied without blocking
        idx = torch.randint(self.n, (b,), generator=self.generator).to(x.device, non_blocking=True)
        try:
            out = self.fit_batch(x[idx], y[idx])
        except NonFiniteLoss:
            self.n -= b  # a skipped batch does not join the union
            raise
        out["online_correct"] = online
        return out

    def refit(self) -> None:
        """``refit_epochs`` passes over the union (guarded steps), if it grew since the last."""
        if not self.refit_epochs or self.n == self.n_refitted:
            return
        x, y = self._union()
        self.train_in_hook(self.model, self.optimizer, x, y, self.refit_epochs,
                           self.refit_batch_size or self.batch_size or 128, F.cross_entropy,
                           self.generator, where="Joint's refit on the union")
        self.n_refitted = self.n

    def on_task_end(self, info: TaskInfo) -> None:
        self.refit()

    def finalize(self) -> None:
        """End of the stream: refit if data arrived since the last task end (hidden boundaries)."""
        self.refit()

    def summary(self) -> dict[str, Any]:
        return {"skipped_nonfinite_hook_steps": self.skipped_nonfinite_hook_steps}

    def state_dict(self) -> dict[str, Any]:
        x, y = self._union() if self.n else (None, None)
        return {**super().state_dict(), "x": x, "y": y, "generator": self.generator.get_state(),
                "n_refitted": self.n_refitted, "batch_size": self.batch_size,
                "skipped_nonfinite_hook_steps": self.skipped_nonfinite_hook_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.x = self.y = None
        self.n = 0
        if state["x"] is not None:
            self._append(state["x"].to(self.device), state["y"].to(self.device))
        self.generator.set_state(state["generator"])
        # checkpoints written before the refit bookkeeping: treat the union as refitted
        self.n_refitted = int(state.get("n_refitted", self.n))
        self.batch_size = int(state.get("batch_size", 0))
        self.skipped_nonfinite_hook_steps = int(state.get("skipped_nonfinite_hook_steps", 0))
