"""K-Adapter: knowledge adapters (small transformer stacks) beside a frozen LM.

Wang et al., "K-Adapter: Infusing Knowledge into Pre-Trained Models with Adapters", Findings
of ACL 2021, Sec. 3: adapters sit outside the frozen model and read some of its layers. CKL
(Jang et al., ICLR 2022) uses it as parameter expansion; we follow the CKL official code
(joeljang/continual-knowledge-learning, ``models/Kadapter_T5.py``, class ``AdapterModel``):

    a_0 = 0,   a_i = Block_i(h_{l_i} + a_{i-1})   for the k = 2 adapter layers l = [1, 11]
    output = norm(h_L) + 0.1 * LN(a_k)

where h_l is the model's ``hidden_states[l]`` (0 = embeddings, l = output of block l), each
Block_i is one freshly initialised transformer block of the model's own architecture and
width, LN a fresh RMS norm (T5's LayerNorm), and the sum feeds the LM head. As in the
official code the adapters start random, so the model starts slightly off the base model
(by at most 0.1 of a unit-RMS vector per position).

Trainable set: the adapters plus the LM head (``train_lm_head``), as the official GPT-2 path
(see ``continual.strategies.ckl.lora``).

Departures:
- The official runs put the adapters on T5's encoder, whose output the trainable T5 decoder
  reads; a decoder-only model has neither, so the adapters' sum feeds the LM head directly.
- ``layer_ids`` default [1, 11] (of T5-large's 24 encoder blocks); a model with fewer than 11
  blocks uses [1, n].
- In cached generation the adapter blocks keep KV caches of their own, in step with the
  model's (``side_modules.SideCaches``); beam search, which reorders the model's cache, runs
  without caches (recomputing the sequence each token: same answers, slower).
- ``variant: bottleneck`` keeps this project's earlier design (position-wise MLP bottlenecks
  of width ``adapter_dim`` reading [h_l; a_{i-1}], output added unscaled, zero-initialised,
  adapters only) for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from continual.strategies.ckl.base import LMStrategy, freeze
from continual.strategies.ckl.side_modules import (
    InputCapture,
    SideCaches,
    decoder_parts,
    output_head_weights,
    small_stack,
)
from continual.types import ConfigError

OFFICIAL_LAYER_IDS = (1, 11)


def default_layer_ids(n_layers: int) -> list[int]:
    """The official [1, 11], clamped to the model's block count."""
    return [min(i, n_layers) for i in OFFICIAL_LAYER_IDS]


class TransformerAdapters(nn.Module):
    """K-Adapter as the CKL code: k transformer blocks fed h_{l_i} + a_{i-1}, fused by sum,
    output ``scale * LN(a_k)`` added to the model's final hidden state."""

    def __init__(self, config: Any, layer_ids: Sequence[int], scale: float = 0.1) -> None:
        super().__init__()
        d = config.hidden_size
        self.layer_ids, self.scale = list(layer_ids), float(scale)
        self.blocks = nn.ModuleList(
            small_stack(config, d, 1, config.num_attention_heads, config.intermediate_size
                        if getattr(config, "intermediate_size", None) else 4 * d,
                        final_norm=False)
            for _ in self.layer_ids)
        eps = getattr(config, "rms_norm_eps", None) or getattr(config, "layer_norm_epsilon", 1e-6)
        self.norm = nn.RMSNorm(d, eps=eps)
        self.hidden: dict[int, torch.Tensor] = {}
        self.capture: InputCapture | None = None
        self.caches = SideCaches(len(self.layer_ids))

    def attach(self, model: nn.Module) -> None:
        parts = decoder_parts(model)
        self.capture = InputCapture(parts.core)
        wanted = set(self.layer_ids)
        if 0 in wanted:
            parts.embed.register_forward_hook(self._store(0))
        for lid in wanted - {0}:
            parts.layers[lid - 1].register_forward_hook(self._store(lid))
        parts.norm.register_forward_hook(lambda mod, inp, out: self.fuse(out))

    def _store(self, lid: int):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            self.hidden[lid] = output[0] if isinstance(output, tuple) else output
        return hook

    def fuse(self, final_hidden: torch.Tensor) -> torch.Tensor:
        inputs = self.capture.inputs
        a = torch.zeros_like(final_hidden)
        for i, (lid, block) in enumerate(zip(self.layer_ids, self.blocks)):
            a = self.caches.run(i, block, self.capture, inputs_embeds=self.hidden[lid] + a,
                                attention_mask=inputs.get("attention_mask"),
                                position_ids=inputs.get("position_ids"))
        self.hidden.clear()
        return final_hidden + self.scale * self.norm(a)


class BottleneckAdapters(nn.Module):
    """This project's earlier K-Adapter (``variant: bottleneck``): a_i = a_{i-1} +
    Up_i(GELU(Down_i([h_{l_i}; a_{i-1}]))), Up zero-initialised, output norm(h_L) + a_k."""

    def __init__(self, d_model: int, layer_ids: Sequence[int], adapter_dim: int) -> None:
        super().__init__()
        self.layer_ids = list(layer_ids)
        self.down = nn.ModuleList(nn.Linear(2 * d_model, adapter_dim) for _ in self.layer_ids)
        self.up = nn.ModuleList(nn.Linear(adapter_dim, d_model) for _ in self.layer_ids)
        for up in self.up:
            nn.init.zeros_(up.weight)
            nn.init.zeros_(up.bias)
        self.state: torch.Tensor | None = None

    def attach(self, model: nn.Module) -> None:
        parts = decoder_parts(model)
        for i, lid in enumerate(self.layer_ids):
            parts.layers[lid].register_forward_hook(self._read(i))
        parts.norm.register_forward_hook(lambda mod, inp, out: self.fuse(out))

    def _read(self, i: int):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            prev = self.state if self.state is not None else torch.zeros_like(hidden)
            z = F.gelu(self.down[i](torch.cat([hidden, prev], dim=-1)))
            self.state = prev + self.up[i](z)
        return hook

    def fuse(self, final_hidden: torch.Tensor) -> torch.Tensor:
        out = final_hidden if self.state is None else final_hidden + self.state
        self.state = None
        return out


class KAdapter(LMStrategy):
    """Train knowledge adapters beside a frozen LM (and its head when ``train_lm_head``).

    Args:
        layer_ids: which ``hidden_states`` the adapters read (official: [1, 11]); for the
            bottleneck variant, block indices (default first, middle, last).
        variant: ``transformer`` (the CKL code) or ``bottleneck`` (our earlier design).
        output_scale: the factor on the adapters' normalised output (official 0.1).
        train_lm_head: also train the LM head / tied embeddings (official GPT-2 path).
        adapter_dim: bottleneck width (``variant: bottleneck`` only).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, layer_ids: Sequence[int] | None = None,
                 variant: str = "transformer", output_scale: float = 0.1,
                 train_lm_head: bool = True, adapter_dim: int = 64, lr: float = 1e-3,
                 **kwargs: Any) -> None:
        if variant not in ("transformer", "bottleneck"):
            raise ConfigError(f"K-Adapter variant must be 'transformer' or 'bottleneck', got {variant!r}")
        self.layer_ids_arg, self.variant = layer_ids, variant
        self.output_scale, self.train_lm_head, self.adapter_dim = output_scale, train_lm_head, adapter_dim
        self.side_caches = variant == "transformer"
        super().__init__(model, tokenizer, lr=lr, **kwargs)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        freeze(model)
        n = len(decoder_parts(model).layers)
        if self.variant == "transformer":
            ids = list(self.layer_ids_arg) if self.layer_ids_arg is not None else default_layer_ids(n)
            if any(not 0 <= i <= n for i in ids):
                raise ConfigError(f"layer_ids {ids} out of range: hidden_states of a {n}-block "
                                  f"model are 0 (embeddings) to {n}")
            self.adapters = TransformerAdapters(model.config, ids, self.output_scale)
        else:
            ids = list(self.layer_ids_arg) if self.layer_ids_arg is not None else sorted({0, n // 2, n - 1})
            if any(not 0 <= i < n for i in ids):
                raise ConfigError(f"layer_ids {ids} out of range for a model with {n} blocks")
            self.adapters = BottleneckAdapters(model.config.hidden_size, ids, self.adapter_dim)
        param = next(model.parameters())
        self.adapters.to(device=param.device, dtype=param.dtype)
        model.add_module("knowledge_adapters", self.adapters)  # saved with the model
        self.adapters.attach(model)
        if self.train_lm_head and self.variant == "transformer":
            for p in output_head_weights(model):
                p.requires_grad_(True)
        return model
