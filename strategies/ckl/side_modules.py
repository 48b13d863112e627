"""What the parameter-expansion methods (LoRA, K-Adapter, Modular) share: finding the parts of
a frozen causal LM, building small transformer stacks beside it, and the trainable head.

Works on Llama-style (``model.model.layers`` / ``.norm`` / ``.embed_tokens``) and GPT-2-style
(``model.transformer.h`` / ``.ln_f`` / ``.wte``) Hugging Face causal LMs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from continual.types import ConfigError


@dataclass
class DecoderParts:
    """The pieces of a causal LM the side modules hook into."""

    core: nn.Module          # the decoder stack (LlamaModel / GPT2Model)
    layers: nn.ModuleList    # its blocks, in order
    norm: nn.Module          # the final norm before the LM head
    embed: nn.Module         # the token embedding


def decoder_parts(model: nn.Module) -> DecoderParts:
    """The decoder stack, blocks, final norm and token embedding of a causal LM."""
    core = getattr(model, "model", None) or getattr(model, "transformer", None)
    layers = getattr(core, "layers", None) or getattr(core, "h", None)
    norm = getattr(core, "norm", None) or getattr(core, "ln_f", None)
    embed = getattr(core, "embed_tokens", None) or getattr(core, "wte", None)
    if layers is None or norm is None or embed is None:
        raise ConfigError(f"cannot find the decoder layers, final norm and embedding of "
                          f"{type(model).__name__}; Llama- and GPT-2-style models are supported")
    return DecoderParts(core, layers, norm, embed)


def output_head_weights(model: nn.Module) -> list[nn.Parameter]:
    """The LM head's weight (the tied embedding matrix when the model ties them)."""
    head = model.get_output_embeddings()
    if head is None:
        raise ConfigError(f"{type(model).__name__} has no output embeddings to train")
    return [head.weight]


def small_stack(config: Any, hidden_size: int, n_layers: int, n_heads: int,
                intermediate_size: int, vocab_size: int | None = None,
                final_norm: bool = True) -> nn.Module:
    """A freshly initialised decoder stack (no LM head) of the same architecture as ``config``.

    ``vocab_size=None`` gives it a one-row embedding, for stacks fed ``inputs_embeds`` only;
    ``final_norm=False`` replaces its closing norm by the identity.
    """
    from transformers import AutoModel

    cfg = copy.deepcopy(config)
    cfg.hidden_size, cfg.num_hidden_layers = hidden_size, n_layers
    cfg.num_attention_heads, cfg.intermediate_size = n_heads, intermediate_size
    if hasattr(cfg, "num_key_value_heads"):
        cfg.num_key_value_heads = n_heads
    if hasattr(cfg, "head_dim"):
        cfg.head_dim = hidden_size // n_heads
    if hasattr(cfg, "n_inner"):
        cfg.n_inner = intermediate_size
    cfg.vocab_size = vocab_size or 1
    if vocab_size is None:
        cfg.pad_token_id = None
    cfg.tie_word_embeddings = False
    cfg.use_cache = False
    stack = AutoModel.from_config(cfg)
    if vocab_size is None:  # fed inputs_embeds only: the one-row embedding is never read
        stack.get_input_embeddings().weight.requires_grad_(False)
    if not final_norm:
        parts_norm = "norm" if hasattr(stack, "norm") else "ln_f"
        setattr(stack, parts_norm, nn.Identity())
    return stack


class InputCapture:
    """Keeps the keyword inputs (input_ids, attention_mask, position_ids) of the decoder
    stack's latest forward, for side modules that read the sequence themselves."""

    KEYS = ("input_ids", "attention_mask", "position_ids")

    def __init__(self, core: nn.Module) -> None:
        self.inputs: dict[str, torch.Tensor | None] = {}
        core.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        given = dict(kwargs)
        if args:  # positional input_ids
            given.setdefault("input_ids", args[0])
        self.inputs = {k: given.get(k) for k in self.KEYS}
