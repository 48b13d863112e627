"""Eviction policies: which memories a full store drops when new ones arrive.

A policy sees the store's live payload columns and the incoming batch (an
``EvictionView``) and answers with an ``EvictionPlan``: which incoming items
to admit and which stored items (by slot) to evict. The store applies the plan;
a policy never touches the store. Every policy works on whole arrays (numpy),
never with a Python loop over items, so its cost per ``add`` is O(n) at most.

Policies (``make_eviction(name)``):

- ``fifo``: evict the oldest written (ties: smaller id first).
- ``lru``: evict the least recently recalled; an item never recalled counts as
  recalled when written, so before any recall ``lru`` behaves like ``fifo``.
- ``retention``: MemoryBank (Zhong et al. 2023, "MemoryBank: Enhancing Large
  Language Models with Long-Term Memory", Sec. 2.3, Ebbinghaus curve
  ``R = exp(-t / S)``): t is the time since the item was last recalled (or
  written), S its strength, 1 when written and +1 at each recall; evict the
  lowest R. Departure: the paper forgets each memory at random with
  probability 1 - R; a store with a capacity must forget exactly as many items
  as arrive, so we evict the lowest R deterministically. Time is the store's
  clock (``add`` calls by default), not days.
- ``reservoir``: Vitter's Algorithm R (Vitter 1985, "Random sampling with a
  reservoir"): the i-th item offered (0-based) is kept with probability
  C / (i + 1) and then replaces a uniformly chosen slot, so the store is a
  uniform sample of everything offered. Departure: slots freed by ``remove``
  are refilled first, unconditionally.
- ``gdumb``: GDumb's greedy class-balancing sampler (Prabhu et al. 2020, Sec. 3),
  item by item: while there is room an item is stored; when full, a newcomer of
  a largest class is refused, any other replaces a random member of a random
  largest class.
- ``class_balanced``: each eviction takes a random member of a currently
  largest class, counting the newcomers; ties between equally large classes
  are broken at random. Unlike ``gdumb``, a newcomer of a largest class is not
  refused outright: it competes at random with that class's stored members,
  which lets a whole batch be planned at once.

(A third thing sometimes called class-balanced, one reservoir per class, is a set
of ``ReservoirBuffer`` s, one per class: TAME's selector buffer.)

Who asks: the vector store asks its policy only when an ``add`` would exceed the
capacity, with a numpy ``Generator``; a replay buffer (``continual.memory.buffers``)
asks at every ``add``, with its CPU ``torch.Generator``, and only policies that
place items (``places_items``: ``reservoir``, ``gdumb``), because its draws are by
slot. The random helpers below take either generator; the torch one keeps the draws
replay buffers have always made, so recorded runs replay bit for bit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from continual.types import ConfigError

__all__ = [
    "ClassBalancedEviction",
    "EvictionPlan",
    "EvictionPolicy",
    "EvictionView",
    "FifoEviction",
    "GDumbEviction",
    "LruEviction",
    "ReservoirEviction",
    "RetentionEviction",
    "EVICTION_POLICIES",
    "last_writes",
    "make_eviction",
    "reservoir_slots",
]

#: the random sources a policy may be handed: the store's numpy one, a buffer's torch one
Rng = np.random.Generator | torch.Generator


@dataclass(frozen=True)
class EvictionView:
    """What a policy may read when a batch of B items meets a store holding n.

    ids, labels, time, last_recall, strength: (n,) live columns of the store,
        indexed by slot (read-only views; do not write).
    new_ids: (B,) the ids the incoming items would get (all larger than ids).
    new_labels: (B,) int64 labels of the incoming items (-1 where unknown).
    capacity: the most items the store may hold.
    now: the store's clock; incoming items are written (and recalled) at now.
    seen: how many items were offered to the store before this batch.
    """

    ids: np.ndarray
    labels: np.ndarray
    time: np.ndarray
    last_recall: np.ndarray
    strength: np.ndarray
    new_ids: np.ndarray
    new_labels: np.ndarray
    capacity: int
    now: int
    seen: int

    @property
    def n(self) -> int:
        """Number of items stored now."""
        return int(self.ids.shape[0])

    @property
    def excess(self) -> int:
        """How many items must go (stored or incoming) to respect the capacity."""
        return max(0, self.n + int(self.new_ids.shape[0]) - self.capacity)


@dataclass(frozen=True)
class EvictionPlan:
    """A policy's answer.

    admit: (B,) bool, True for each incoming item the store keeps.
    evict: (E,) int64 distinct slots (positions in the view's columns) of the
        stored items to drop. The store checks n - E + admit.sum() <= capacity.
    slots: (A,) int64, for a policy that ``places_items``: the slot each admitted
        item takes, in input order (evicted slots, or n, n+1, ... for new ones).
        The vector store places items itself (evicted slots in order, then new
        ones); a replay buffer, whose draws are by slot, follows ``slots``.
    """

    admit: np.ndarray
    evict: np.ndarray
    slots: np.ndarray | None = None


class EvictionPolicy(ABC):
    """Chooses what a full store forgets. Subclasses implement ``plan``."""

    name: ClassVar[str] = ""
    needs_labels: ClassVar[bool] = False
    places_items: ClassVar[bool] = False  # fills EvictionPlan.slots; replay buffers need it

    @abstractmethod
    def plan(self, view: EvictionView, rng: Rng) -> EvictionPlan:
        """Return which incoming items to admit and which stored slots to evict."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def lowest(primary: np.ndarray, secondary: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` smallest entries by (primary, secondary), in O(len).

    primary, secondary: (N,) keys; secondary must be distinct (ids) so the
    answer is unique. Returns (count,) int64 indices, in no particular order.
    """
    size = primary.shape[0]
    if count <= 0:
        return np.empty(0, dtype=np.int64)
    if count >= size:
        return np.arange(size, dtype=np.int64)
    kth = np.partition(primary, count - 1)[count - 1]
    below = np.flatnonzero(primary < kth)
    ties = np.flatnonzero(primary == kth)
    need = count - below.shape[0]
    if need < ties.shape[0]:
        ties = ties[np.argpartition(secondary[ties], need - 1)[:need]]
    return np.concatenate([below, ties]).astype(np.int64, copy=False)


def last_writes(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep only the last write to each slot, as writing the items one by one would.

    src: (W,) positions in the batch, dst: (W,) the slot each writes, in write order.
    Returns the surviving (src, dst) pairs, in the same order.
    """
    if dst.shape[0] < 2:
        return src, dst
    _, first_from_end = np.unique(dst[::-1], return_index=True)
    keep = np.zeros(dst.shape[0], dtype=bool)
    keep[dst.shape[0] - 1 - first_from_end] = True
    return src[keep], dst[keep]


def uniform_upto(rng: Rng, high: np.ndarray, batch: int) -> np.ndarray:
    """(len(high),) int64 draws, each uniform in [0, high[i]].

    A numpy Generator draws integers. A torch Generator draws ``batch`` floats (one per
    item of the batch, the last len(high) used) and scales them: the replay buffers'
    draws since the first release, kept so that their runs replay bit for bit.
    """
    if isinstance(rng, torch.Generator):
        u = torch.rand(batch, generator=rng)[batch - high.shape[0]:]
        return (u * torch.from_numpy(high + 1).double()).long().numpy()
    if high.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    return rng.integers(0, high + 1)


def randbelow(rng: Rng, n: int) -> int:
    """One integer uniform in [0, n) from either kind of generator."""
    if isinstance(rng, torch.Generator):
        return int(torch.randint(n, (1,), generator=rng))
    return int(rng.integers(n))


def reservoir_slots(stored: int, seen: int, batch: int, capacity: int,
                    rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    """Vitter's Algorithm R for a batch: which items are kept and where.

    stored: items held now; seen: items offered before this batch. Free slots are filled
    first (stored, stored + 1, ...); the others, item i of all offered (0-based), draw j
    uniform in [0, i] and replace slot j when j < capacity, else are not kept. When two
    items of the batch write one slot, the later wins. Returns (src, dst): (A,) positions
    in the batch that are kept, ascending, and (A,) the slot each takes.
    """
    first = min(max(0, capacity - stored), batch)
    slot = np.full(batch, -1, dtype=np.int64)
    slot[:first] = stored + np.arange(first)
    j = uniform_upto(rng, seen + np.arange(first, batch, dtype=np.int64), batch)
    slot[first:] = np.where(j < capacity, j, -1)
    written = np.flatnonzero(slot >= 0)
    return last_writes(written, slot[written])


class _RankedEviction(EvictionPolicy):
    """Evict the lowest-ranked items among stored and incoming together."""

    @abstractmethod
    def keys(self, view: EvictionView) -> tuple[np.ndarray, np.ndarray]:
        """(n + B,) primary rank keys for stored then incoming items; lowest go first."""

    def plan(self, view: EvictionView, rng: Rng) -> EvictionPlan:
        primary, new_primary = self.keys(view)
        union = lowest(
            np.concatenate([primary, new_primary]),
            np.concatenate([view.ids, view.new_ids]),
            view.excess,
        )
        admit = np.ones(view.new_ids.shape[0], dtype=bool)
        admit[union[union >= view.n] - view.n] = False
        return EvictionPlan(admit=admit, evict=np.sort(union[union < view.n]))


class FifoEviction(_RankedEviction):
    """Evict the oldest written items (ties: smaller id, i.e. written earlier)."""

    name = "fifo"

    def keys(self, view: EvictionView) -> tuple[np.ndarray, np.ndarray]:
        return view.time, np.full(view.new_ids.shape[0], view.now, dtype=np.int64)


class LruEviction(_RankedEviction):
    """Evict the least recently recalled items (writing counts as the first recall)."""

    name = "lru"

    def keys(self, view: EvictionView) -> tuple[np.ndarray, np.ndarray]:
        return view.last_recall, np.full(view.new_ids.shape[0], view.now, dtype=np.int64)


class RetentionEviction(_RankedEviction):
    """Evict the lowest retention R = exp(-t / S) (MemoryBank, Zhong et al. 2023)."""

    name = "retention"

    def keys(self, view: EvictionView) -> tuple[np.ndarray, np.ndarray]:
        # exp is monotone: rank by -t/S, which needs no exp and cannot underflow to ties
        score = -(view.now - view.last_recall) / view.strength
        return score, np.zeros(view.new_ids.shape[0], dtype=np.float64)


class ReservoirEviction(EvictionPolicy):
    """Vitter's Algorithm R: the store stays a uniform sample of all items offered."""

    name = "reservoir"
    places_items = True

    def plan(self, view: EvictionView, rng: Rng) -> EvictionPlan:
        n = view.n
        src, dst = reservoir_slots(n, view.seen, view.new_ids.shape[0], view.capacity, rng)
        admit = np.zeros(view.new_ids.shape[0], dtype=bool)
        admit[src] = True
        return EvictionPlan(admit=admit, evict=np.sort(dst[dst < n]), slots=dst)


class GDumbEviction(EvictionPolicy):
    """GDumb's class-balancing sampler (Prabhu et al. 2020, Sec. 3), item by item: when
    full, an item of a class that is not the largest replaces a random member of a random
    largest class; an item of a largest class is not stored.
    """

    name = "gdumb"
    needs_labels = True
    places_items = True

    def plan(self, view: EvictionView, rng: Rng) -> EvictionPlan:
        # Each choice depends on every one before it, so items go one by one; only the
        # per-item work is vectorised. Batches are small in online learning.
        n, size = view.n, view.n
        stored = np.concatenate([view.labels, np.empty(view.new_labels.shape[0], np.int64)])
        src, dst = [], []
        for i, label in enumerate(view.new_labels.tolist()):
            if size < view.capacity:
                slot = size
                size += 1
            else:
                classes, counts = np.unique(stored[:size], return_counts=True)
                own = np.flatnonzero(classes == label)
                if own.size and counts[own[0]] == counts.max():
                    continue  # its class is already the largest: keep the buffer as it is
                largest = classes[counts == counts.max()]
                pick = largest[randbelow(rng, largest.shape[0])]
                members = np.flatnonzero(stored[:size] == pick)
                slot = int(members[randbelow(rng, members.shape[0])])
            stored[slot] = label
            src.append(i)
            dst.append(slot)
        src, dst = last_writes(np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64))
        admit = np.zeros(view.new_labels.shape[0], dtype=bool)
        admit[src] = True
        return EvictionPlan(admit=admit, evict=np.sort(dst[dst < n]), slots=dst)


class ClassBalancedEviction(EvictionPolicy):
    """Each eviction takes a random member of a currently largest class (GDumb's balancer)."""

    name = "class_balanced"
    needs_labels = True

    @staticmethod
    def removals_per_class(counts: np.ndarray, excess: int, rng: np.random.Generator) -> np.ndarray:
        """How many to take from each class when every removal hits a largest class.

        counts: (K,) class sizes; returns (K,) removals summing to ``excess``.
        Water-filling: level the largest classes down together, a step at a time.
        """
        left = counts.astype(np.int64).copy()
        remaining = excess
        while remaining > 0:
            top = left.max()
            at_top = np.flatnonzero(left == top)
            lower = left[left < top]
            floor = int(lower.max()) if lower.size else 0
            room = (top - floor) * at_top.shape[0]
            if remaining >= room:
                left[at_top] = floor
                remaining -= room
            else:
                per, extra = divmod(remaining, at_top.shape[0])
                left[at_top] -= per
                left[rng.choice(at_top, size=extra, replace=False)] -= 1
                remaining = 0
        return counts - left

    def plan(self, view: EvictionView, rng: np.random.Generator) -> EvictionPlan:
        labels = np.concatenate([view.labels, view.new_labels])
        classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        take = self.removals_per_class(counts, view.excess, rng)
        chosen = [
            rng.choice(np.flatnonzero(inverse == c), size=int(take[c]), replace=False)
            for c in np.flatnonzero(take)  # a loop over classes, not items
        ]
        union = np.concatenate(chosen).astype(np.int64) if chosen else np.empty(0, np.int64)
        admit = np.ones(view.new_ids.shape[0], dtype=bool)
        admit[union[union >= view.n] - view.n] = False
        return EvictionPlan(admit=admit, evict=np.sort(union[union < view.n]))


EVICTION_POLICIES: dict[str, type[EvictionPolicy]] = {
    cls.name: cls
    for cls in (
        FifoEviction,
        LruEviction,
        RetentionEviction,
        ReservoirEviction,
        GDumbEviction,
        ClassBalancedEviction,
    )
}


def make_eviction(policy: str | EvictionPolicy) -> EvictionPolicy:
    """Return the policy named ``policy`` (see ``EVICTION_POLICIES``), or ``policy`` itself."""
    if isinstance(policy, EvictionPolicy):
        return policy
    if policy not in EVICTION_POLICIES:
        raise ConfigError(
            f"unknown eviction policy {policy!r}; use one of {sorted(EVICTION_POLICIES)} "
            "or pass an EvictionPolicy instance"
        )
    return EVICTION_POLICIES[policy]()
