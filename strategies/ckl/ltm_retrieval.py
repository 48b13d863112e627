"""LTM retrieval: write what the corpus says into a vector store; retrieve it into the prompt.

The external-memory approach to continual knowledge (retrieval-augmented generation, e.g.
Lewis et al., "Retrieval-Augmented Generation for Knowledge-Intensive NLP Tasks",
NeurIPS 2020, with the model left frozen): ``observe`` decodes the batch's token rows,
splits them into sentences and writes each new sentence to ``continual.memory.vector_store.
VectorStore`` (FAISS, cosine, exact); ``answer`` retrieves the ``k`` nearest sentences
to each probe and puts them before it, and the frozen base model continues the prompt.
Nothing is trained, so what changes is only what the model is shown.

Embedding: a hashed bag of words and word pairs (``HashingEmbedder``: lower-cased words
minus a short stop list, CRC32 into ``dim`` buckets, L2-normalised). Departure: no
learned encoder - offline, deterministic and enough to match a probe's entity and
relation words; a sentence encoder would suit paraphrased probes better.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from continual.lm.evaluation import greedy_answers
from continual.strategies.ckl.base import LMStrategy, freeze
from continual.types import Batch

_WORD = re.compile(r"[a-z0-9]+")
STOP_WORDS = frozenset(
    "a an the of is in on at to and or its it was are be by for with as from that this "
    "which who has have had often".split())


class HashingEmbedder:
    """Text -> (dim,) float32 unit vector of hashed words and adjacent word pairs."""

    def __init__(self, dim: int = 2048) -> None:
        self.dim = dim

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = [w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]
            grams = words + [a + " " + b for a, b in zip(words, words[1:])]
            for g in grams:
                out[row, zlib.crc32(g.encode()) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


_SENT = re.compile(r"(?<=[.!?])\s+")


class LTMRetrieval(LMStrategy):
    """Frozen LM + a sentence memory searched at answer time (no gradient steps)."""

    def __init__(self, model: nn.Module, tokenizer: Any, k: int = 3, dim: int = 2048,
                 capacity: int | None = None, **kwargs: Any) -> None:
        self.k, self.dim, self.capacity = k, dim, capacity
        self.embed = HashingEmbedder(dim)
        self.texts: dict[int, str] = {}
        self._seen: set[str] = set()
        self._store = None
        super().__init__(model, tokenizer, **kwargs)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return freeze(model)

    def make_optimizer(self, name: str, lr: float, weight_decay: float):
        return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)  # nothing trains

    @property
    def store(self):
        if self._store is None:
            from continual.memory.vector_store import VectorStore

            self._store = VectorStore(self.dim, metric="cosine", kind="flat", device="cpu",
                                      capacity=self.capacity)
        return self._store

    def write(self, texts: Sequence[str]) -> int:
        """Split texts into sentences and store the ones not stored yet; returns how many."""
        sents = []
        for t in texts:
            for s in _SENT.split(t):
                s = s.strip()
                if len(s.split()) >= 3 and s not in self._seen:
                    self._seen.add(s)
                    sents.append(s)
        if sents:
            ids = self.store.add(self.embed(sents))
            self.texts.update((int(i), s) for i, s in zip(ids, sents) if i >= 0)
        return len(sents)

    def observe(self, batch: Batch) -> dict[str, Any]:
        rows = []
        for x, y in zip(batch.x, batch.y):
            keep = x[y != -100] if y is not None else x
            rows.append(self.tokenizer.decode(keep, skip_special_tokens=True))
        written = self.write(rows)
        self.steps += 1
        return {"written": written, "memories": len(self.texts)}

    def retrieve(self, prompts: Sequence[str]) -> list[list[str]]:
        """The k stored sentences nearest to each prompt (fewer while the store is small)."""
        if not self.texts:
            return [[] for _ in prompts]
        k = min(self.k, len(self.texts))
        hits = self.store.search(self.embed(prompts), k, recall=False)
        return [[self.texts[int(i)] for i in row if int(i) in self.texts] for row in hits.ids]

    def answer(self, prompts: Sequence[str], max_new_tokens: int = 8, num_beams: int = 1) -> list[str]:
        contexts = self.retrieve(prompts)
        # nearest last, so it sits right before the probe
        full = [" ".join(list(reversed(c)) + [p]) for c, p in zip(contexts, prompts)]
        return greedy_answers(self.model, self.tokenizer, full, max_new_tokens,
                              self.answer_batch_size, num_beams=num_beams)

    def state_dict(self) -> dict[str, Any]:
        data = b"" if self._store is None else self._store.to_bytes()
        return {**super().state_dict(), "memory": {
            "texts": dict(self.texts), "seen": sorted(self._seen),
            "store": torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else None}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from continual.memory.vector_store import VectorStore

        super().load_state_dict(state)
        m = state["memory"]
        self.texts = {int(k): v for k, v in m["texts"].items()}
        self._seen = set(m["seen"])
        blob = m["store"]
        self._store = None if blob is None else VectorStore.from_bytes(
            blob.numpy().tobytes(), device="cpu", source="LTM retrieval checkpoint")
