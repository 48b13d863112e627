"""Shared mechanics of gradient-based strategies: one place for the optimiser options.

A strategy built on ``SupervisedStrategy`` gets ``self.model``, ``self.optimizer``,
``self.device``, ``predict`` and ``step(loss)``; its ``observe`` says only what is
special about it.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from continual.types import ConfigError, NonFiniteLoss, Strategy

OPTIMIZERS = ("sgd", "adam", "adamw")


def make_optimizer(
    params, optimizer: str = "sgd", lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """Build a torch optimiser by name: ``sgd``, ``adam`` or ``adamw``."""
    if lr <= 0:
        raise ConfigError(f"learning rate must be positive, got lr={lr}")
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {optimizer!r}; choose one of {list(OPTIMIZERS)}")


def snapshot(state: Any) -> Any:
    """A deep copy of a (nested) state dict that shares no tensor with its source.

    ``nn.Module.state_dict()`` and ``Optimizer.state_dict()`` return the live tensors, and
    ``Optimizer.load_state_dict`` keeps same-device tensors of its argument: without a copy, a
    state taken now changes as training goes on, and two strategies loaded from one state
    update the same optimiser moments. ``state_dict()`` returns ``snapshot(...)`` and
    ``load_state_dict()`` loads from one.
    """
    return copy.deepcopy(state)


class SupervisedStrategy(Strategy):
    """A model trained by cross-entropy with one optimiser (the common training options)."""

    def __init__(
        self,
        model: nn.Module,
        lr: float = 0.01,
        optimizer: str = "sgd",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.optimizer = make_optimizer(model.parameters(), optimizer, lr, momentum, weight_decay)

    #: Check every loss before its update (``loss.item()``: one host-device sync per step), so
    #: that a bad batch can be skipped (``on_nan=skip``) before it corrupts the weights. The
    #: runner turns this off under ``on_nan=stop``: there the losses it logs are checked at
    #: every log window instead, before any eval row or checkpoint is written, with no sync per step.
    check_each_step: bool = True

    def step(self, loss: torch.Tensor) -> float | torch.Tensor:
        """One optimiser step on ``loss``; returns its value (a float when checked, else the
        detached 0-d tensor, read lazily). Raises NonFiniteLoss (model untouched) on NaN/Inf
        when ``check_each_step``."""
        if self.check_each_step:
            value = loss.item()
            if not math.isfinite(value):
                raise NonFiniteLoss(f"loss is {value}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return value if self.check_each_step else loss.detach()

    def fit_batch(self, x: torch.Tensor, y: torch.Tensor, n_online: int = 0) -> dict[str, Any]:
        """Forward, cross-entropy, step on (x, y).

        The first ``n_online`` rows are the incoming batch: their pre-step predictions are
        counted as ``online_correct`` (test-then-train at no extra cost).
        """
        if not self.model.training:  # Module.train() walks every submodule: skip when already set
            self.model.train()
        logits = self.model(x)
        out: dict[str, Any] = {"loss": self.step(F.cross_entropy(logits, y))}
        if n_online:
            out["online_correct"] = (logits[:n_online].detach().argmax(1) == y[:n_online]).sum()
        return out

    @torch.inference_mode()
    def predict(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        if self.model.training:
            self.model.eval()
        return self.model(x)

    def state_dict(self) -> dict[str, Any]:
        """Model and optimiser state: a copy, unchanged by later training."""
        return snapshot({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from ``state`` (keeps no reference to it: the model copies its weights in)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(snapshot(state["optimizer"]))
