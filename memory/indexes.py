"""The vector store's search indexes: one class per kind, over the store's slots.

The store (``continual.memory.vector_store``) owns the vectors, in slots 0..n-1 of a host
array it passes in; an index answers ``knn`` in slots and keeps its own structure in step
through ``add`` (vectors written into slots, some overwriting old ones) and ``delete``
(slots dropped, the last memories moved into the holes). ``state`` / ``load_state`` carry
what the store file holds beyond the vectors.

- ``FlatIndex``: exact search with FAISS's brute-force kernel (``faiss.knn``) over the
  store's array; on a GPU, a copy of the vectors in a CUDA tensor (``TorchMirror``)
  searched by FAISS's GPU brute force.
- ``IvfIndex``: IVF-Flat (Jegou et al. 2011, Sec. 3.1, without the quantization), trained
  once on the vectors held when ``train_size`` have arrived (exact search until then); on a
  GPU, a GPU copy appended to in place and rebuilt after a removal or an overwrite.
- ``HnswIndex``: HNSW (Malkov & Yashunin 2018), CPU only. FAISS's HNSW cannot delete, so a
  dropped memory's node is masked out of searches and the graph is rebuilt from the live
  vectors once masked nodes outnumber live ones.

The GPU pieces come from the store as factories (``make_mirror``, ``gpu_copy``), so the
device choice and FAISS's GPU resources stay in one place.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import faiss
import numpy as np
import torch

__all__ = ["FlatIndex", "HnswIndex", "INDEXES", "IvfIndex", "StoreIndex", "TorchMirror", "to_host"]


def to_host(*tensors: torch.Tensor) -> tuple[np.ndarray, ...]:
    """NumPy copies of tensors: from a GPU, all copied without blocking, then one wait."""
    if not any(t.is_cuda for t in tensors):
        return tuple(t.numpy() for t in tensors)
    host = [t.to("cpu", non_blocking=True) for t in tensors]
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return tuple(h.numpy() for h in host)


class TorchMirror:
    """A copy of the store's vectors as a torch tensor, searched by ``knn``.

    knn(queries (Q, d), base (n, d), k) -> (distances (Q, k), positions (Q, k)),
    tensors on ``device``. On the GPU the store uses FAISS's bfKnn; tests may build one
    on the CPU.
    """

    def __init__(
        self,
        dim: int,
        device: torch.device,
        knn: Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]],
    ) -> None:
        self.device = device
        self.knn_fn = knn
        self.rows = torch.empty((0, dim), dtype=torch.float32, device=device)

    def reserve(self, size: int, n: int) -> None:
        """Make room for ``size`` rows, keeping the first n."""
        if self.rows.shape[0] < size:
            rows = torch.empty((size, self.rows.shape[1]), dtype=torch.float32, device=self.device)
            rows[:n] = self.rows[:n]
            self.rows = rows

    def write(self, slots: np.ndarray, vectors: np.ndarray) -> None:
        """rows[slots] = vectors (vectors: (len(slots), d) float32 on the host)."""
        index = torch.from_numpy(slots).to(self.device, non_blocking=True)
        self.rows[index] = torch.from_numpy(vectors).to(self.device, non_blocking=True)

    def knn(self, queries: np.ndarray | torch.Tensor, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """k nearest of the first n rows for queries (Q, d), host arrays or tensors on the
        mirror's device; returns host arrays, copied back with one synchronisation."""
        q = queries if isinstance(queries, torch.Tensor) else torch.from_numpy(queries)
        dist, pos = self.knn_fn(q.to(self.device, non_blocking=True), self.rows[:n], k)
        return to_host(dist, pos.to(torch.int64))


class StoreIndex(ABC):
    """Search structure over the store's slots. ``vectors`` arguments are the store's live
    host vectors (n, dim), already updated when an index hears of a change."""

    kind: ClassVar[str] = ""
    #: graph nodes masked out of searches (HNSW); the store file records it for every kind
    masked: int = 0

    def __init__(self, dim: int, metric: int) -> None:
        self.dim = dim
        self.metric = metric  # faiss.METRIC_L2 or faiss.METRIC_INNER_PRODUCT

    @property
    def is_trained(self) -> bool:
        """False only while an index still searches exactly for want of training data."""
        return True

    @property
    def query_device(self) -> torch.device | None:
        """The device whose query tensors a search takes without a host copy, if any."""
        return None

    def reserve(self, size: int, n: int) -> None:
        """The store now has room for ``size`` slots (n of them in use)."""

    @abstractmethod
    def add(self, slots: np.ndarray, x: np.ndarray, reused: int, vectors: np.ndarray) -> None:
        """Vectors x (len(slots), dim) were written into slots; the first ``reused`` of them
        held memories before (overwritten)."""

    @abstractmethod
    def delete(self, slots: np.ndarray, holes: np.ndarray, movers: np.ndarray,
               vectors: np.ndarray) -> None:
        """The memories in ``slots`` were dropped and those in ``movers`` moved into
        ``holes`` (same length)."""

    @abstractmethod
    def knn(self, q: np.ndarray | torch.Tensor, k: int, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distances (Q, k), slots (Q, k)) of the k nearest live memories; slot -1 where none."""

    def state(self, n: int) -> dict[str, np.ndarray]:
        """Arrays the store file keeps for this index (beyond the vectors)."""
        return {}

    def load_state(self, arrays: dict[str, np.ndarray], n: int, vectors: np.ndarray) -> None:
        """Restore from ``state``'s arrays, the store's n live vectors already in place."""


class FlatIndex(StoreIndex):
    """Exact search over the store's own array; on a GPU, over a CUDA copy of it.

    make_mirror: builds the GPU copy (None on the CPU); made at the first add.
    """

    kind = "flat"

    def __init__(self, dim: int, metric: int, make_mirror: Callable[[], TorchMirror] | None = None) -> None:
        super().__init__(dim, metric)
        self.make_mirror = make_mirror
        self.mirror: TorchMirror | None = None
        self.size = 0

    @property
    def query_device(self) -> torch.device | None:
        return None if self.mirror is None else self.mirror.device

    def _mirror_all(self, vectors: np.ndarray) -> None:
        self.mirror = self.make_mirror()
        self.mirror.reserve(self.size, 0)
        self.mirror.write(np.arange(vectors.shape[0]), vectors)

    def reserve(self, size: int, n: int) -> None:
        self.size = size
        if self.mirror is not None:
            self.mirror.reserve(size, n)

    def add(self, slots: np.ndarray, x: np.ndarray, reused: int, vectors: np.ndarray) -> None:
        if self.mirror is None and self.make_mirror is not None:
            self._mirror_all(vectors)
        elif self.mirror is not None:
            self.mirror.write(slots, x)

    def delete(self, slots: np.ndarray, holes: np.ndarray, movers: np.ndarray,
               vectors: np.ndarray) -> None:
        if self.mirror is not None:
            self.mirror.write(holes, vectors[holes])

    def knn(self, q: np.ndarray | torch.Tensor, k: int, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.mirror is not None:
            return self.mirror.knn(q, k, vectors.shape[0])
        return faiss.knn(q, vectors, k, metric=self.metric)

    def load_state(self, arrays: dict[str, np.ndarray], n: int, vectors: np.ndarray) -> None:
        if self.make_mirror is not None and n:
            self._mirror_all(vectors)


class IvfIndex(StoreIndex):
    """IVF-Flat keyed by slot, trained once ``train_size`` vectors are held; exact before.

    gpu_copy: builds a GPU copy of the trained CPU index (None on the CPU). The copy is
    appended to in place and rebuilt before a search after a removal or an overwrite.
    """

    kind = "ivf"

    def __init__(self, dim: int, metric: int, nlist: int, nprobe: int, train_size: int,
                 gpu_copy: Callable[[Any], Any] | None = None) -> None:
        super().__init__(dim, metric)
        self.nlist, self.nprobe, self.train_size = nlist, nprobe, train_size
        self.gpu_copy = gpu_copy
        self.ann: Any = None  # the CPU index once trained: the reference
        self.version = 0  # bumped at every change of ann (the GPU copy compares it)
        self.gpu_ann: Any = None
        self.gpu_version = -1

    @property
    def is_trained(self) -> bool:
        return self.ann is not None

    def set_nprobe(self, value: int) -> None:
        self.nprobe = value
        if self.ann is not None:
            self.ann.nprobe = value
            if self.gpu_ann is not None:
                self.gpu_ann.nprobe = value

    def _train(self, vectors: np.ndarray) -> None:
        quantizer = faiss.IndexFlat(self.dim, self.metric)
        # (faiss's Python wrapper keeps the quantizer alive as long as the index)
        index = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, self.metric)
        index.train(vectors)
        # a hashtable direct map makes remove_ids cost O(removed) instead of O(n)
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
        index.add_with_ids(vectors, np.arange(vectors.shape[0], dtype=np.int64))
        index.nprobe = self.nprobe
        self.ann = index
        self.version += 1

    def add(self, slots: np.ndarray, x: np.ndarray, reused: int, vectors: np.ndarray) -> None:
        if self.ann is None:
            if vectors.shape[0] >= self.train_size:
                self._train(vectors)
            return
        if reused:  # a GPU IVF cannot remove: its copy is rebuilt before the next search
            self.ann.remove_ids(faiss.IDSelectorArray(slots[:reused]))
            self.version += 1
        self.ann.add_with_ids(x, slots)
        if self.gpu_ann is not None and self.gpu_version == self.version:
            self.gpu_ann.add_with_ids(x, slots)  # appends keep the GPU copy current
        else:
            self.version += 1

    def delete(self, slots: np.ndarray, holes: np.ndarray, movers: np.ndarray,
               vectors: np.ndarray) -> None:
        if self.ann is not None:
            self.ann.remove_ids(faiss.IDSelectorArray(np.concatenate([slots, movers])))
            self.ann.add_with_ids(vectors[holes], holes)
            self.version += 1

    def knn(self, q: np.ndarray | torch.Tensor, k: int, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.ann is None:
            return faiss.knn(q, vectors, k, metric=self.metric)
        if self.gpu_copy is None:
            return self.ann.search(q, k)
        if self.gpu_version != self.version:
            self.gpu_ann = None  # free the stale copy first
            self.gpu_ann = self.gpu_copy(self.ann)
            self.gpu_version = self.version
        return self.gpu_ann.search(q, k)

    def state(self, n: int) -> dict[str, np.ndarray]:
        return {} if self.ann is None else {"index": faiss.serialize_index(self.ann)}

    def load_state(self, arrays: dict[str, np.ndarray], n: int, vectors: np.ndarray) -> None:
        from continual.memory.store_file import StoreFileError

        if "index" not in arrays:
            return
        self.ann = faiss.deserialize_index(arrays["index"])
        self.version += 1
        self.ann.nprobe = self.nprobe
        if self.ann.ntotal != n:
            raise StoreFileError(f"the IVF index holds {self.ann.ntotal} vectors, expected {n}")


class HnswIndex(StoreIndex):
    """FAISS HNSW over graph nodes mapped to slots; deletions mask nodes out of searches."""

    kind = "hnsw"

    def __init__(self, dim: int, metric: int, hnsw_m: int, ef_construction: int,
                 ef_search: int) -> None:
        super().__init__(dim, metric)
        self.hnsw_m, self.ef_construction, self.ef_search = hnsw_m, ef_construction, ef_search
        self.ann = self._new_graph()
        # graph node -> slot (-1 masked; one sentinel at the end) and slot -> node
        self.node_slot = np.full(1, -1, dtype=np.int64)
        self.slot_node = np.full(1, -1, dtype=np.int64)
        self.masked = 0
        self._selector: Any = None

    def _new_graph(self) -> Any:
        index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, self.metric)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        return index

    def set_ef_search(self, value: int) -> None:
        self.ef_search = value
        self.ann.hnsw.efSearch = value

    def reserve(self, size: int, n: int) -> None:
        grown = np.empty(size + 1, dtype=np.int64)
        grown[:n] = self.slot_node[:n]
        grown[size] = -1
        self.slot_node = grown

    def _append(self, slots: np.ndarray, x: np.ndarray) -> None:
        start = self.ann.ntotal
        self.ann.add(x)
        nodes = np.arange(start, start + x.shape[0], dtype=np.int64)
        node_slot = np.empty(start + x.shape[0] + 1, dtype=np.int64)
        node_slot[:start] = self.node_slot[:start]
        node_slot[start:-1] = slots
        node_slot[-1] = -1  # sentinel: a missing hit (-1) maps to slot -1
        self.node_slot = node_slot
        self.slot_node[slots] = nodes
        self._selector = None

    def _mask(self, nodes: np.ndarray) -> None:
        self.node_slot[nodes] = -1
        self.masked += nodes.shape[0]
        self._selector = None

    def _maybe_rebuild(self, vectors: np.ndarray) -> None:
        if self.masked <= max(vectors.shape[0], 1024):
            return
        self.ann = self._new_graph()
        self.node_slot = np.full(1, -1, dtype=np.int64)
        self.masked = 0
        self._append(np.arange(vectors.shape[0], dtype=np.int64), vectors)

    def add(self, slots: np.ndarray, x: np.ndarray, reused: int, vectors: np.ndarray) -> None:
        if reused:
            self._mask(self.slot_node[slots[:reused]])
        self._append(slots, x)
        self._maybe_rebuild(vectors)

    def delete(self, slots: np.ndarray, holes: np.ndarray, movers: np.ndarray,
               vectors: np.ndarray) -> None:
        self._mask(self.slot_node[slots])
        nodes = self.slot_node[movers]
        self.slot_node[holes] = nodes
        self.node_slot[nodes] = holes
        self._maybe_rebuild(vectors)

    def _params(self) -> Any:
        if not self.masked:
            return None
        if self._selector is None:
            live = np.packbits(self.node_slot[:-1] >= 0, bitorder="little")
            # n is the bitmap's length in bytes; node i is kept iff bit i % 8 of byte i // 8
            selector = faiss.IDSelectorBitmap(live.shape[0], faiss.swig_ptr(live))
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=self.ef_search)
            self._selector = (params, selector, live)  # keep the bitmap alive
        return self._selector[0]

    def knn(self, q: np.ndarray | torch.Tensor, k: int, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dist, nodes = self.ann.search(q, k, params=self._params())
        return dist, self.node_slot[nodes]

    def state(self, n: int) -> dict[str, np.ndarray]:
        return {
            "index": faiss.serialize_index(self.ann),
            "node_slot": self.node_slot,
            "slot_node": self.slot_node[:n],
        }

    def load_state(self, arrays: dict[str, np.ndarray], n: int, vectors: np.ndarray) -> None:
        self.ann = faiss.deserialize_index(arrays["index"])
        self.ann.hnsw.efSearch = self.ef_search
        self.node_slot = arrays["node_slot"].astype(np.int64)
        self.slot_node[:n] = arrays["slot_node"]


INDEXES: dict[str, type[StoreIndex]] = {cls.kind: cls for cls in (FlatIndex, IvfIndex, HnswIndex)}
