"""Shared mechanics of the CKL strategies: a causal LM, its optimiser and step.

``LMStrategy`` is the whole of vanilla fine-tuning; the other methods change only what
is special about them (which parameters train, the optimiser, the batch, the prompt).
Batches are token blocks: ``Batch.x`` input ids (B, T), ``Batch.y`` labels (B, T) with
-100 where no loss is taken (right padding); T is the same for every row. The learning-rate
schedule is the run's (``schedule=...``): the Runner drives ``self.optimizer``'s lr.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from continual.lm.evaluation import block_loss, greedy_answers
from continual.strategies.base import GradientStrategy, guarded_step, make_optimizer, snapshot
from continual.types import Batch, ConfigError


class LMStrategy(GradientStrategy):
    """Next-token training of a causal LM (vanilla fine-tuning when used as is).

    Args:
        model: a causal LM (``model(input_ids=..., labels=...)`` returns ``.loss``, ``.logits``).
        tokenizer: its tokenizer (used for answers and by strategies that read text).
        lr: learning rate (the peak of the run's schedule).
        optimizer: ``adamw`` / ``adam`` / ``sgd`` (``continual.strategies.base.make_optimizer``).
        weight_decay: decoupled weight decay.
        grad_clip: max gradient norm (None: no clipping).
        answer_batch_size: prompts per generation batch.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, lr: float = 1e-4,
                 optimizer: str = "adamw", weight_decay: float = 0.0,
                 grad_clip: float | None = 1.0, answer_batch_size: int = 32) -> None:
        self.model = self.prepare_model(model)
        self.tokenizer = tokenizer
        self.lr = lr
        self.grad_clip = grad_clip
        self.answer_batch_size = answer_batch_size
        self.optimizer = self.make_optimizer(optimizer, lr, weight_decay)
        self.steps = 0

    # ------------------------------------------------------------------ hooks for methods
    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Wrap or freeze the model before the optimiser is built (LoRA, adapters)."""
        return model

    def make_optimizer(self, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        params = self.trainable_parameters()
        if not params:
            raise ConfigError(f"{type(self).__name__}: the model has no trainable parameters")
        return make_optimizer(params, name, lr, weight_decay=weight_decay, betas=(0.9, 0.999))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ training
    def lm_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean next-token loss of input ids x (B, T) against labels y (B, T)."""
        self.model.train()
        return self.model(input_ids=x, labels=y).loss

    def step(self, loss: torch.Tensor) -> None:
        """The guarded step (``continual.strategies.base.guarded_step``): a NaN/Inf loss raises
        NonFiniteLoss before anything changes when ``check_each_step``; then backward, clip
        (``grad_clip``), optimiser step."""
        guarded_step(self.optimizer, loss, self.check_each_step, clip_grad_norm=self.grad_clip)
        self.steps += 1

    def observe(self, batch: Batch) -> dict[str, Any]:
        loss = self.lm_loss(batch.x, batch.y)
        self.step(loss)
        return {"loss": loss.detach()}

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def predict(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits (B, T, V) for input ids x (B, T)."""
        self.model.eval()
        return self.model(input_ids=x).logits

    #: True for methods whose added modules keep KV caches of their own beside the model's
    #: (K-Adapter's blocks, the Modular stack): beam search, which reorders the model's cache
    #: and not theirs, then runs without caches (recomputing each step).
    side_caches: bool = False

    def answer(self, prompts: Sequence[str], max_new_tokens: int = 8, num_beams: int = 1) -> list[str]:
        """Continuations of cloze prompts (what exact match is computed on): greedy, or beam
        search with ``num_beams`` beams."""
        return greedy_answers(self.model, self.tokenizer, prompts, max_new_tokens,
                              self.answer_batch_size, num_beams=num_beams,
                              use_cache=not (self.side_caches and num_beams > 1))

    def loss_on(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> float:
        """Mean next-token loss on held-out blocks (B, T) under the current model."""
        return block_loss(self.model, input_ids, labels)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return snapshot({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                         "steps": self.steps})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = snapshot(state)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = state.get("steps", 0)


def freeze(model: nn.Module) -> nn.Module:
    """Set requires_grad False on every parameter of ``model``; returns it."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model
