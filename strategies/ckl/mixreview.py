"""Mix-Review: mix earlier-corpus text into fine-tuning, at a ratio that decays each epoch.

He et al., "Analyzing the Forgetting Problem in Pretrain-Finetuning of Open-domain
Dialogue Response Models", EACL 2021, Sec. 4: during epoch e, add mix_ratio * decay^e
times as much pre-training data as there is new data. CKL setting (Jang et al. 2022,
public code): mix_ratio 4, decay 0.7.

Here, per step: the batch's B rows are joined by round(B * mix_ratio * decay^e) review
rows packed from the review pool (pre-training-like text the loop hands over in
``TaskInfo.extra['review_texts']``, plus the text of every earlier corpus this strategy
trained on). Departure: the paper adds review *examples* to the epoch (more steps);
we add review *rows* to each step (same number of steps, larger batches), so the step
count stays comparable across methods (the compute is the paper's: at ratio 4 the first
epoch handles 5x the rows of a vanilla epoch).

``max_review_rows`` bounds the per-step cost without cancelling the decay: it caps the first
epoch's count and every later epoch keeps the paper's ratio to it, n_e = round(min(B * mix_ratio,
cap) * decay^e) (at batch 8, ratio 4: uncapped 32, 22, 16, 11 review rows in epochs 1-4; cap 8:
8, 6, 4, 3). An earlier version capped each epoch's count on its own, which at cap 8 made the
mix a constant 1:1 in all four epochs.

Note on the official CKL code (joeljang/continual-knowledge-learning, ``models/T5_Model.py``
``train_dataloader``): it computes the epoch's mix from ``self.epoch``, but PyTorch Lightning
1.3 builds the training dataloader once (no ``reload_dataloaders_every_epoch`` in ``run.py``),
so its runs mixed a constant 4x review data into every epoch; we follow the paper's decay
(He et al. Sec. 4) and say so here.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from torch import nn

from continual.strategies.ckl.base import LMStrategy
from continual.types import Batch, TaskInfo


class MixReview(LMStrategy):
    """Vanilla fine-tuning with decaying review of earlier text in every batch."""

    def __init__(self, model: nn.Module, tokenizer: Any, mix_ratio: float = 4.0,
                 mix_decay: float = 0.7, max_review_rows: int | None = None,
                 review_texts: list[str] | None = None, seed: int = 0, **kwargs: Any) -> None:
        self.mix_ratio, self.mix_decay, self.max_review_rows = mix_ratio, mix_decay, max_review_rows
        self.review_texts: list[str] = list(review_texts or [])
        self.rng = random.Random(seed)
        self.steps_per_epoch = 0
        self.task_step = 0
        self._task_texts: list[str] = []
        self._review_ids: torch.Tensor | None = None
        self._review_labels: torch.Tensor | None = None
        super().__init__(model, tokenizer, **kwargs)

    def on_task_start(self, info: TaskInfo) -> None:
        super().on_task_start(info)
        if not self.review_texts and info.extra.get("review_texts"):
            self.review_texts = list(info.extra["review_texts"])
        self._task_texts = list(info.extra.get("texts", []))
        self.steps_per_epoch = int(info.extra.get("steps_per_epoch", 0))
        self.task_step = 0
        self._review_ids = None

    def on_task_end(self, info: TaskInfo) -> None:
        self.review_texts.extend(self._task_texts)  # later corpora review this one too

    def epoch(self) -> int:
        return self.task_step // self.steps_per_epoch if self.steps_per_epoch else 0

    def review_rows(self, batch_rows: int) -> int:
        """Review rows joining a batch of ``batch_rows`` in the current epoch (see the module
        docstring: the cap scales the whole decaying schedule)."""
        first = batch_rows * self.mix_ratio
        if self.max_review_rows is not None:
            first = min(first, self.max_review_rows)
        return round(first * self.mix_decay ** self.epoch())

    def _review_batch(self, n: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        from continual.streams.corpora import pack_documents

        if self._review_ids is None or self._review_ids.shape[1] != seq_len:
            self._review_ids, self._review_labels = pack_documents(
                self.tokenizer, self.review_texts, seq_len)
        idx = torch.tensor([self.rng.randrange(len(self._review_ids)) for _ in range(n)])
        return self._review_ids[idx], self._review_labels[idx]

    def observe(self, batch: Batch) -> dict[str, Any]:
        n_rev = self.review_rows(batch.x.shape[0]) if self.review_texts else 0
        x, y = batch.x, batch.y
        if n_rev:
            rx, ry = self._review_batch(n_rev, x.shape[1])
            x, y = torch.cat([x, rx.to(x.device)]), torch.cat([y, ry.to(y.device)])
        loss = self.lm_loss(x, y)
        self.step(loss)
        self.task_step += 1
        return {"loss": loss.detach(), "review_rows": n_rev}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "mix_review": {
            "review_texts": list(self.review_texts), "task_texts": list(self._task_texts),
            "steps_per_epoch": self.steps_per_epoch, "task_step": self.task_step,
            "rng": self.rng.getstate()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        m = state["mix_review"]
        self.review_texts, self._task_texts = list(m["review_texts"]), list(m["task_texts"])
        self.steps_per_epoch, self.task_step = int(m["steps_per_epoch"]), int(m["task_step"])
        self.rng.setstate(m["rng"])
        self._review_ids = self._review_labels = None  # re-packed from review_texts when needed
