"""What a vector store holds beside its vectors: payload columns, the records it returns, and
the id -> slot map.

Split from ``continual.memory.vector_store`` (issue 21).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

# payload columns: name -> (dtype, value in the sentinel row that a missing hit (-1) reads)
COLUMNS: dict[str, tuple[type, int | float]] = {
    "id": (np.int64, -1),
    "label": (np.int64, -1),
    "task": (np.int64, -1),
    "time": (np.int64, -1),
    "last_recall": (np.int64, -1),
    "recalls": (np.int64, 0),
    "strength": (np.float64, 0.0),
}
PAYLOAD = ("label", "task", "time", "last_recall", "recalls", "strength")


@dataclass
class Payload:
    """Payload columns of a set of memories; every column has the same shape S.

    label, task: int64, -1 where not given (or where a search found no hit).
    time: int64 clock time the memory was written.
    last_recall: int64 clock time of its last recall (its write time if never).
    recalls: int64 times it was returned by a recalling ``search``.
    strength: float64 MemoryBank strength S (1 at write, +1 per recall).
    inputs: (*S, *input_shape) raw inputs when the store keeps them and they were
        asked for, else None.
    """

    label: np.ndarray
    task: np.ndarray
    time: np.ndarray
    last_recall: np.ndarray
    recalls: np.ndarray
    strength: np.ndarray
    inputs: torch.Tensor | None = None


@dataclass
class Memories:
    """Memories read by ``get`` or ``sample``: ids (n,), vectors (n, dim), payload (n,)."""

    ids: np.ndarray
    vectors: np.ndarray
    payload: Payload


class SearchResult(NamedTuple):
    """``search`` output for Q queries and k neighbours, nearest first.

    ids: (Q, k) int64; -1 where an approximate index found fewer than k.
    distances: (Q, k) float32 as FAISS returns them: squared L2 (smaller is
        nearer) for ``l2``; inner product, or cosine similarity for ``cosine``
        (larger is nearer).
    payload: columns of shape (Q, k) (label -1 etc. where ids is -1).
    """

    ids: np.ndarray
    distances: np.ndarray
    payload: Payload


class IdIndex:
    """Sorted map id -> slot; new ids are larger than all before, so adding appends."""

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.int64)
        self.slots = np.empty(0, dtype=np.int64)  # -1 once the id is gone
        self.size = 0
        self.dead = 0

    def append(self, ids: np.ndarray, slots: np.ndarray) -> None:
        need = self.size + ids.shape[0]
        if need > self.keys.shape[0]:
            grown = max(need, 2 * self.keys.shape[0], 1024)
            self.keys = np.resize(self.keys, grown)
            self.slots = np.resize(self.slots, grown)
        self.keys[self.size : need] = ids
        self.slots[self.size : need] = slots
        self.size = need

    def positions(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in keys, known mask) of ids; a position is valid where known."""
        if self.size == 0:
            return np.zeros(ids.shape, dtype=np.int64), np.zeros(ids.shape, dtype=bool)
        keys = self.keys[: self.size]
        pos = np.minimum(np.searchsorted(keys, ids), self.size - 1)
        return pos, (keys[pos] == ids) & (self.slots[pos] >= 0)

    def set_slots(self, ids: np.ndarray, slots: np.ndarray) -> None:
        self.slots[self.positions(ids)[0]] = slots

    def drop(self, ids: np.ndarray) -> None:
        self.slots[self.positions(ids)[0]] = -1
        self.dead += ids.shape[0]
        if self.dead > self.size // 2:
            live = self.slots[: self.size] >= 0
            kept = int(live.sum())
            self.keys[:kept] = self.keys[: self.size][live]
            self.slots[:kept] = self.slots[: self.size][live]
            self.size, self.dead = kept, 0
