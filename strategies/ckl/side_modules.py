"""What the parameter-expansion methods (LoRA, K-Adapter, Modular) share: finding the parts of
a frozen causal LM, building small transformer stacks beside it, and the trainable head.

Works on Llama-style (``model.model.layers`` / ``.norm`` / ``.embed_tokens``) and GPT-2-style
(``model.transformer.h`` / ``.ln_f`` / ``.wte``) Hugging Face causal LMs.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from continual.models.lm import lm_package
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
    AutoModel = lm_package("transformers").AutoModel

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
    stack's latest forward, for side modules that read the sequence themselves, and whether
    that forward is a step of cached generation (``incremental``; ``new_sequence`` at its
    first step), so a side module can keep a KV cache of its own in step with the model's."""

    KEYS = ("input_ids", "attention_mask", "position_ids")

    def __init__(self, core: nn.Module) -> None:
        self.inputs: dict[str, torch.Tensor | None] = {}
        self.incremental = False
        self.new_sequence = True
        core.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        given = dict(kwargs)
        if args:  # positional input_ids
            given.setdefault("input_ids", args[0])
        self.inputs = {k: given.get(k) for k in self.KEYS}
        past = given.get("cache", given.get("past_key_values"))  # transformers >= 5.x: ``cache``
        self.incremental = bool(given.get("use_cache")) and not module.training
        self.new_sequence = cache_length(past) == 0


class SideCaches:
    """KV caches of a side module's stacks during cached generation: reset at a new sequence,
    extended by every step. Outside cached generation, stacks run without a cache."""

    def __init__(self, n: int) -> None:
        self.caches: list[Any] = [None] * n

    def run(self, i: int, stack: nn.Module, capture: InputCapture, **inputs: Any) -> torch.Tensor:
        if not capture.incremental:
            return stack(**inputs, use_cache=False).last_hidden_state
        if capture.new_sequence:
            self.caches[i] = None
        name = cache_argument(stack)
        out = stack(**inputs, **{name: self.caches[i]}, use_cache=True)
        self.caches[i] = getattr(out, name)
        return out.last_hidden_state


def cache_length(past: Any) -> int:
    """Positions a KV cache holds: a transformers ``Cache``, or the legacy tuple of per-block
    (key, value) pairs of shape (B, H, T, D) that GPT-2 passes in transformers 4.4x; 0 for None."""
    if past is None:
        return 0
    if isinstance(past, tuple):
        return past[0][0].shape[-2] if past else 0
    return past.get_seq_length()


def cache_argument(stack: nn.Module) -> str:
    """The KV cache's argument (and output field) name: ``cache`` in transformers >= 5.x,
    ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(stack.forward).parameters else "past_key_values"
