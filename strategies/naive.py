"""Naive fine-tuning: train on each incoming batch and nothing else (the lower bound)."""

from __future__ import annotations

from typing import Any

from continual.strategies.base import SupervisedStrategy
from continual.types import Batch


class Naive(SupervisedStrategy):
    """Fine-tuning with cross-entropy on the incoming batch only."""

    def observe(self, batch: Batch) -> dict[str, Any]:
        return self.fit_batch(batch.x, batch.y, n_online=batch.x.shape[0])
