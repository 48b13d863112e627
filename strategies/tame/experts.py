"""TAME's experts: the pool of networks, each with its optimiser, loss statistics, switch
detector and pruning buffer; spawning, scoring a batch, finding the first expert that fits.

Zhu et al., TAME, CVPR-W 2024, Sec. 3; departures are listed in ``continual.strategies.tame.strategy``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from continual.memory.buffers import ReservoirBuffer
from continual.models.parameters import count_parameters, fold_masks, mask_like, prunable
from continual.strategies.base import finite_loss_value, make_optimizer
from continual.strategies.tame.detector import LossTracker, RiverDetector, ThresholdDetector
from continual.strategies.tame.training import cross_entropy
from continual.types import ConfigError, NonFiniteLoss

DECISION_STATISTICS = ("mean", "median")


def batch_loss(logits: torch.Tensor, y: torch.Tensor, sigmoid: bool, statistic: str = "mean") -> float:
    """A batch's loss as switch decisions read it, from logits (B, C) and labels (B,): the mean
    cross-entropy (the paper), or the median of the per-sample cross-entropies (the lower
    middle value for an even B; beyond the paper, see ``continual.strategies.tame.strategy``):
    a task switch moves every sample's loss, one confidently wrong sample only a small batch's
    mean."""
    return float(batch_loss_tensor(logits, y, sigmoid, statistic))


def batch_loss_tensor(logits: torch.Tensor, y: torch.Tensor, sigmoid: bool,
                      statistic: str = "mean") -> torch.Tensor:
    """``batch_loss`` as a 0-d tensor on the logits' device (no host transfer)."""
    if statistic == "mean":
        return cross_entropy(logits, y, sigmoid)
    per_sample = F.cross_entropy(torch.sigmoid(logits) if sigmoid else logits, y, reduction="none")
    return per_sample.median()


def mode_dependent(model: nn.Module) -> bool:
    """Whether train and eval mode give different outputs (normalisation with running
    statistics, dropout)."""
    kinds = (nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd)
    return any(isinstance(m, kinds) for m in model.modules())


def with_head(model: nn.Module, n_outputs: int) -> nn.Module:
    """``model`` with a fresh head of ``n_outputs`` when its head has another size."""
    if model.head.out_features != n_outputs:
        device = next(model.parameters()).device
        model.head = nn.Linear(model.head.in_features, n_outputs).to(device)
    return model


def fresh_copy(template: nn.Module) -> nn.Module:
    """A deep copy of ``template`` with every parameter re-initialised (torch's global RNG)."""
    model = copy.deepcopy(template)
    for m in model.modules():
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()
    return model


def zero_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameter name -> (weight != 0) for each prunable weight: where a pruned network keeps
    its weights."""
    names = {id(p): name for name, p in model.named_parameters()}
    return {names[id(getattr(m, w))]: getattr(m, w).detach() != 0 for m, w in prunable(model)}


@dataclass
class Expert:
    """One task expert: its network, optimiser, loss statistics, detector and pruning buffer.

    masks: parameter name -> bool mask that ``keep_pruned`` applies after each step while a
    reused pruned expert trains (empty: no masks). Kept beside plain weights, not as
    ``torch.nn.utils.prune``'s reparametrisation, whose computed ``weight`` (a non-leaf
    tensor after a forward pass with gradients) makes the network impossible to deep-copy.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    tracker: LossTracker
    detector: ThresholdDetector | RiverDetector  # reads ``tracker``
    prune_buffer: ReservoirBuffer
    steps: int = 0
    pruned_at: int = -1  # ``steps`` when last pruned and fine-tuned (-1: never; masks stay)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def pruned(self) -> bool:
        return self.pruned_at >= 0

    def pruned_and_current(self) -> bool:
        """Pruned and fine-tuned, and not trained since: its deployed copy is itself."""
        return self.pruned_at == self.steps

    def mask_pruned(self) -> None:
        """Train from now on under masks of the current zeros, so a pruned expert stays pruned."""
        self.masks = zero_masks(self.model)

    @torch.no_grad()
    def keep_pruned(self) -> None:
        """Zero the masked weights again after an optimiser step (gradients, momentum and
        weight decay move them): the same network as training ``weight_orig * weight_mask``."""
        if self.masks:
            params = dict(self.model.named_parameters())
            for name, mask in self.masks.items():
                params[name].mul_(mask)


class ExpertPool:
    """The experts: spawn from a template, score a batch, find the first one that fits.

    make_tracker() -> a new expert's ``LossTracker``; make_switch_detector(tracker) -> its
    detector, reading that tracker.

    n_outputs: the experts' head size (None: the template's; the code's label setting uses
    classes per task). statistic: ``mean`` or ``median``, the batch loss every switch decision
    reads (``batch_loss``).
    """

    def __init__(
        self, template: nn.Module, make_tracker: Callable[[], LossTracker],
        make_switch_detector: Callable[[LossTracker], ThresholdDetector | RiverDetector],
        lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 5e-4,
        prune_capacity: int = 500, sigmoid: bool = True, seed: int = 0,
        n_outputs: int | None = None, statistic: str = "mean",
    ) -> None:
        if statistic not in DECISION_STATISTICS:
            raise ConfigError(f"decision_statistic must be one of {list(DECISION_STATISTICS)}, "
                              f"got {statistic!r}")
        self.statistic = statistic
        self.template = template
        self.device = next(template.parameters()).device
        self.make_tracker, self.make_detector = make_tracker, make_switch_detector
        self.optim_options = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
        self.prune_capacity, self.sigmoid, self.seed = int(prune_capacity), sigmoid, seed
        self.n_outputs = int(n_outputs or template.head.out_features)
        # train and eval mode differ (BatchNorm, dropout): decisions need their own eval pass
        self.mode_dependent = mode_dependent(template)
        self.experts: list[Expert] = []
        # the experts' optimisers, one list object for the pool's life (an LR schedule finds them)
        self.optimizers: list[torch.optim.Optimizer] = []

    def __len__(self) -> int:
        return len(self.experts)

    def __getitem__(self, i: int) -> Expert:
        return self.experts[i]

    def _make(self, model: nn.Module) -> Expert:
        i = len(self.experts)
        tracker = self.make_tracker()
        return Expert(
            model=model,
            optimizer=make_optimizer(model.parameters(), "sgd", **self.optim_options),
            tracker=tracker,
            detector=self.make_detector(tracker),
            prune_buffer=ReservoirBuffer(self.prune_capacity, device=self.device,
                                         seed=self.seed + 7919 * i),
        )

    def spawn(self) -> int:
        """Add a freshly initialised expert; return its id."""
        model = with_head(fresh_copy(self.template).to(self.device), self.n_outputs)
        self.experts.append(self._make(model))
        self.optimizers.append(self.experts[-1].optimizer)
        return len(self.experts) - 1

    @torch.no_grad()
    def loss(self, i: int, x: torch.Tensor, y: torch.Tensor) -> float:
        """Expert i's batch loss (``batch_loss``) on (x: (B, ...), y: (B,)), eval mode, no
        gradient: the one loss scale of every switch decision (the window, tau and the
        candidates)."""
        model = self.experts[i].model
        model.eval()
        return batch_loss(model(x), y, self.sigmoid, self.statistic)

    def decision_loss(self, i: int, x: torch.Tensor, y: torch.Tensor) -> float | None:
        """Expert i's eval-mode loss on the batch, taken before its step; None for a model
        that behaves the same in both modes (its training forward pass gives that value,
        ``training_values``: no second forward pass)."""
        if not self.mode_dependent:
            return None
        value = self.loss(i, x, y)
        if not math.isfinite(value):
            raise NonFiniteLoss(f"TAME's eval-mode decision loss of expert {i} is {value}")
        return value

    def training_values(self, logits: torch.Tensor, y: torch.Tensor,
                        loss: torch.Tensor) -> tuple[float, float]:
        """(the loss it trains on, its decision loss) for a model that behaves the same in both
        modes, from its training forward pass: logits (B, C), y (B,) and the mean loss, in one
        host transfer (a GPU waits once); NonFiniteLoss when the loss is NaN or Inf."""
        if self.statistic == "mean":
            value = finite_loss_value(loss)
            return value, value
        decision = batch_loss_tensor(logits.detach(), y, self.sigmoid, self.statistic)
        value, decision = torch.stack([loss.detach().float(), decision.float()]).tolist()
        if not math.isfinite(value):
            raise NonFiniteLoss(f"loss is {value}")
        return value, decision

    def first_match(
        self, x: torch.Tensor, y: torch.Tensor, exclude: int | None = None
    ) -> tuple[int, float] | None:
        """(id, loss) of the first expert, in spawn order, whose candidate smoothed loss on
        this batch is under its frozen tau (the paper's first match, not best match)."""
        for i, e in enumerate(self.experts):
            if i == exclude:
                continue
            loss = self.loss(i, x, y)
            if e.tracker.accepts(loss):
                return i, loss
        return None

    def n_parameters(self) -> int:
        return sum(count_parameters(e.model) for e in self.experts)

    def held_parameters(self) -> int:
        """Parameters the pool holds while training: nonzero ones of the pruned experts,
        all of the others (the count a sparse storage of the pruned experts would need)."""
        return sum(count_parameters(e.model, nonzero=e.pruned) for e in self.experts)

    def state_dict(self) -> dict[str, Any]:
        return {"experts": [{
            "model": e.model.state_dict(), "optimizer": e.optimizer.state_dict(),
            "tracker": e.tracker.state_dict(), "detector": e.detector.state_dict(),
            "prune_buffer": e.prune_buffer.state_dict(), "steps": e.steps,
            "pruned_at": e.pruned_at, "masks": dict(e.masks),
        } for e in self.experts]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.experts = []
        for s in state["experts"]:
            e = self._make(with_head(copy.deepcopy(self.template).to(self.device), self.n_outputs))
            # checkpoints written before the masks were explicit hold a reused pruned expert
            # in torch's pruning form (weight_orig, weight_mask): load it, then fold it
            torch_masks = any(k.endswith("weight_mask") for k in s["model"])
            mask_like(e.model, s["model"])
            e.model.load_state_dict(s["model"])
            fold_masks(e.model)
            e.masks = (zero_masks(e.model) if torch_masks else
                       {k: m.to(self.device) for k, m in s.get("masks", {}).items()})
            e.optimizer.load_state_dict(s["optimizer"])
            e.tracker.load_state_dict(s["tracker"])
            e.detector.load_state_dict(s["detector"])
            e.prune_buffer.load_state_dict(s["prune_buffer"])
            e.steps = s["steps"]
            e.pruned_at = int(s.get("pruned_at", -1))
            self.experts.append(e)
        self.optimizers[:] = [e.optimizer for e in self.experts]
