"""TAME's supervised training outside the stream (Zhu et al.; its official code's settings):
the selector's training and the fine-tuning after pruning, SGD on a cross-entropy through a
sigmoid (the paper's network ends in one), through the guarded ``train_epochs`` loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from continual.strategies.base import make_optimizer, train_epochs


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, sigmoid: bool = False) -> torch.Tensor:
    """Mean cross-entropy on logits (B, C); through a sigmoid first when ``sigmoid`` (the
    network of TAME's paper ends in one)."""
    return F.cross_entropy(torch.sigmoid(logits) if sigmoid else logits, y)


def fit_optimizer(model: nn.Module, lr: float, momentum: float = 0.9,
                  weight_decay: float = 5e-4) -> torch.optim.Optimizer:
    """The SGD of ``fit``: TAME's selector training and fine-tuning after pruning (its code's)."""
    return make_optimizer(model.parameters(), "sgd", lr=lr, momentum=momentum,
                          weight_decay=weight_decay)


def fit(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float,
    batch_size: int = 128,
    sigmoid: bool = True, momentum: float = 0.9, weight_decay: float = 5e-4,
    generator: torch.Generator | None = None,
) -> float:
    """Train ``model`` on (x: (N, ...), y: (N,)) for ``epochs`` shuffled passes with SGD
    (``fit_optimizer``) on ``cross_entropy`` (through a sigmoid by default, as TAME's paper).

    Used to train a selector and to fine-tune pruned networks (pruning masks stay in
    force: torch's pruning hooks recompute the masked weights every forward). Minibatches
    with a NaN/Inf loss are skipped (``train_epochs``); a strategy training in a hook uses
    ``GradientStrategy.train_in_hook`` with ``fit_optimizer`` instead, for its NaN policy.
    Returns the last epoch's mean loss (nan when there is nothing to fit).
    """
    opt = fit_optimizer(model, lr, momentum, weight_decay)
    return train_epochs(model, opt, x, y, epochs, batch_size,
                        lambda out, target: cross_entropy(out, target, sigmoid), generator)[0]
