"""Experience replay (Chaudhry et al. 2019, "On Tiny Episodic Memories in Continual Learning").

Each step trains on the incoming batch concatenated with a batch drawn from a
replay buffer, then offers the incoming batch to the buffer: ``buffer_kind`` names its
eviction policy, ``reservoir`` (default) or ``gdumb`` (``continual.memory.buffers``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from continual.memory.buffers import make_buffer
from continual.strategies.base import SupervisedStrategy
from continual.types import Batch, ConfigError


class ER(SupervisedStrategy):
    """Experience replay with a fixed-capacity buffer of raw inputs."""

    def __init__(
        self,
        model: nn.Module,
        buffer_size: int = 200,
        replay_batch_size: int = 10,
        buffer_kind: str = "reservoir",
        seed: int = 0,
        **train_options: Any,
    ) -> None:
        super().__init__(model, **train_options)
        if replay_batch_size < 0:
            raise ConfigError(f"replay_batch_size must be >= 0, got {replay_batch_size}")
        self.replay_batch_size = replay_batch_size
        self.buffer = make_buffer(buffer_kind, buffer_size, device=self.device, seed=seed)

    def observe(self, batch: Batch) -> dict[str, Any]:
        x, y = batch.x, batch.y
        if len(self.buffer):
            bx, by = self.buffer.sample(self.replay_batch_size)
            x, y = torch.cat([x, bx]), torch.cat([y, by])
        out = self.fit_batch(x, y, n_online=batch.x.shape[0])
        self.buffer.add(batch.x, batch.y)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.buffer.load_state_dict(state["buffer"])
