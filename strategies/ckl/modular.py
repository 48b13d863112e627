"""Modular: a new small transformer beside the frozen LM, added to its output at a small scale.

Jang et al., "Towards Continual Knowledge Learning of Language Models", ICLR 2022, Sec. 4
("Modular" parameter expansion, the paper's lowest FUAR, 0.28 in Table 2). Official code
(joeljang/continual-knowledge-learning, ``models/Modular_GPT2.py``; ``Modular_Small_T5.py``
for the T5 runs): a randomly initialised small model of the same family with its own token
embedding reads the same input ids; its last hidden state is projected up to the big model's
width and added at scale 0.05:

    output = norm(h_L) + scale * W_up · small(input_ids)        (scale 0.05; 0.1 in Modular_T5)

and the sum feeds the LM head. Only the small model, the projection and (``train_lm_head``)
the LM head train.

Size: the official pairs are GPT-2 small beside GPT-2 large and T5-small's encoder beside
T5-large's (about half the width, a quarter to a third of the blocks). Our default rule: width
= half the model's, rounded down to whole attention heads of the model's head size; blocks =
a quarter of the model's (at least 1); MLP width 3x. SmolLM2-135M (576 wide, 30 blocks) gets a
256-wide, 8-block module with a 49,152 x 256 embedding: 19.6M parameters (15% of the model,
as GPT-2 small is 16% of GPT-2 large).

Departures: the T5 runs feed the sum to a trainable T5 decoder, which a decoder-only model does
not have (we follow the GPT-2 path: the head trains); the GPT-2 file's projection has no bias,
which we keep. In cached generation the module keeps a KV cache of its own in step with the
model's; beam search runs without caches (same answers, slower).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from continual.strategies.ckl.base import LMStrategy, freeze
from continual.strategies.ckl.side_modules import (
    InputCapture,
    SideCaches,
    decoder_parts,
    output_head_weights,
    small_stack,
)
from continual.types import ConfigError


def module_shape(config: Any, n_blocks: int) -> tuple[int, int, int]:
    """(width, blocks, heads) of the default module beside a model (see the module docstring)."""
    d, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    width = max(head_dim, (d // 2) // head_dim * head_dim)
    return width, max(1, round(n_blocks / 4)), width // head_dim


class ModularStack(nn.Module):
    """The small model and its up-projection; ``fuse`` adds ``scale * W_up small(x)``."""

    def __init__(self, config: Any, width: int, n_blocks: int, n_heads: int,
                 intermediate_size: int, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)
        self.stack = small_stack(config, width, n_blocks, n_heads, intermediate_size,
                                 vocab_size=config.vocab_size)
        self.projection = nn.Linear(width, config.hidden_size, bias=False)
        self.capture: InputCapture | None = None
        self.caches = SideCaches(1)

    def attach(self, model: nn.Module) -> None:
        parts = decoder_parts(model)
        self.capture = InputCapture(parts.core)
        parts.norm.register_forward_hook(lambda mod, inp, out: self.fuse(out))

    def fuse(self, final_hidden: torch.Tensor) -> torch.Tensor:
        inputs = self.capture.inputs
        if inputs.get("input_ids") is None:
            raise ConfigError("Modular needs input_ids (it reads the tokens with its own embedding)")
        h = self.caches.run(0, self.stack, self.capture, **inputs)
        return final_hidden + self.scale * self.projection(h)


class Modular(LMStrategy):
    """Train a small new transformer beside a frozen LM (and its head when ``train_lm_head``).

    Args:
        scale: the factor on the module's projected output (official 0.05).
        width, n_blocks, n_heads, intermediate_size: the module's shape; None follows the
            rule in the module docstring.
        train_lm_head: also train the LM head / tied embeddings (official GPT-2 path).
    """

    side_caches = True

    def __init__(self, model: nn.Module, tokenizer: Any, scale: float = 0.05,
                 width: int | None = None, n_blocks: int | None = None, n_heads: int | None = None,
                 intermediate_size: int | None = None, train_lm_head: bool = True,
                 lr: float = 1e-3, **kwargs: Any) -> None:
        self.scale, self.train_lm_head = scale, train_lm_head
        self.shape_args = (width, n_blocks, n_heads, intermediate_size)
        super().__init__(model, tokenizer, lr=lr, **kwargs)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        freeze(model)
        width, n_blocks, n_heads, inter = self.shape_args
        rule_width, rule_blocks, rule_heads = module_shape(model.config, len(decoder_parts(model).layers))
        width = width or rule_width
        n_heads = n_heads or (rule_heads if width == rule_width else None)
        if n_heads is None or width % n_heads:
            raise ConfigError(f"Modular: give n_heads dividing width={width}")
        self.module_config = {"width": width, "n_blocks": n_blocks or rule_blocks, "n_heads": n_heads,
                              "intermediate_size": inter or 3 * width}
        self.modular = ModularStack(model.config, scale=self.scale, **self.module_config)
        param = next(model.parameters())
        self.modular.to(device=param.device, dtype=param.dtype)
        model.add_module("modular", self.modular)  # saved with the model
        self.modular.attach(model)
        if self.train_lm_head:
            for p in output_head_weights(model):
                p.requires_grad_(True)
        return model
