"""Replay buffers: fixed-capacity tensor stores with reservoir or class-balanced insertion.

Items live as preallocated tensors on the buffer's device; insertion and
sampling are vectorised (no Python loop over items). Which slots to write and which
items to draw is decided on the host (a CPU generator: the same draws on every device)
and the index is copied to the device without blocking, so a step on a GPU does not wait
for the host. ``host_labels=True`` also keeps a host copy of the labels, for strategies
whose bookkeeping needs them without reading the GPU.
"""

from __future__ import annotations

from typing import Any

import torch

from continual.types import ConfigError


class ReplayBuffer:
    """Shared storage and sampling; subclasses decide which slots new items take."""

    def __init__(self, capacity: int, device: str | torch.device = "cpu", seed: int = 0,
                 host_labels: bool = False) -> None:
        if int(capacity) < 1:
            raise ConfigError(
                f"buffer capacity must be at least 1, got {capacity}; "
                "use a positive number of items (e.g. buffer_size=200)"
            )
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

    def _slots(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (positions in the incoming batch, buffer slots they overwrite)."""
        raise NotImplementedError

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
        src, dst = self._slots(y if y_host is None else y_host)
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


def _keep_last(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop all but the last write to each slot, as sequential insertion would."""
    if dst.numel() < 2:
        return src, dst
    order = torch.arange(dst.numel())
    last = torch.full((int(dst.max()) + 1,), -1, dtype=torch.long)
    last.scatter_reduce_(0, dst, order, reduce="amax")
    keep = last[dst] == order
    return src[keep], dst[keep]


class ReservoirBuffer(ReplayBuffer):
    """Reservoir sampling (Vitter 1985): every item seen so far is kept with equal probability."""

    def _slots(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = int(y.shape[0])
        counts = torch.arange(self.seen, self.seen + b)
        fill = counts < self.capacity
        # item number j (0-based) replaces slot r ~ U{0..j} when r < capacity.
        r = (torch.rand(b, generator=self.generator) * (counts + 1).double()).long()
        dst = torch.where(fill, counts, r)
        take = fill | (r < self.capacity)
        src = torch.arange(b)[take]
        dst = dst[take]
        self.size = min(self.capacity, self.seen + b)
        return _keep_last(src, dst)


class ClassBalancedBuffer(ReplayBuffer):
    """Keeps the classes balanced (GDumb's sampler, Prabhu et al. 2020): when full, an
    item of a class that is not the largest replaces a random item of a largest class;
    an item of a largest class is not stored.
    """

    def __init__(self, capacity: int, device: str | torch.device = "cpu", seed: int = 0,
                 host_labels: bool = True) -> None:
        super().__init__(capacity, device, seed, host_labels=True)  # its choices read the labels

    def _slots(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Class balancing depends on every previous insertion, so items go one by one;
        # only the per-item work is vectorised. Batches are small in online learning.
        src, dst = [], []
        labels = y.detach().cpu()
        stored = self.labels_host[: self.size].clone() if self.size else torch.empty(0, dtype=y.dtype)
        for i, label in enumerate(labels.tolist()):
            if self.size < self.capacity:
                slot = self.size
                self.size += 1
                stored = torch.cat([stored, labels[i : i + 1]])
            else:
                classes, counts = torch.unique(stored, return_counts=True)
                largest = classes[counts == counts.max()]
                own = (classes == label).nonzero()
                if own.numel() and counts[own[0, 0]] == counts.max():
                    continue  # its class is already the largest: keep the buffer as it is
                else:
                    pick = largest[torch.randint(largest.numel(), (1,), generator=self.generator)]
                    members = (stored == pick).nonzero().squeeze(1)
                    slot = int(members[torch.randint(members.numel(), (1,), generator=self.generator)])
                stored[slot] = label
            src.append(i)
            dst.append(slot)
        return _keep_last(torch.tensor(src, dtype=torch.long), torch.tensor(dst, dtype=torch.long))


BUFFERS = {"reservoir": ReservoirBuffer, "class_balanced": ClassBalancedBuffer}


def make_buffer(kind: str, capacity: int, device: str | torch.device = "cpu", seed: int = 0,
                host_labels: bool = False) -> ReplayBuffer:
    """Build a replay buffer by name (``reservoir`` or ``class_balanced``)."""
    if kind not in BUFFERS:
        raise ConfigError(f"unknown buffer kind {kind!r}; choose one of {sorted(BUFFERS)}")
    return BUFFERS[kind](capacity, device=device, seed=seed, host_labels=host_labels)
