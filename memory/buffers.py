"""Replay buffers: fixed-capacity tensor stores that ask an eviction policy where items go.

Items live as preallocated tensors on the buffer's device; insertion and
sampling are vectorised (no Python loop over items). Which slots to write is the
buffer's eviction policy's answer (``continual.memory.eviction``, the layer the
vector store asks too): ``reservoir`` (Algorithm R) or ``gdumb`` (GDumb's class
balancer). Policies and draws run on the host (a CPU generator: the same draws on
every device) and the index is copied to the device without blocking, so a step on a
GPU does not wait for the host. ``host_labels=True`` also keeps a host copy of the
labels, for strategies whose bookkeeping needs them without reading the GPU (a policy
that reads labels turns it on).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from continual.memory.eviction import (
    EvictionPolicy,
    EvictionView,
    GDumbEviction,
    ReservoirEviction,
    make_eviction,
)
from continual.types import ConfigError


class ReplayBuffer:
    """Storage and uniform sampling; ``policy`` decides which slots new items take.

    policy: an eviction policy that places items (``places_items``), by name or instance.
    """

    def __init__(self, capacity: int, device: str | torch.device = "cpu", seed: int = 0,
                 host_labels: bool = False, policy: str | EvictionPolicy = "reservoir") -> None:
        if int(capacity) < 1:
            raise ConfigError(
                f"buffer capacity must be at least 1, got {capacity}; "
                "use a positive number of items (e.g. buffer_size=200)"
            )
        self.policy = make_eviction(policy)
        if not self.policy.places_items:
            raise ConfigError(
                f"a replay buffer cannot use eviction={self.policy.name!r}: a buffer's draws "
                "are by slot, so its policy must say where each item goes; use 'reservoir' "
                "or 'gdumb' (the vector store takes the others)"
            )
        host_labels = host_labels or self.policy.needs_labels
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.seed = seed
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.size = 0
        self.seen = 0
        self.generator = torch.Generator().manual_seed(seed)
        self.labels_host: torch.Tensor | None = None  # (capacity,) on the CPU, with host_labels
        self.host_labels = host_labels

    def __len__(self) -> int:
        return self.size

    def _allocate(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x = torch.empty((self.capacity, *x.shape[1:]), dtype=x.dtype, device=self.device)
        self.y = torch.empty((self.capacity,), dtype=y.dtype, device=self.device)

    def _slots(self, y_host: torch.Tensor | None, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Ask the policy: (positions in the incoming batch, buffer slots they take)."""
        if self.policy.needs_labels:
            stored = self.labels_host[: self.size].numpy().astype(np.int64)
            new = y_host.numpy().astype(np.int64)
        else:
            stored, new = np.empty(0, np.int64), np.full(b, -1, np.int64)
        n = self.size
        view = EvictionView(
            ids=np.arange(n, dtype=np.int64), labels=stored, time=np.zeros(n, np.int64),
            last_recall=np.zeros(n, np.int64), strength=np.ones(n),
            new_ids=np.arange(n, n + b, dtype=np.int64), new_labels=new,
            capacity=self.capacity, now=0, seen=self.seen,
        )
        plan = self.policy.plan(view, self.generator)
        self.size = n - plan.evict.shape[0] + plan.slots.shape[0]
        return torch.from_numpy(np.flatnonzero(plan.admit)), torch.from_numpy(plan.slots)

    def add(self, x: torch.Tensor, y: torch.Tensor, y_host: torch.Tensor | None = None) -> None:
        """Offer a batch x: (B, ...), y: (B,) to the buffer; y_host: y on the CPU, when the
        caller has it (with ``host_labels``, else it is copied from y)."""
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} items but y has {y.shape[0]}")
        if self.x is None:
            self._allocate(x, y)
            if self.host_labels:
                self.labels_host = torch.empty((self.capacity,), dtype=y.dtype)
        elif x.shape[1:] != self.x.shape[1:]:
            raise ValueError(
                f"buffer holds items of shape {tuple(self.x.shape[1:])}, got {tuple(x.shape[1:])}"
            )
        if self.host_labels and y_host is None:
            y_host = y.detach().cpu()
        src, dst = self._slots(y_host, int(y.shape[0]))
        self.seen += int(y.shape[0])
        if src.numel():
            if self.labels_host is not None:
                self.labels_host[dst] = y_host[src]
            src_dev = src.to(x.device, non_blocking=True)
            dst = dst.to(self.device, non_blocking=True)
            self.x[dst] = x[src_dev].detach().to(self.device, non_blocking=True)
            self.y[dst] = y[src_dev].detach().to(self.device, non_blocking=True)

    def draw(self, n: int) -> torch.Tensor:
        """Host indices of n items drawn uniformly without replacement (fewer if the buffer is
        smaller); ``take`` gathers them."""
        if int(n) < 0:  # a negative n would slice off all but |n| items without a word
            raise ValueError(f"cannot draw {n} items from a buffer; n must be >= 0")
        n = min(int(n), self.size)
        return torch.randperm(self.size, generator=self.generator)[:n]

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The items at host indices idx: (n,) -> x (n, ...), y (n,) on the buffer's device."""
        idx = idx.to(self.device, non_blocking=True)
        return self.x[idx], self.y[idx]

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return n items drawn uniformly without replacement (fewer if the buffer is smaller)."""
        return self.take(self.draw(n))

    def items(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All stored items (views, not copies)."""
        return self.x[: self.size], self.y[: self.size]

    def state_dict(self) -> dict[str, Any]:
        return {
            # copies (.cpu() alone returns the live slots on a CPU buffer)
            "x": None if self.x is None else self.x[: self.size].to("cpu", copy=True),
            "y": None if self.y is None else self.y[: self.size].to("cpu", copy=True),
            "size": self.size,
            "seen": self.seen,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size = int(state["size"])
        self.seen = int(state["seen"])
        self.generator.set_state(state["generator"])
        if state["x"] is not None:
            self._allocate(state["x"], state["y"])
            self.x[: self.size] = state["x"].to(self.device)
            self.y[: self.size] = state["y"].to(self.device)
            if self.host_labels:
                self.labels_host = torch.empty((self.capacity,), dtype=state["y"].dtype)
                self.labels_host[: self.size] = state["y"]


class ReservoirBuffer(ReplayBuffer):
    """Reservoir sampling (Vitter 1985): every item seen so far is kept with equal probability."""

    def __init__(self, capacity: int, device: str | torch.device = "cpu", seed: int = 0,
                 host_labels: bool = False) -> None:
        super().__init__(capacity, device, seed, host_labels, policy=ReservoirEviction())


class GDumbBuffer(ReplayBuffer):
    """Keeps the classes balanced with GDumb's sampler (Prabhu et al. 2020): when full, an
    item of a class that is not the largest replaces a random item of a largest class;
    an item of a largest class is not stored.
    """

    def __init__(self, capacity: int, device: str | torch.device = "cpu", seed: int = 0,
                 host_labels: bool = True) -> None:
        super().__init__(capacity, device, seed, host_labels, policy=GDumbEviction())


BUFFERS: dict[str, type[ReplayBuffer]] = {"reservoir": ReservoirBuffer, "gdumb": GDumbBuffer}
#: old buffer names -> (current name, why it changed); accepted with a warning for one release
RENAMED = {
    "class_balanced": (
        "gdumb",
        "it is GDumb's sampler, which refuses a newcomer of a largest class; the vector "
        "store's eviction='class_balanced' is a different policy",
    ),
}


def make_buffer(kind: str, capacity: int, device: str | torch.device = "cpu", seed: int = 0,
                host_labels: bool = False) -> ReplayBuffer:
    """Build a replay buffer by name (``reservoir`` or ``gdumb``)."""
    if kind in RENAMED:
        new, why = RENAMED[kind]
        warnings.warn(
            f"buffer kind {kind!r} is renamed {new!r} ({why}); the old name will be removed "
            f"in the next release: use buffer_kind={new}",
            FutureWarning,
            stacklevel=2,
        )
        kind = new
    if kind not in BUFFERS:
        raise ConfigError(f"unknown buffer kind {kind!r}; choose one of {sorted(BUFFERS)}")
    return BUFFERS[kind](capacity, device=device, seed=seed, host_labels=host_labels)


def __getattr__(name: str) -> Any:
    if name == "ClassBalancedBuffer":  # the old class name, kept for one release
        warnings.warn(
            "ClassBalancedBuffer is renamed GDumbBuffer (it is GDumb's sampler); the old "
            "name will be removed in the next release",
            FutureWarning,
            stacklevel=2,
        )
        return GDumbBuffer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
