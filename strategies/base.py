"""Shared mechanics of gradient-based strategies: the optimiser options and the one guarded step.

Every gradient step of a built-in strategy goes through ``guarded_step``: a NaN or Inf loss
raises ``NonFiniteLoss`` before any parameter or optimiser state changes, so the runner can
skip the batch (``on_nan=skip``) or stop (``on_nan=stop``). ``GradientStrategy`` carries the
policy (``check_each_step``, which the runner turns off under ``on_nan=stop``) and
``train_epochs``, the guarded loop for training inside hooks (task-end refits, selectors;
TAME's SGD form of it is ``continual.strategies.tame.training.fit``).

A strategy built on ``SupervisedStrategy`` gets ``self.model``, ``self.optimizer``,
``self.device``, ``predict`` and ``step(loss)``; its ``observe`` says only what is
special about it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from torch.autograd.profiler import record_function
from torch.nn import functional as F

from continual.types import ConfigError, NonFiniteLoss, Strategy

OPTIMIZERS = ("sgd", "adam", "adamw", "adafactor")


def require_at_least(minimum: float, owner: str, **values: float) -> None:
    """Refuse option values below ``minimum`` at construction, with the option's name
    (``require_at_least(1, "OnPro", proj_dim=proj_dim)``), rather than deep inside a step."""
    for name, value in values.items():
        if value < minimum:
            raise ConfigError(f"{owner}: {name} must be at least {minimum}, got {value}")


def make_optimizer(
    params, optimizer: str = "sgd", lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """Build an optimiser by name: ``sgd``, ``adam``, ``adamw`` or ``adafactor``.

    ``adafactor`` is transformers' ``Adafactor`` at a fixed ``lr`` (``scale_parameter=False,
    relative_step=False, warmup_init=False``, as the official CKL code of Jang et al. 2022
    builds it), so the run's schedule drives it like any other; no first moment (``momentum``
    must be 0; ``betas`` are ignored), ``weight_decay`` is passed through.
    """
    if lr <= 0:
        raise ConfigError(f"learning rate must be positive, got lr={lr}")
    require_at_least(0, f"optimizer {optimizer}", momentum=momentum, weight_decay=weight_decay)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    if optimizer == "adafactor":
        if momentum:
            raise ConfigError(f"optimizer adafactor takes no momentum (it keeps no first moment here), "
                              f"got momentum={momentum}; leave it at 0 or use sgd/adam")
        try:
            from transformers.optimization import Adafactor
        except ImportError as err:
            raise ConfigError("optimizer adafactor needs transformers: pip install -e '.[lm]'") from err

        return Adafactor(params, lr=lr, weight_decay=weight_decay, scale_parameter=False,
                         relative_step=False, warmup_init=False)
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


def finite_loss_value(loss: torch.Tensor, where: str = "") -> float:
    """``loss.item()`` (one host-device sync), or NonFiniteLoss when it is NaN or Inf.

    where: what produced the loss, for the message (e.g. "Joint's task-end refit").
    """
    value = loss.item()
    if not math.isfinite(value):
        raise NonFiniteLoss(f"loss is {value}" + (f" in {where}" if where else ""))
    return value


_NULL_CONTEXT = nullcontext()  # reusable and reentrant: guarded_step runs once per step


def _no_autocast(loss: torch.Tensor) -> Any:
    """Autocast off for the backward pass (torch's advice: autocast wraps the forward pass
    and the loss only; backward ops take the dtypes their forward ops used)."""
    device_type = loss.device.type
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return _NULL_CONTEXT


def guarded_step(
    optimizer: torch.optim.Optimizer, loss: torch.Tensor, check: bool = True,
    clip_grad_norm: float | None = None, label: str | None = None,
) -> float | torch.Tensor:
    """The one optimiser step of every gradient strategy: zero_grad, backward, (clip), step.

    check: read the loss first (one sync) and raise NonFiniteLoss on NaN/Inf before any
        gradient, parameter or optimiser state changes; returns the float. Unchecked, the
        step is taken and the detached 0-d loss is returned (read lazily by the runner).
    clip_grad_norm: clip the gradients of the optimiser's parameters to this total norm.
    label: ``record_function`` prefix for profiles (``<label>.backward``, ``<label>.optimizer``).
    """
    value = finite_loss_value(loss) if check else loss.detach()
    optimizer.zero_grad(set_to_none=True)
    with record_function(f"{label}.backward") if label else _NULL_CONTEXT, _no_autocast(loss):
        loss.backward()
    if clip_grad_norm:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
    with record_function(f"{label}.optimizer") if label else _NULL_CONTEXT:
        optimizer.step()
    return value


def train_epochs(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
    epochs: int, batch_size: int, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    generator: torch.Generator | None = None, skip_nonfinite: bool = True, where: str = "",
) -> tuple[float, int]:
    """``epochs`` shuffled passes over (x: (N, ...), y: (N,)) in minibatches, each a checked
    ``guarded_step`` on ``loss_fn(model(x_b), y_b)``.

    A minibatch with a NaN/Inf loss is skipped (nothing changes) when ``skip_nonfinite``,
    else NonFiniteLoss is raised naming ``where``. Returns (the last epoch's mean loss over
    the minibatches taken, nan when none; the number of minibatches skipped).
    """
    if x.shape[0] == 0 or epochs <= 0:
        return math.nan, 0
    model.train()
    skipped = 0
    mean = math.nan
    for _ in range(int(epochs)):
        perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
        total, seen = 0.0, 0
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i : i + batch_size]
            try:
                total += guarded_step(optimizer, loss_fn(model(x[idx]), y[idx])) * idx.numel()
            except NonFiniteLoss as err:
                if not skip_nonfinite:
                    raise NonFiniteLoss(f"{err} in {where or 'training'}") from None
                skipped += 1
                continue
            seen += idx.numel()
        mean = total / seen if seen else math.nan
    return mean, skipped


class GradientStrategy(Strategy):
    """A strategy trained by gradient steps: ``step`` is the guarded step, with the NaN policy.

    ``check_each_step`` (True unless the runner runs under ``on_nan=stop``): every step's loss
    is read before its update (one host-device sync per step), and a NaN/Inf loss raises
    NonFiniteLoss with nothing changed, so the runner skips the batch. Under ``on_nan=stop``
    the runner sets it False: steps are not checked one by one and the runner stops at the
    next log window from the losses ``observe`` returns, before any eval row or checkpoint.

    Training inside hooks (``on_task_end``, ``finalize``, ``prepare_eval``) returns no loss
    to the runner, so it is always checked (``train_epochs``): with ``check_each_step`` a bad
    minibatch is skipped and counted in ``skipped_nonfinite_hook_steps`` (a strategy that
    trains in hooks reports it in its ``summary()`` and keeps it in its state), without it
    NonFiniteLoss is raised.
    """

    check_each_step: bool = True
    skipped_nonfinite_hook_steps: int = 0

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer | None = None,
             label: str | None = None) -> float | torch.Tensor:
        """``guarded_step`` on ``self.optimizer`` (or ``optimizer``); see ``check_each_step``."""
        return guarded_step(self.optimizer if optimizer is None else optimizer, loss,
                            self.check_each_step, label=label)

    def train_in_hook(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                      y: torch.Tensor, epochs: int, batch_size: int,
                      loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      generator: torch.Generator | None, where: str) -> float:
        """``train_epochs`` with this strategy's NaN policy; returns the last epoch's mean loss."""
        mean, skipped = train_epochs(model, optimizer, x, y, epochs, batch_size, loss_fn,
                                     generator, skip_nonfinite=self.check_each_step, where=where)
        self.skipped_nonfinite_hook_steps += skipped
        return mean


class SupervisedStrategy(GradientStrategy):
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

    def fit_batch(self, x: torch.Tensor, y: torch.Tensor, n_online: int = 0) -> dict[str, Any]:
        """Forward, cross-entropy, guarded step on (x, y).

        The first ``n_online`` rows are the incoming batch: their pre-step predictions are
        counted as ``online_correct`` (test-then-train at no extra cost).
        """
        if not self.model.training:  # Module.train() walks every submodule: skip when already set
            self.model.train()
        logits = self.model(x)
        out: dict[str, Any] = {"loss": self.step(F.cross_entropy(logits, y))}
        if n_online:
            if n_online < y.shape[0]:  # replayed rows follow the incoming batch
                logits, y = logits[:n_online], y[:n_online]
            out["online_correct"] = (logits.detach().argmax(1) == y).sum()
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
