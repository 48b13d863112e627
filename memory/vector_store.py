"""A FAISS vector store with stable ids, payload columns, a capacity and persistence.

``VectorStore`` keeps fixed-dimension float32 vectors under stable int64 ids
(issued in increasing order, never reused), with a payload per memory stored as
columns beside them (label, task, time written, time last recalled, times
recalled, strength, and optionally the raw input tensor so memories can be
replayed). ``search`` finds nearest neighbours with FAISS:

- ``flat``: exact search with FAISS's brute-force kernel over the store's own array;
- ``ivf``: IVF-Flat, trained once on the vectors held when ``train_size`` have arrived
  (exact search before); not retrained when the data drift later;
- ``hnsw``: HNSW; overwritten or removed memories are masked out of the graph, which is
  rebuilt once masked nodes outnumber live ones.

Each kind is a class in ``continual.memory.indexes``; the file format is
``continual.memory.store_file``; devices and FAISS's GPU resources are
``continual.memory.gpu``; payload columns and the id map ``continual.memory.payload``.
On a GPU (``device="cuda"`` or ``"cuda:N"``, or ``"auto"``
when ``faiss.get_num_gpus() > 0``) ``flat`` searches a CUDA copy of the vectors with FAISS's
GPU brute force (a search with CUDA queries stays on the GPU and copies back only the hits)
and ``ivf`` a GPU copy of its index (appended to in place; rebuilt, an O(n) upload, only after
a removal or an overwrite). FAISS's GPU search returns at most ``GPU_MAX_K`` neighbours, so a
larger k is refused there. All GPU stores of a process share one ``StandardGpuResources`` (its
scratch memory lives outside torch's allocator). FAISS has no GPU HNSW, so ``hnsw`` stays on
the CPU. The CPU copy (host arrays) is always the store's reference: ``get``, ``sample`` and
``save`` read it.

Every memory lives in a slot 0..len-1 (slots stay dense: ``remove`` moves the
last memories into the holes); ids map to slots through a sorted id array, so
all bookkeeping is whole-array numpy work and a search adds only a few gathers
to the FAISS call.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from continual.memory import gpu
from continual.memory.eviction import (
    EVICTION_POLICIES,
    EvictionPlan,
    EvictionPolicy,
    EvictionView,
    make_eviction,
)
from continual.memory.gpu import GPU_MAX_K, on_device, parse_device, resolve_device
from continual.memory.indexes import FlatIndex, HnswIndex, IvfIndex, StoreIndex, TorchMirror, to_host
from continual.memory.payload import COLUMNS, PAYLOAD, IdIndex, Memories, Payload, SearchResult
from continual.memory.store_file import DAMAGED, FORMAT_VERSION, StoreFileError, decode, encode
from continual.types import ConfigError

__all__ = [
    "Memories",
    "Payload",
    "SearchResult",
    "FORMAT_VERSION",
    "GPU_MAX_K",
    "StoreFileError",
    "TorchMirror",
    "VectorStore",
    "resolve_device",
    "to_host",
]

METRICS = ("l2", "ip", "cosine")
KINDS = ("flat", "ivf", "hnsw")


class VectorStore:
    """Vectors of one dimension under stable int64 ids, with payload, capacity and eviction.

    Args:
        dim: vector dimension (fixed).
        metric: 'l2' (squared Euclidean), 'ip' (inner product) or 'cosine'
            (inner product of L2-normalised vectors; the store keeps them normalised).
        kind: 'flat' (exact), 'ivf' (IVF-Flat) or 'hnsw' (fixed).
        capacity: most memories held; None for no limit. When an ``add`` would
            exceed it, ``eviction`` chooses what goes.
        eviction: 'fifo', 'lru', 'retention', 'reservoir', 'class_balanced' (see
            ``continual.memory.eviction``) or an ``EvictionPolicy``.
        device: 'auto' (GPU 0 when FAISS sees one), 'cpu', 'cuda' (GPU 0) or 'cuda:N'.
        nlist, nprobe: IVF lists and lists probed per query.
        train_size: vectors needed before the IVF is trained (default 39 * nlist,
            FAISS's minimum for k-means without a warning); exact search until then.
        hnsw_m, ef_construction, ef_search: HNSW graph degree and beam widths.
        seed: seeds the store's generator (reservoir, class_balanced, sample).
    """

    def __init__(
        self,
        dim: int,
        *,
        metric: str = "l2",
        kind: str = "flat",
        capacity: int | None = None,
        eviction: str | EvictionPolicy = "fifo",
        device: str = "auto",
        nlist: int = 1024,
        nprobe: int = 16,
        train_size: int | None = None,
        hnsw_m: int = 32,
        ef_construction: int = 40,
        ef_search: int = 128,
        seed: int = 0,
    ) -> None:
        if not isinstance(dim, int | np.integer) or dim < 1:
            raise ConfigError(f"dim must be a positive int, got {dim!r}")
        if metric not in METRICS:
            raise ConfigError(f"unknown metric {metric!r}; use one of {METRICS}")
        if kind not in KINDS:
            raise ConfigError(f"unknown index kind {kind!r}; use one of {KINDS}")
        if capacity is not None and (not isinstance(capacity, int | np.integer) or capacity < 1):
            raise ConfigError(
                f"capacity must be an int >= 1 (or None for no limit), got {capacity!r}"
            )
        for name, value in (
            ("nlist", nlist),
            ("nprobe", nprobe),
            ("hnsw_m", hnsw_m),
            ("ef_construction", ef_construction),
            ("ef_search", ef_search),
        ):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if train_size is not None and train_size < nlist:
            raise ConfigError(
                f"train_size={train_size} is below nlist={nlist}: k-means needs at least "
                "one vector per list (FAISS advises 39 per list)"
            )
        self.dim = int(dim)
        self.metric = metric
        self.kind = kind
        self.capacity = None if capacity is None else int(capacity)
        self.policy = make_eviction(eviction)
        self.device = resolve_device(device, gpu.faiss_gpu_count(), kind)
        self.gpu_index = (parse_device(device)[1] or 0) if self.device == "cuda" else None
        self.nlist = nlist
        self.train_size = 39 * nlist if train_size is None else train_size
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self._nprobe = nprobe
        self._ef_search = ef_search
        self.seed = seed
        self._faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT

        self._rng = np.random.default_rng(seed)
        self._n = 0
        self._next_id = 0
        self._seen = 0
        self._now = 0
        self._ids = IdIndex()
        self._alloc = 0
        self._vectors = np.zeros((1, self.dim), dtype=np.float32)  # rows: slots + sentinel
        self._cols = {name: np.full(1, fill, dtype) for name, (dtype, fill) in COLUMNS.items()}
        self._inputs: torch.Tensor | None = None  # (alloc + 1, *input_shape) once used
        self._index = self._new_index()

    def _new_index(self) -> StoreIndex:
        """The search index of this kind; its GPU pieces are built here, on the store's GPU."""
        metric, device_index = self._faiss_metric, self.gpu_index
        if self.kind == "flat":
            mirror = None if device_index is None else (
                lambda: gpu.make_gpu_mirror(self.dim, metric, device_index))
            return FlatIndex(self.dim, metric, mirror)
        if self.kind == "ivf":
            copy = None if device_index is None else (
                lambda index: gpu.make_gpu_index(index, gpu.shared_gpu_resources(), device_index))
            return IvfIndex(self.dim, metric, self.nlist, self._nprobe, self.train_size, copy)
        return HnswIndex(self.dim, metric, self.hnsw_m, self.ef_construction, self._ef_search)

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return (
            f"VectorStore(dim={self.dim}, metric={self.metric!r}, kind={self.kind!r}, "
            f"len={self._n}, capacity={self.capacity}, eviction={self.policy.name!r}, "
            f"device={self.device_name!r})"
        )

    @property
    def device_name(self) -> str:
        """'cpu' or 'cuda:N', the GPU the store searches on."""
        return "cpu" if self.gpu_index is None else f"cuda:{self.gpu_index}"

    @property
    def now(self) -> int:
        """The store's clock: +1 at each ``add`` unless a time is passed explicitly."""
        return self._now

    @property
    def seen(self) -> int:
        """Items offered to ``add`` so far (stored or not)."""
        return self._seen

    @property
    def is_trained(self) -> bool:
        """False only for an ``ivf`` store still searching exactly (too few vectors yet)."""
        return self._index.is_trained

    @property
    def nprobe(self) -> int:
        """IVF lists probed per query."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if value < 1:
            raise ConfigError(f"nprobe must be >= 1, got {value}")
        self._nprobe = int(value)
        if isinstance(self._index, IvfIndex):
            self._index.set_nprobe(self._nprobe)

    @property
    def ef_search(self) -> int:
        """HNSW search beam width."""
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        if value < 1:
            raise ConfigError(f"ef_search must be >= 1, got {value}")
        self._ef_search = int(value)
        if isinstance(self._index, HnswIndex):
            self._index.set_ef_search(self._ef_search)

    def ids(self) -> np.ndarray:
        """(len,) ids of all stored memories, in slot order (a copy)."""
        return self._cols["id"][: self._n].copy()

    def __contains__(self, memory_id: int) -> bool:
        return bool(self._ids.positions(np.array([memory_id], dtype=np.int64))[1][0])

    # ------------------------------------------------------------------ input checks
    def _as_matrix(self, x: Any, what: str) -> np.ndarray:
        """(m, dim) C-contiguous finite float32 copy-free view where possible."""
        if isinstance(x, torch.Tensor):
            x = x.detach().to("cpu", torch.float32).numpy()
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ConfigError(
                f"{what} must have shape (m, {self.dim}) for this store of dim={self.dim}, "
                f"got {tuple(x.shape)}; reshape a single vector with v.reshape(1, -1)"
            )
        if not np.isfinite(x).all():
            bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
            raise ConfigError(
                f"{what} contain NaN or Inf in {bad.shape[0]} row(s) (first: {bad[:5].tolist()}); "
                "clean or drop them before adding or searching"
            )
        if self.metric == "cosine":
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            if (norms == 0).any():
                raise ConfigError(
                    f"{what} contain {(norms == 0).sum()} all-zero row(s), which have no "
                    "direction under metric='cosine'; drop them or use metric='l2'"
                )
            x = x / norms
        return x

    def _gpu_queries(self, queries: torch.Tensor) -> torch.Tensor:
        """Queries (Q, dim) already on the store's GPU: checked for shape only (finiteness is
        read from the distances, after the search), normalised under cosine."""
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ConfigError(
                f"queries must have shape (m, {self.dim}) for this store of dim={self.dim}, "
                f"got {tuple(queries.shape)}; reshape a single vector with v.reshape(1, -1)"
            )
        q = queries.detach().float().contiguous()
        return q / q.norm(dim=1, keepdim=True) if self.metric == "cosine" else q

    @staticmethod
    def _as_column(values: Any, m: int, what: str) -> np.ndarray:
        if values is None:
            return np.full(m, -1, dtype=np.int64)
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
        values = np.asarray(values)
        if values.ndim == 0:
            values = np.full(m, values)
        if values.shape != (m,) or not np.issubdtype(values.dtype, np.integer):
            raise ConfigError(
                f"{what} must be {m} integers (one per vector) or one integer, "
                f"got shape {values.shape} dtype {values.dtype}"
            )
        return values.astype(np.int64, copy=False)

    def _as_ids(self, ids: Any) -> tuple[np.ndarray, np.ndarray]:
        """(ids (m,) int64, their slots); ConfigError naming unknown ids."""
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().cpu().numpy()
        ids = np.asarray(ids)
        if ids.ndim == 0:
            ids = ids.reshape(1)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise ConfigError(f"ids must be a 1-D array of integers, got {ids.dtype} {ids.shape}")
        ids = ids.astype(np.int64, copy=False)
        pos, known = self._ids.positions(ids)
        if not known.all():
            unknown = ids[~known]
            raise ConfigError(
                f"{unknown.shape[0]} id(s) are not in the store (first: {unknown[:5].tolist()}); "
                "they were never issued, were removed or were evicted"
            )
        return ids, self._ids.slots[pos]

    def _advance(self, time: int | None, step: int) -> int:
        if time is None:
            self._now += step
        else:
            if time < self._now:
                raise ConfigError(
                    f"time={time} is before the store's clock now={self._now}; "
                    "times must not go backwards"
                )
            self._now = int(time)
        return self._now

    # ------------------------------------------------------------------ storage
    def _reserve(self, size: int) -> None:
        """Make room for ``size`` slots (plus the sentinel row missing hits read)."""
        if size <= self._alloc:
            return
        grown = max(size, 2 * self._alloc, 1024)
        if self.capacity is not None:
            grown = min(max(size, self.capacity), grown)
        n = self._n

        def regrow(old: np.ndarray, fill: Any) -> np.ndarray:
            new = np.empty((grown + 1, *old.shape[1:]), dtype=old.dtype)
            new[:n] = old[:n]
            new[grown] = fill
            return new

        self._vectors = regrow(self._vectors, 0.0)
        self._cols = {k: regrow(v, COLUMNS[k][1]) for k, v in self._cols.items()}
        if self._inputs is not None:
            inputs = self._inputs.new_zeros((grown + 1, *self._inputs.shape[1:]))
            inputs[:n] = self._inputs[:n]
            self._inputs = inputs
        self._index.reserve(grown, n)
        self._alloc = grown

    def _check_inputs(self, inputs: Any, m: int) -> torch.Tensor | None:
        if inputs is None:
            if self._inputs is not None and m:
                raise ConfigError(
                    "this store keeps raw inputs (an earlier add passed inputs=); "
                    "pass inputs with every add"
                )
            return None
        if isinstance(inputs, np.ndarray):
            inputs = torch.from_numpy(inputs)
        if not isinstance(inputs, torch.Tensor) or inputs.ndim < 1 or inputs.shape[0] != m:
            raise ConfigError(
                f"inputs must be a tensor with one row per vector ({m}), got "
                f"{type(inputs).__name__} {tuple(getattr(inputs, 'shape', ()))}"
            )
        if self._inputs is None:
            if self._n:
                raise ConfigError(
                    "inputs= given but earlier adds stored memories without inputs; "
                    "decide at the first add whether the store keeps raw inputs"
                )
            return inputs.detach()
        if inputs.shape[1:] != self._inputs.shape[1:] or inputs.dtype != self._inputs.dtype:
            raise ConfigError(
                f"inputs must be {self._inputs.dtype} of shape (m, "
                f"{', '.join(map(str, self._inputs.shape[1:]))}) like the first add's, "
                f"got {inputs.dtype} {tuple(inputs.shape)}"
            )
        return inputs.detach().to(self._inputs.device)

    def add(
        self,
        vectors: np.ndarray | torch.Tensor,
        labels: Any = None,
        tasks: Any = None,
        *,
        inputs: torch.Tensor | np.ndarray | None = None,
        time: int | None = None,
    ) -> np.ndarray:
        """Store vectors (m, dim) with their payload; return their ids.

        labels, tasks: (m,) ints or one int (default -1: unknown).
        inputs: (m, ...) raw inputs kept for replay (decided at the first add).
        time: clock time of the write (default: ``now + 1``); must not go back.
        Returns (m,) int64 ids in input order; -1 for items the eviction policy
        did not store (only ``reservoir`` and ``class_balanced`` refuse newcomers,
        or any policy when m exceeds the capacity).
        """
        x = self._as_matrix(vectors, "vectors")
        m = x.shape[0]
        labels = self._as_column(labels, m, "labels")
        tasks = self._as_column(tasks, m, "tasks")
        raw = self._check_inputs(inputs, m)
        if self.policy.needs_labels and self.capacity is not None and (labels < 0).any():
            raise ConfigError(
                f"eviction={self.policy.name!r} needs a label (>= 0) for every vector; "
                "pass labels= or choose another eviction policy"
            )
        if m == 0:
            return np.empty(0, dtype=np.int64)
        now = self._advance(time, 1)
        n = self._n
        if self.capacity is None or n + m <= self.capacity:
            admit, evict = None, np.empty(0, dtype=np.int64)
        else:
            plan = self._plan(labels, m, now)
            admit, evict = plan.admit, plan.evict
        self._seen += m
        if admit is not None:
            x, labels, tasks = x[admit], labels[admit], tasks[admit]
            raw = None if raw is None else raw[on_device(np.flatnonzero(admit), raw.device)]
        k = x.shape[0]
        reuse, extra = evict[:k], evict[k:]
        fresh = k - reuse.shape[0]
        slots = np.concatenate([reuse, np.arange(n, n + fresh, dtype=np.int64)])
        ids = np.arange(self._next_id, self._next_id + k, dtype=np.int64)
        self._next_id += k

        if reuse.size:
            self._ids.drop(self._cols["id"][reuse])
        self._reserve(n + fresh)
        if raw is not None and self._inputs is None:
            self._inputs = raw.new_zeros((self._alloc + 1, *raw.shape[1:]))
        self._n = n + fresh
        cols = self._cols
        cols["id"][slots] = ids
        cols["label"][slots] = labels
        cols["task"][slots] = tasks
        cols["time"][slots] = now
        cols["last_recall"][slots] = now
        cols["recalls"][slots] = 0
        cols["strength"][slots] = 1.0
        if raw is not None:
            self._inputs[on_device(slots, raw.device)] = raw
        self._ids.append(ids, slots)
        self._write_vectors(slots, x, reused=reuse.shape[0])
        if extra.size:
            self._delete_slots(extra)

        if admit is None:
            return ids
        out = np.full(m, -1, dtype=np.int64)
        out[admit] = ids
        return out

    def _plan(self, labels: np.ndarray, m: int, now: int) -> EvictionPlan:
        n, cols = self._n, self._cols
        view = EvictionView(
            ids=cols["id"][:n],
            labels=cols["label"][:n],
            time=cols["time"][:n],
            last_recall=cols["last_recall"][:n],
            strength=cols["strength"][:n],
            new_ids=np.arange(self._next_id, self._next_id + m, dtype=np.int64),
            new_labels=labels,
            capacity=self.capacity,
            now=now,
            seen=self._seen,
        )
        plan = self.policy.plan(view, self._rng)
        evict = np.asarray(plan.evict, dtype=np.int64)
        admit = np.asarray(plan.admit, dtype=bool)
        if admit.shape != (m,):
            raise ConfigError(
                f"eviction policy {self.policy!r} returned admit of shape "
                f"{admit.shape}, expected ({m},)"
            )
        if np.unique(evict).shape[0] != evict.shape[0] or (
            evict.size and (evict.min() < 0 or evict.max() >= n)
        ):
            raise ConfigError(f"eviction policy {self.policy!r} returned invalid slots to evict")
        if n - evict.shape[0] + int(admit.sum()) > self.capacity:
            raise ConfigError(
                f"eviction policy {self.policy!r} would exceed capacity={self.capacity} "
                f"(keeps {n - evict.shape[0]} + admits {int(admit.sum())})"
            )
        return EvictionPlan(admit=admit, evict=evict)

    def _write_vectors(self, slots: np.ndarray, x: np.ndarray, reused: int) -> None:
        """Write vectors (len(slots), dim) into slots; the first ``reused`` held old ones."""
        self._vectors[slots] = x
        self._index.add(slots, x, reused, self._vectors[: self._n])

    def _delete_slots(self, slots: np.ndarray) -> None:
        """Drop the memories in ``slots``; move the last ones into the holes."""
        slots = np.unique(slots)
        n, after = self._n, self._n - slots.shape[0]
        self._ids.drop(self._cols["id"][slots])
        holes = slots[slots < after]
        tail = np.ones(n - after, dtype=bool)
        tail[slots[slots >= after] - after] = False
        movers = after + np.flatnonzero(tail)  # surviving slots past the end, as many as holes
        for col in self._cols.values():
            col[holes] = col[movers]
        self._vectors[holes] = self._vectors[movers]
        if self._inputs is not None:
            dev = self._inputs.device
            self._inputs[on_device(holes, dev)] = self._inputs[on_device(movers, dev)]
        self._ids.set_slots(self._cols["id"][holes], holes)
        self._n = after
        self._index.delete(slots, holes, movers, self._vectors[:after])

    def remove(self, ids: Any) -> None:
        """Forget the memories with these ids (ConfigError if any is unknown)."""
        _, slots = self._as_ids(ids)
        if slots.size:
            self._delete_slots(slots)

    # ------------------------------------------------------------------ reading
    def _payload(self, slots: np.ndarray, with_inputs: bool) -> Payload:
        cols = self._cols
        inputs = None
        if with_inputs and self._inputs is not None:
            flat = on_device(slots.reshape(-1), self._inputs.device)
            inputs = self._inputs[flat].reshape(*slots.shape, *self._inputs.shape[1:])
        return Payload(*(cols[name][slots] for name in PAYLOAD), inputs=inputs)

    def search(
        self,
        queries: np.ndarray | torch.Tensor,
        k: int,
        *,
        recall: bool = True,
        with_inputs: bool = False,
        time: int | None = None,
    ) -> SearchResult:
        """The k nearest memories of each query (Q, dim), nearest first.

        recall: count the hits as recalled at ``time`` (default ``now``): sets
            last_recall, adds 1 to recalls and to strength (once per search,
            however many queries hit a memory); ``lru`` and ``retention`` read these.
        with_inputs: also gather the hits' raw inputs (Q, k, ...).
        Returns ``SearchResult(ids, distances, payload)``; the payload is read
        after the recall was counted.
        """
        on_gpu = isinstance(queries, torch.Tensor) and queries.device == self._index.query_device
        q = self._gpu_queries(queries) if on_gpu else self._as_matrix(queries, "queries")
        if not isinstance(k, int | np.integer) or not 1 <= k <= self._n:
            raise ConfigError(
                f"k must be between 1 and the number of stored memories ({self._n}), got {k!r}"
            )
        if self.device == "cuda" and k > GPU_MAX_K:
            raise ConfigError(
                f"k={k} but FAISS's GPU search returns at most {GPU_MAX_K} neighbours; use "
                f"k <= {GPU_MAX_K}, or a store with device='cpu'"
            )
        now = self._advance(time, 0)
        dist, slots = self._knn(q, int(k))
        if on_gpu and not np.isfinite(dist).all():  # checked here to spare a synchronisation
            raise ConfigError(
                "queries contain NaN or Inf (or, under metric='cosine', an all-zero row): their "
                "distances are not finite; clean or drop them before searching"
            )
        cols = self._cols
        if recall:
            # fancy-index updates touch a memory once however often it appears
            cols["last_recall"][slots] = now
            cols["recalls"][slots] += 1
            cols["strength"][slots] += 1.0
            self._reset_sentinel()
        return SearchResult(cols["id"][slots], dist, self._payload(slots, with_inputs))

    def _knn(self, q: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances, slots) of the k nearest live memories; slot -1 where none (the one
        FAISS call of a search: ``benchmarks/memory_store.py`` times it by wrapping this)."""
        return self._index.knn(q, k, self._vectors[: self._n])

    @property
    def _ann(self) -> Any:
        """The FAISS index of an ivf (once trained) or hnsw store, else None (benchmarks
        search it directly)."""
        return getattr(self._index, "ann", None)

    def _reset_sentinel(self) -> None:
        for name, (_, fill) in COLUMNS.items():
            self._cols[name][-1] = fill

    def mark_recalled(self, ids: Any, time: int | None = None) -> None:
        """Count these memories as recalled now (as a recalling ``search`` would)."""
        _, slots = self._as_ids(ids)
        now = self._advance(time, 0)
        slots = np.unique(slots)
        self._cols["last_recall"][slots] = now
        self._cols["recalls"][slots] += 1
        self._cols["strength"][slots] += 1.0

    def _memories(self, slots: np.ndarray, with_inputs: bool) -> Memories:
        return Memories(
            ids=self._cols["id"][slots],
            vectors=self._vectors[slots],
            payload=self._payload(slots, with_inputs),
        )

    def get(self, ids: Any, *, with_inputs: bool = True) -> Memories:
        """The memories with these ids (m,), in that order (ConfigError if unknown)."""
        _, slots = self._as_ids(ids)
        return self._memories(slots, with_inputs)

    def sample(
        self,
        n: int,
        generator: np.random.Generator | int | None = None,
        *,
        replace: bool = False,
        with_inputs: bool = True,
    ) -> Memories:
        """n memories drawn uniformly (without replacement unless ``replace``).

        generator: a numpy Generator, a seed, or None for the store's own generator.
        """
        if not isinstance(n, int | np.integer) or n < 0 or (not replace and n > self._n):
            raise ConfigError(
                f"cannot sample {n!r} memories without replacement from {self._n}; "
                "ask for at most len(store) or pass replace=True"
            )
        if replace and n and not self._n:
            raise ConfigError("cannot sample from an empty store")
        rng = self._rng if generator is None else np.random.default_rng(generator)
        slots = rng.choice(self._n, size=int(n), replace=replace).astype(np.int64)
        return self._memories(slots, with_inputs)

    # ------------------------------------------------------------------ persistence
    def _config(self) -> dict[str, Any]:
        if type(self.policy) is not EVICTION_POLICIES.get(self.policy.name):
            raise ConfigError(
                f"cannot save a store with a custom eviction policy {self.policy!r}; "
                "only the named policies are saved"
            )
        return {
            "dim": self.dim,
            "metric": self.metric,
            "kind": self.kind,
            "capacity": self.capacity,
            "eviction": self.policy.name,
            "nlist": self.nlist,
            "nprobe": self._nprobe,
            "train_size": self.train_size,
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.ef_construction,
            "ef_search": self._ef_search,
            "seed": self.seed,
        }

    def to_bytes(self) -> bytes:
        """The whole store as bytes (what ``save`` writes; ``from_bytes`` reads it).

        Format (``continual.memory.store_file``): a checked header then an ``.npz``
        payload (no pickles): columns, vectors, raw inputs as bytes, the index's arrays
        (FAISS index bytes, HNSW node maps) and a JSON ``meta`` record (configuration,
        clock, counters, generator state).
        """
        n = self._n
        state = {
            "format_version": FORMAT_VERSION,
            "config": self._config(),
            "n": n,
            "next_id": self._next_id,
            "seen": self._seen,
            "now": self._now,
            "masked": self._index.masked,
            "rng": self._rng.bit_generator.state,
            "inputs": None,
        }
        arrays: dict[str, np.ndarray] = {"vectors": self._vectors[:n]}
        arrays.update({f"col_{k}": v[:n] for k, v in self._cols.items()})
        if self._inputs is not None:
            live = self._inputs[:n].detach().cpu().contiguous()
            state["inputs"] = {
                "dtype": str(live.dtype).removeprefix("torch."),
                "shape": list(live.shape),
                "device": str(self._inputs.device),
            }
            arrays["inputs"] = live.view(torch.uint8).numpy().reshape(-1)
        arrays.update(self._index.state(n))
        return encode(state, arrays)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the whole store to ``path`` atomically (temp file, fsync, rename; the file's
        permissions follow the umask, like every run file: ``continual.records.write_atomic``)."""
        from continual.records import write_atomic

        path = Path(path)
        write_atomic(path, self.to_bytes())
        if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
            dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str = "auto",
             inputs_device: str | torch.device | None = None) -> VectorStore:
        """Read a store written by ``save``; StoreFileError if the file is damaged.

        The file is checked whole (length and sha256) before anything is built,
        so a truncated or altered file never yields a half-loaded store.
        inputs_device: where the raw inputs go (default: where they were, when this process
        has that device, else the CPU).
        """
        return cls.from_bytes(Path(path).read_bytes(), device=device, source=str(path),
                              inputs_device=inputs_device)

    @classmethod
    def from_bytes(
        cls, data: bytes, *, device: str = "auto", source: str = "VectorStore bytes",
        inputs_device: str | torch.device | None = None,
    ) -> VectorStore:
        """Rebuild a store from ``to_bytes`` output; StoreFileError if damaged.

        source: names the data in error messages (``load`` passes the path).
        inputs_device: as for ``load``.
        """
        state, arrays = decode(data, source)
        try:
            return cls._from_state(state, arrays, device, inputs_device)
        except StoreFileError:
            raise
        except DAMAGED as err:
            raise StoreFileError(f"{source}: inconsistent VectorStore contents ({err})") from err

    @classmethod
    def _from_state(
        cls, state: dict[str, Any], arrays: dict[str, np.ndarray], device: str,
        inputs_device: str | torch.device | None = None,
    ) -> VectorStore:
        store = cls(**state["config"], device=device)
        n = int(state["n"])
        vectors = arrays["vectors"]
        if vectors.shape != (n, store.dim) or any(
            arrays[f"col_{k}"].shape != (n,) for k in COLUMNS
        ):
            raise StoreFileError(f"column lengths disagree with n={n}")
        store._reserve(n)
        store._n = n
        store._vectors[:n] = vectors
        for name in COLUMNS:
            store._cols[name][:n] = arrays[f"col_{name}"]
        ids = store._cols["id"][:n]
        order = np.argsort(ids, kind="stable")
        store._ids.append(ids[order], order.astype(np.int64))
        store._next_id, store._seen = int(state["next_id"]), int(state["seen"])
        store._now, store._index.masked = int(state["now"]), int(state["masked"])
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = state["rng"]
        store._rng = rng
        spec = state["inputs"]
        if spec is not None:
            dtype = getattr(torch, spec["dtype"])
            raw = torch.from_numpy(arrays["inputs"].copy()).view(dtype).reshape(spec["shape"])
            target = inputs_device if inputs_device is not None else gpu.saved_device(spec["device"])
            store._inputs = raw.new_zeros((store._alloc + 1, *raw.shape[1:])).to(target)
            store._inputs[:n] = raw.to(target)
        store._index.load_state(arrays, n, store._vectors[:n])
        return store
