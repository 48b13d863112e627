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
- ``class_balanced``: each eviction takes a random member of a currently
  largest class, counting the newcomers (the greedy class balancer of GDumb,
  Prabhu et al. 2020, Sec. 3); ties between equally large classes are broken
  at random. Departure from GDumb: a newcomer of a largest class is not
  refused outright; it competes at random with that class's stored members.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from continual.types import ConfigError

__all__ = [
    "ClassBalancedEviction",
    "EvictionPlan",
    "EvictionPolicy",
    "EvictionView",
    "FifoEviction",
    "LruEviction",
    "ReservoirEviction",
    "RetentionEviction",
    "EVICTION_POLICIES",
    "make_eviction",
]


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
    """

    admit: np.ndarray
    evict: np.ndarray


class EvictionPolicy(ABC):
    """Chooses what a full store forgets. Subclasses implement ``plan``."""

    name: ClassVar[str] = ""
    needs_labels: ClassVar[bool] = False

    @abstractmethod
    def plan(self, view: EvictionView, rng: np.random.Generator) -> EvictionPlan:
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


class _RankedEviction(EvictionPolicy):
    """Evict the lowest-ranked items among stored and incoming together."""

    @abstractmethod
    def keys(self, view: EvictionView) -> tuple[np.ndarray, np.ndarray]:
        """(n + B,) primary rank keys for stored then incoming items; lowest go first."""

    def plan(self, view: EvictionView, rng: np.random.Generator) -> EvictionPlan:
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

    @staticmethod
    def retention(view: EvictionView) -> np.ndarray:
        """(n,) R = exp(-(now - last_recall) / strength) of the stored items."""
        return np.exp(-(view.now - view.last_recall) / view.strength)

    def keys(self, view: EvictionView) -> tuple[np.ndarray, np.ndarray]:
        # exp is monotone: rank by -t/S, which needs no exp and cannot underflow to ties
        score = -(view.now - view.last_recall) / view.strength
        return score, np.zeros(view.new_ids.shape[0], dtype=np.float64)


class ReservoirEviction(EvictionPolicy):
    """Vitter's Algorithm R: the store stays a uniform sample of all items offered."""

    name = "reservoir"

    def plan(self, view: EvictionView, rng: np.random.Generator) -> EvictionPlan:
        n, b, cap = view.n, view.new_ids.shape[0], view.capacity
        free = max(0, cap - n)
        # slot owned by each incoming item: the first `free` fill slots n, n+1, ...
        # the others draw j uniform in [0, i] (i = items offered before them) and
        # replace slot j when j < capacity, else are not stored
        slot = np.full(b, -1, dtype=np.int64)
        first = min(free, b)
        slot[:first] = n + np.arange(first)
        if b > first:
            offered = view.seen + np.arange(first, b)
            j = rng.integers(0, offered + 1)
            slot[first:] = np.where(j < cap, j, -1)
        # when several items write the same slot, the last one wins
        written = np.flatnonzero(slot >= 0)
        rev = written[::-1]
        _, last = np.unique(slot[rev], return_index=True)
        winners = rev[last]
        admit = np.zeros(b, dtype=bool)
        admit[winners] = True
        replaced = slot[winners]
        return EvictionPlan(admit=admit, evict=np.sort(replaced[replaced < n]))


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
