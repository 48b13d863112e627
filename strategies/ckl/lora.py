"""LoRA: train low-rank updates of the attention projections, base frozen.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022: W x + (alpha/r)
B A x with A (r, d_in), B (d_out, r) initialised to zero so training starts at the base
model. CKL setting (Jang et al. 2022, Sec. 4): rank 4 on the query and value projections.
Built with ``peft``; the base model's parameters stay frozen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from continual.strategies.ckl.base import LMStrategy


class LoRA(LMStrategy):
    """Vanilla training of LoRA adapters only (rank ``r``, scale ``alpha / r``)."""

    def __init__(self, model: nn.Module, tokenizer: Any, r: int = 4, alpha: float = 16,
                 target_modules: Sequence[str] = ("q_proj", "v_proj"), dropout: float = 0.0,
                 lr: float = 1e-3, **kwargs: Any) -> None:
        self.r, self.alpha = r, alpha
        self.target_modules, self.dropout = list(target_modules), dropout
        super().__init__(model, tokenizer, lr=lr, **kwargs)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=self.r, lora_alpha=self.alpha, target_modules=self.target_modules,
                            lora_dropout=self.dropout, bias="none", task_type="CAUSAL_LM")
        return get_peft_model(model, config)
