"""A network's parameters: how many there are, and pruning some of them to zero.

One place for every strategy and the runner: ``count_parameters`` (summary.json ``params``,
``trainable_params``; TAME's held and deployed counts), global L1 pruning with
``torch.nn.utils.prune`` (``prune_to_sparsity``, ``sparsity``), and the mask bookkeeping a
pruned network needs to keep training pruned, be stored dense, or be loaded back
(``mask_zeros``, ``fold_masks``, ``pruned_like``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import prune

from continual.errors import ConfigError


def count_parameters(model: nn.Module, nonzero: bool = False, trainable: bool = False) -> int:
    """Number of parameters of ``model``, each shared tensor once.

    nonzero: count only the nonzero entries of the effective tensors (a pruned weight counts
        its unmasked values: what a sparse storage would hold).
    trainable: count only parameters with ``requires_grad``.
    """
    if not nonzero:
        return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)
    total = 0
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if trainable and not p.requires_grad:
                continue
            base = name[:-5] if name.endswith("_orig") else name
            total += int((getattr(module, base) != 0).sum())
    return total


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The (module, 'weight') pairs global pruning acts on: every Linear and Conv weight."""
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d)
    return [(m, "weight") for m in model.modules() if isinstance(m, kinds)]


def check_share(share: float) -> float:
    """``share`` as a float if it is a pruning share in [0, 1), else ConfigError."""
    if not 0.0 <= share < 1.0:
        raise ConfigError(f"pruning share must lie in [0, 1), got {share}")
    return float(share)


def prune_to_sparsity(model: nn.Module, share: float) -> None:
    """Global L1 unstructured pruning so that ``share`` of all Linear/Conv weights are zero.

    Idempotent: an existing mask is folded in first, so pruning a pruned model to the same
    share changes nothing and pruning to a larger share removes only further weights. The
    masks stay as forward hooks (``weight_orig`` * ``weight_mask``), so fine-tuning keeps
    the pruned weights at zero.
    """
    check_share(share)
    params = prunable(model)
    if not params:
        raise ConfigError(f"{type(model).__name__} has no Linear or Conv weights to prune")
    for module, name in params:
        if prune.is_pruned(module) and hasattr(module, name + "_mask"):
            prune.remove(module, name)
    n = sum(getattr(m, name).numel() for m, name in params)
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured,
                              amount=int(round(share * n)))


def sparsity(model: nn.Module) -> float:
    """Share of zeros among the prunable (Linear/Conv) weights, masks applied."""
    params = prunable(model)
    zeros = sum(int((getattr(m, name) == 0).sum()) for m, name in params)
    return zeros / max(1, sum(getattr(m, name).numel() for m, name in params))


def fold_masks(model: nn.Module) -> None:
    """Make pruning permanent: each masked weight becomes one plain tensor with its zeros
    (drops ``weight_orig`` and ``weight_mask``, a third of the memory of the masked form)."""
    for module, name in prunable(model):
        if hasattr(module, name + "_mask"):
            prune.remove(module, name)


def mask_zeros(model: nn.Module) -> None:
    """Put a pruning mask on every zero weight, so training keeps a pruned network pruned."""
    for module, name in prunable(model):
        if not hasattr(module, name + "_mask"):
            prune.custom_from_mask(module, name, getattr(module, name) != 0)


def mask_like(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give ``model`` an (identity) pruning mask wherever ``state`` has one, so it loads."""
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if f"{prefix}weight_mask" in state and not hasattr(module, "weight_mask"):
            prune.identity(module, "weight")


def pruned_like(template: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Rebuild a (possibly pruned) copy of ``template`` from its state dict.

    The head is resized to the state's (a deployed selector may predate a grown head).
    """
    model = copy.deepcopy(template)
    head = state.get("head.weight", state.get("head.weight_orig"))
    if head is not None and hasattr(model, "head") and model.head.weight.shape != head.shape:
        # on the template's device: the state may come from a checkpoint loaded on the CPU
        model.head = nn.Linear(head.shape[1], head.shape[0]).to(next(template.parameters()).device)
    mask_like(model, state)
    model.load_state_dict(state)
    return model
