"""Joint training, the upper bound: every step trains on the union of all data seen so far.

Departure from offline joint training (one model fit on all tasks' data at once):
in a stream the union grows, so each step draws a batch uniformly from everything
seen up to now (the incoming batch included); with ``refit_epochs`` > 0 it also
re-trains that many epochs on the union at each visible task end.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from continual.strategies.base import SupervisedStrategy
from continual.types import Batch, TaskInfo


class Joint(SupervisedStrategy):
    """Trains i.i.d. on the union of the tasks seen so far (unbounded memory)."""

    def __init__(self, model: nn.Module, refit_epochs: int = 0, seed: int = 0, **train_options: Any) -> None:
        super().__init__(model, **train_options)
        self.refit_epochs = refit_epochs
        self.x: torch.Tensor | None = None  # storage grown by doubling; rows [0, n) are used
        self.y: torch.Tensor | None = None
        self.n = 0
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
        self._append(batch.x, batch.y)
        with torch.no_grad():
            self.model.eval()
            online = (self.model(batch.x).argmax(1) == batch.y).sum()
        x, y = self._union()
        idx = torch.randint(self.n, (batch.y.shape[0],), generator=self.generator).to(x.device)
        out = self.fit_batch(x[idx], y[idx])
        out["online_correct"] = online
        return out

    def on_task_end(self, info: TaskInfo) -> None:
        x, y = self._union()
        for _ in range(self.refit_epochs):
            perm = torch.randperm(self.n, generator=self.generator).to(x.device)
            for i in range(0, self.n, 128):
                self.fit_batch(x[perm[i : i + 128]], y[perm[i : i + 128]])

    def state_dict(self) -> dict[str, Any]:
        x, y = self._union() if self.n else (None, None)
        return {**super().state_dict(), "x": x, "y": y, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.x = self.y = None
        self.n = 0
        if state["x"] is not None:
            self._append(state["x"].to(self.device), state["y"].to(self.device))
        self.generator.set_state(state["generator"])
