"""TAME's selector: a network x -> expert id, trained on a per-class uniform sample of
(x, expert active when x was seen); at inference it routes each input to an expert.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from continual.memory.buffers import ReservoirBuffer
from continual.strategies.tame.experts import fresh_copy
from continual.types import ConfigError


class ExpertSelector:
    """Routes inputs to experts: a copy of the template body with one output per expert.

    Its buffer keeps, per class, a uniform random sample (reservoir, ``capacity //
    n_classes`` each) of (x, id of the expert active when x was seen).
    """

    def __init__(
        self, template: nn.Module, n_classes: int, capacity: int = 5000, seed: int = 0,
    ) -> None:
        if not hasattr(template, "head") or not hasattr(template, "feature_dim"):
            raise ConfigError(
                f"TAME's selector needs a Classifier with .head and .feature_dim, got "
                f"{type(template).__name__}; build the model with continual.models.build_model"
            )
        per_class = int(capacity) // int(n_classes)
        if per_class < 1:
            raise ConfigError(
                f"selector capacity {capacity} gives no slot per class for {n_classes} classes; "
                f"use selector_capacity >= {n_classes}"
            )
        self.device = next(template.parameters()).device
        self.model = fresh_copy(template).to(self.device)
        self.model.head = nn.Linear(template.feature_dim, 1).to(self.device)
        self.n_experts = 1
        self.buffers = [
            ReservoirBuffer(per_class, device=self.device, seed=seed + 104729 * (c + 1))
            for c in range(int(n_classes))
        ]

    def grow(self, n_experts: int) -> None:
        """Widen the output layer to ``n_experts``, keeping the rows already learnt."""
        if n_experts <= self.n_experts:
            return
        old = self.model.head
        new = nn.Linear(old.in_features, n_experts).to(self.device)
        with torch.no_grad():
            new.weight[: old.out_features] = old.weight
            new.bias[: old.out_features] = old.bias
        self.model.head, self.n_experts = new, n_experts

    def add(self, x: torch.Tensor, y: torch.Tensor, expert: int) -> None:
        """Offer inputs x: (B, ...) with class labels y: (B,) seen while ``expert`` was active.
        The batch is split by class on a host copy of y (one wait on a GPU) and gathered on the
        device with host-made indices, so a GPU does not wait once per class (a boolean mask on
        the device would)."""
        y_host = y.detach().cpu()
        for c in torch.unique(y_host).tolist():
            idx = (y_host == c).nonzero().squeeze(1)
            rows = x.index_select(0, idx.to(x.device, non_blocking=True))
            tags = torch.full((idx.numel(),), int(expert), dtype=y.dtype, device=y.device)
            self.buffers[int(c)].add(rows, tags)

    def items(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All stored (x, expert id)."""
        parts = [b.items() for b in self.buffers if len(b)]
        if not parts:
            empty = torch.empty(0, dtype=torch.long, device=self.device)
            return empty.float(), empty
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "n_experts": self.n_experts,
                "buffers": [b.state_dict() for b in self.buffers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.grow(state["n_experts"])
        self.model.load_state_dict(state["model"])
        for b, s in zip(self.buffers, state["buffers"]):
            b.load_state_dict(s)
