"""K-Adapter-style parameter expansion: a chain of adapters beside chosen layers, base frozen.

Wang et al., "K-Adapter: Infusing Knowledge into Pre-Trained Models with Adapters",
Findings of ACL 2021, Sec. 3: knowledge adapters sit outside the frozen model; adapter i
reads the hidden state of model layer l_i concatenated with adapter i-1's output, and
the final representation combines the model's last hidden state with the last
adapter's output. CKL (Jang et al. 2022) uses it as parameter expansion for knowledge.

Ours, for a decoder LM: with h_l (B, T, d) the output of layer l and a_0 = 0,
    a_i = a_{i-1} + Up_i(GELU(Down_i([h_{l_i}; a_{i-1}])))     Down_i: 2d -> r, Up_i: r -> d
and the LM head reads norm(h_L) + a_last. Up_i starts at zero, so training starts at the
base model. Departure: each adapter is a position-wise bottleneck (no self-attention
inside), so it works with cached incremental generation and stays cheap on a CPU; the
paper's adapters hold two transformer layers each. Works on Llama-style
(``model.model.layers`` / ``model.model.norm``) and GPT-2-style (``transformer.h`` /
``transformer.ln_f``) models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from continual.strategies.ckl.base import LMStrategy, freeze
from continual.types import ConfigError


def decoder_layers_and_norm(model: nn.Module) -> tuple[nn.ModuleList, nn.Module]:
    """(decoder layers, final norm) of a Llama- or GPT-2-style causal LM."""
    core = getattr(model, "model", None) or getattr(model, "transformer", None)
    layers = getattr(core, "layers", None) or getattr(core, "h", None)
    norm = getattr(core, "norm", None) or getattr(core, "ln_f", None)
    if layers is None or norm is None:
        raise ConfigError(f"K-Adapter cannot find decoder layers and final norm in "
                          f"{type(model).__name__}; it supports Llama- and GPT-2-style models")
    return layers, norm


class KnowledgeAdapters(nn.Module):
    """The adapter chain; ``forward`` is driven by hooks on the frozen model."""

    def __init__(self, d_model: int, layer_ids: Sequence[int], adapter_dim: int) -> None:
        super().__init__()
        self.layer_ids = list(layer_ids)
        self.down = nn.ModuleList(nn.Linear(2 * d_model, adapter_dim) for _ in self.layer_ids)
        self.up = nn.ModuleList(nn.Linear(adapter_dim, d_model) for _ in self.layer_ids)
        for up in self.up:
            nn.init.zeros_(up.weight)
            nn.init.zeros_(up.bias)
        self.state: torch.Tensor | None = None

    def read(self, i: int, hidden: torch.Tensor) -> None:
        """Adapter i reads layer l_i's output hidden (B, T, d) and updates the chain state."""
        prev = self.state if self.state is not None else torch.zeros_like(hidden)
        z = F.gelu(self.down[i](torch.cat([hidden, prev], dim=-1)))
        self.state = prev + self.up[i](z)

    def emit(self, final_hidden: torch.Tensor) -> torch.Tensor:
        """Add the chain's output to the normalised last hidden state; reset the chain."""
        out = final_hidden if self.state is None else final_hidden + self.state
        self.state = None
        return out


class KAdapter(LMStrategy):
    """Train only the knowledge adapters beside layers ``layer_ids`` (default: first,
    middle, last, as K-Adapter's 0 / 11 / 23 of 24) of a frozen LM."""

    def __init__(self, model: nn.Module, tokenizer: Any, layer_ids: Sequence[int] | None = None,
                 adapter_dim: int = 64, lr: float = 1e-3, **kwargs: Any) -> None:
        self.layer_ids_arg, self.adapter_dim = layer_ids, adapter_dim
        super().__init__(model, tokenizer, lr=lr, **kwargs)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        freeze(model)
        layers, norm = decoder_layers_and_norm(model)
        n = len(layers)
        ids = list(self.layer_ids_arg) if self.layer_ids_arg is not None else \
            sorted({0, n // 2, n - 1})
        if any(not 0 <= i < n for i in ids):
            raise ConfigError(f"layer_ids {ids} out of range for a model with {n} layers")
        d = model.config.hidden_size
        self.adapters = KnowledgeAdapters(d, ids, self.adapter_dim).to(
            next(model.parameters()).device)
        model.add_module("knowledge_adapters", self.adapters)  # saved with the model
        for i, lid in enumerate(ids):
            layers[lid].register_forward_hook(self._layer_hook(i))
        norm.register_forward_hook(lambda mod, inp, out: self.adapters.emit(out))
        return model

    def _layer_hook(self, i: int):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            self.adapters.read(i, hidden)
        return hook

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.adapters.parameters())
