"""LoRA: train low-rank updates of the attention projections beside a frozen base.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022: W x + s B A x
with A (r, d_in), B (d_out, r), B initialised to zero so training starts at the base model.
CKL setting (Jang et al., ICLR 2022, Sec. 4; official code joeljang/continual-knowledge-learning,
``models/Lora_T5.py`` / ``Lora_GPT2.py`` and ``models/GPT2_Model.py``): rank 4 on the query
and value projections. Built with ``peft``.

Defaults follow the official code, not peft's convention:

- **Scale** ``s = r / alpha`` (``scale_rule: official``; 4 / 16 = 0.25), as the official
  ``LoRALayer`` multiplies by ``adapter_dim / adapter_alpha``; peft (and the LoRA paper)
  scale by ``alpha / r`` (= 4, 16x larger), kept as ``scale_rule: peft``.
- **A's initialisation** normal with std 0.02 (``init_a_std``), as the official layer; null
  keeps peft's Kaiming-uniform.
- **Trainable set** the LoRA matrices plus the LM head (``train_lm_head: true``), as the
  official GPT-2 path: it freezes the model, unfreezes names containing ``lm_head``, and its
  ``resize_token_embeddings`` after the freeze makes the tied embedding/head matrix trainable
  again. For SmolLM2 (tied embeddings) that is 28.3M of the model's 134.5M parameters.

Target modules: ``target_modules: null`` (the default) takes peft's per-architecture list
(``TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`` by ``config.model_type``): the query and
value projections of Llama-style models (``q_proj``, ``v_proj``), GPT-2's fused ``c_attn``;
``strategy.target_modules=[...]`` names them for an architecture peft does not list.

Departures: the official T5 runs (the paper's main table) freeze only the encoder, so the
whole T5 decoder trains beside LoRA; a decoder-only model has no such split, so we follow the
official GPT-2 path above. ``train_lm_head: false, scale_rule: peft, init_a_std: null`` is the
earlier "adapters only" variant (230k trainable parameters on SmolLM2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from continual.models.lm import lm_package
from continual.strategies.ckl.base import LMStrategy
from continual.strategies.ckl.side_modules import output_head_weights
from continual.types import ConfigError


def default_target_modules(model: nn.Module) -> list[str]:
    """peft's LoRA targets for the model's architecture (``config.model_type``)."""
    mapping = lm_package("peft").utils.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in mapping:
        raise ConfigError(f"peft has no default LoRA targets for model type {model_type!r}; name the "
                          f"attention projections to adapt: strategy.target_modules=[...] "
                          f"(q_proj, v_proj on Llama-style models; c_attn on GPT-2)")
    return list(mapping[model_type])


class LoRA(LMStrategy):
    """Train LoRA adapters of rank ``r`` (and the LM head when ``train_lm_head``)."""

    def __init__(self, model: nn.Module, tokenizer: Any, r: int = 4, alpha: float = 16,
                 scale_rule: str = "official", init_a_std: float | None = 0.02,
                 train_lm_head: bool = True,
                 target_modules: Sequence[str] | None = None, dropout: float = 0.0,
                 lr: float = 1e-3, **kwargs: Any) -> None:
        if scale_rule not in ("official", "peft"):
            raise ConfigError(f"scale_rule must be 'official' (r/alpha) or 'peft' (alpha/r), "
                              f"got {scale_rule!r}")
        if r < 1 or alpha <= 0:
            raise ConfigError(f"LoRA needs r >= 1 and alpha > 0, got r={r}, alpha={alpha}")
        self.r, self.alpha, self.scale_rule = int(r), float(alpha), scale_rule
        self.init_a_std, self.train_lm_head = init_a_std, train_lm_head
        self.target_modules_arg, self.dropout = target_modules, dropout
        super().__init__(model, tokenizer, lr=lr, **kwargs)

    @property
    def scale(self) -> float:
        """The factor on B A x: r / alpha (official code) or alpha / r (peft, the paper)."""
        return self.r / self.alpha if self.scale_rule == "official" else self.alpha / self.r

    def prepare_model(self, model: nn.Module) -> nn.Module:
        peft = lm_package("peft")
        self.target_modules = (list(self.target_modules_arg) if self.target_modules_arg
                               else default_target_modules(model))
        targets = [mod for name, mod in model.named_modules() if name.rsplit(".", 1)[-1] in self.target_modules]
        found = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = [m for m in self.target_modules if m not in found]
        if missing:
            raise ConfigError(f"LoRA target modules {missing} are not in {type(model).__name__}; "
                              f"name its attention projections: strategy.target_modules=[...]")
        # GPT-2's projections are transformers' Conv1D, whose weight is (d_in, d_out)
        conv1d = any(type(mod).__name__ == "Conv1D" for mod in targets)
        # peft scales by lora_alpha / r: pass the alpha that gives our scale
        config = peft.LoraConfig(r=self.r, lora_alpha=self.scale * self.r,
                                 target_modules=self.target_modules, lora_dropout=self.dropout,
                                 fan_in_fan_out=conv1d, bias="none", task_type="CAUSAL_LM")
        wrapped = peft.get_peft_model(model, config)
        if self.init_a_std is not None:
            with torch.no_grad():
                for name, p in wrapped.named_parameters():
                    if "lora_A" in name:
                        p.normal_(0.0, self.init_a_std)
        if self.train_lm_head:
            for p in output_head_weights(wrapped):
                p.requires_grad_(True)
        return wrapped
