"""LabelsTrick: fine-tuning whose loss only sees the classes present in the incoming batch.

Zeno, Golan, Hoffer, Soudry, "Task Agnostic Continual Learning Using Online Variational
Bayes" (2018), the "labels trick"; the same masking is the incoming-data term of ER-ACE's
asymmetric cross-entropy (Caccia et al., "New Insights on Reducing Abrupt Representation
Change in Online Continual Learning", ICLR 2022). Logits of classes absent from the batch get
no gradient, so a new task does not push the old classes' scores down.

Departure: the paper masks to the current task's classes; we mask to the batch's classes (as
ER-ACE does), which needs no task ids and so also runs on task-free streams.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from continual.types import Batch, Strategy


class LabelsTrick(Strategy):
    """Cross-entropy over the incoming batch's classes only; SGD on one model."""

    def __init__(self, model: nn.Module, lr: float = 0.05, momentum: float = 0.0) -> None:
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)

    def observe(self, batch: Batch) -> dict[str, Any]:
        """One SGD step on x: (B, ...), y: (B,); returns the loss and the pre-step hits."""
        self.model.train()
        logits = self.model(batch.x)
        absent = torch.ones(logits.shape[1], dtype=torch.bool, device=logits.device)
        absent[batch.y.unique()] = False
        loss = F.cross_entropy(logits.masked_fill(absent, float("-inf")), batch.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        correct = (logits.detach().argmax(1) == batch.y).sum()
        return {"loss": loss.detach(), "online_correct": correct}

    @torch.inference_mode()
    def predict(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, n_classes) over all classes (the mask is a training device only)."""
        self.model.eval()
        return self.model(x)

    def state_dict(self) -> dict[str, Any]:
        """A copy: torch's state dicts hold the live tensors, which training goes on changing."""
        return copy.deepcopy({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))  # keep none of the caller's tensors
