"""Long-term memory (LTM): a learner that writes, reads, consolidates and forgets memories.

LTM follows the memory cycle of Jiang et al. 2024, "Long Term Memory: The Foundation of AI
Self-Evolution" (arXiv 2410.15665, Sec. 3-4: an external memory that stores processed
interaction data, is retrieved at inference, and is distilled back into the model), made
concrete for classification streams over ``continual.memory.VectorStore`` (FAISS). The paper is a
position paper with no algorithm or equations to follow; the four verbs below are our
design, each configurable:

- **write**: every incoming sample is stored as an embedding with its label, task (-1 when the
  stream hides it) and time (the learner's step), plus its raw input when replay or
  re-embedding needs it. The embedding comes from ``encoder``:
  ``random_projection`` (a fixed Gaussian projection of the flattened input,
  Johnson-Lindenstrauss: distances are kept up to a small distortion), ``frozen_backbone`` (a
  frozen copy of the backbone taken at construction - random weights unless the model was
  pretrained - via ``model.features``) or ``backbone`` (the trained backbone's penultimate
  layer ``model.features(x)``). ``embed_dim`` optionally projects any of them to fewer
  dimensions (fewer bytes per memory).
- **read**: the k nearest memories vote (ACM: Prabhu et al. 2023, "Online Continual Learning
  Without the Storage Constraint", arXiv 2305.09253, Sec. 3: a kNN classifier over a fixed
  feature extractor whose memory holds the stream). k adapts online: every incoming batch is
  scored by kNN for each k in ``k_choices`` (one search of max(k) neighbours) *before* it is
  written, and the k with the most correct answers over the last ``k_window`` samples is used
  next. The kNN distribution may be blended with the parametric head:
  p = (1 - head_weight) p_knn + head_weight softmax(head(x)). When the k neighbours agree,
  p_knn is one-hot, so up to head_weight 0.5 the blend always answers as kNN; above it, the
  head's class wins when its softmax margin over the kNN class exceeds
  (1 - head_weight) / head_weight.
- **consolidate**: every ``consolidate_every`` steps, ``consolidate_steps`` gradient steps on
  memories replayed into the model: drawn uniformly (``replay="sample"``), the nearest
  memories of the incoming batch (``"nearest"``) or its nearest memories of *other* classes
  (``"confusable"``: the old samples a step on the new ones is most likely to overwrite - the
  intuition of MIR, Aljundi et al. 2019, with embedding proximity in place of the loss
  increase). Retrieved memories are topped up with uniform samples when too few are found.
  With ``train_on_stream`` the incoming batch joins the first of these steps (and is trained
  on alone at steps with no consolidation).
- **forget**: the store's eviction policy at its ``capacity`` (``continual.memory.eviction``:
  reservoir, fifo, lru, retention, class_balanced); ``forget(ids)`` removes memories explicitly.

Stale embeddings. With ``encoder="backbone"`` the stored keys were computed by older weights.
We store raw inputs and **re-embed every memory at each consolidation**, after its gradient
steps (cost: one forward pass over the store per consolidation). The store has no in-place
vector update, so re-embedding rebuilds it from its memories, adding them back in write-time
order with their write times: labels, tasks, times and FIFO order survive; recall counts,
strengths and the reservoir's count of items seen do not. That is why ``backbone`` refuses
the ``lru``, ``retention`` and ``reservoir`` policies when a capacity is set. Between
consolidations, queries use the current backbone against keys up to ``consolidate_every``
steps old. The frozen encoders never go stale, which is why the shipped configs use one.

Where this departs from ACM: no pretrained feature extractor ships offline here, so
``ltm_knn`` uses a fixed random projection of the pixels (chosen on held-out *training*
data of Fashion-MNIST: at the experiment's byte budget, 64 dimensions - 2450 keys - gave the
best kNN accuracy of 16 to 256, as good as raw pixels with half as many memories; see
benchmarks/results/ltm.md); ACM keeps every sample, we may set a capacity (a byte budget);
k starts at ``k_choices[0]`` and a tie between ks keeps the current k (else the smallest);
votes are unweighted counts and a tie between classes goes to the class of the nearer
neighbour (ACM's mode takes the smallest label).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from continual.models.parameters import count_parameters
from continual.strategies.base import SupervisedStrategy
from continual.types import Batch, ConfigError

ENCODERS = ("random_projection", "frozen_backbone", "backbone")
REPLAY_MODES = ("sample", "nearest", "confusable")
_STALE_UNSAFE = ("lru", "retention", "reservoir")  # lose their statistics when re-embedding


def vote_scores(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """kNN vote scores: labels (Q, k) int64 of the k nearest (nearest first, -1: no hit)
    -> (Q, n_classes) float32, (k + 1) * votes(c) + (k - first_rank(c)) for voted classes, 0
    otherwise. Its argmax is the majority label, ties going to the class of the nearer
    neighbour; normalised it is the vote share up to that tie-break (at most 1/(k+1) off)."""
    q, k = labels.shape
    valid = labels >= 0
    lab = labels.clamp_min(0)
    votes = torch.zeros(q, n_classes, device=labels.device).scatter_add_(1, lab, valid.float())
    rank = torch.arange(k, device=labels.device).expand(q, k)
    rank = torch.where(valid, rank, torch.full_like(rank, k))
    first = torch.full((q, n_classes), k, dtype=torch.long, device=labels.device)
    first = first.scatter_reduce(1, lab, rank, reduce="amin")
    return torch.where(votes > 0, (k + 1) * votes + (k - first).float(), torch.zeros_like(votes))


def knn_distribution(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Normalised ``vote_scores``: (Q, k) labels -> (Q, n_classes); uniform where no hit."""
    scores = vote_scores(labels, n_classes)
    total = scores.sum(1, keepdim=True)
    uniform = torch.full_like(scores, 1.0 / n_classes)
    return torch.where(total > 0, scores / total.clamp_min(1e-12), uniform)


class AdaptiveK:
    """ACM's adaptive k: the k in ``choices`` with the most correct kNN answers on the last
    ``window`` incoming samples (scored before they were written). A tie keeps the current k,
    else takes the smallest."""

    def __init__(self, choices: list[int], window: int) -> None:
        if not choices or any(not isinstance(k, int) or k < 1 for k in choices):
            raise ConfigError(f"k_choices must be positive ints, e.g. [1, 2, 4, 8, 16]; got {choices}")
        if sorted(set(choices)) != list(choices):
            raise ConfigError(f"k_choices must be increasing without repeats, got {choices}")
        if window < 1:
            raise ConfigError(f"k_window must be >= 1 sample, got {window}")
        self.choices = list(choices)
        self.window = int(window)
        self.hits = torch.zeros(self.window, len(choices), dtype=torch.bool)  # ring buffer
        self.pos = 0
        self.current = 0  # index into choices

    @property
    def k(self) -> int:
        return self.choices[self.current]

    def update(self, correct: torch.Tensor) -> None:
        """correct: (B, len(choices)) bool, sample b answered right by choices[j]."""
        rows = correct[-self.window :].to("cpu", torch.bool)
        idx = (self.pos + torch.arange(rows.shape[0])) % self.window
        self.hits[idx] = rows
        self.pos = int((self.pos + rows.shape[0]) % self.window)
        counts = self.hits.sum(0)
        best = counts.max()
        if counts[self.current] != best:
            self.current = int(torch.nonzero(counts == best)[0, 0])

    def state_dict(self) -> dict[str, Any]:
        return {"hits": self.hits.clone(), "pos": self.pos, "current": self.current}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.hits = state["hits"].clone()
        self.pos, self.current = int(state["pos"]), int(state["current"])


class LongTermMemory(SupervisedStrategy):
    """LTM over a FAISS ``VectorStore``: write, read (adaptive kNN), consolidate, forget.

    Args (see the module docstring for what each verb does):
        model: the backbone (a ``continual.models.Classifier``; ``features`` is needed for the
            backbone encoders).
        encoder: 'random_projection', 'frozen_backbone' or 'backbone'.
        embed_dim: project embeddings to this many dimensions with a fixed Gaussian matrix
            (required for 'random_projection'; None keeps the encoder's own dimension).
        metric, store_kind, store_device, store_options: the store's metric ('l2', 'ip',
            'cosine'), index kind ('flat', 'ivf', 'hnsw'), device and further ``VectorStore``
            options (nlist, nprobe, hnsw_m, ...). store_device 'auto' follows the model: the
            model's GPU when the model is on one and FAISS sees a GPU (not hnsw), else the CPU;
            'cuda' is the model's GPU (GPU 0 for a CPU model); 'cpu' or 'cuda:N' as given.
        capacity, eviction: most memories kept (None: all) and the eviction policy.
        k_choices, k_window: candidate ks and the window (samples) that picks among them.
        head_weight: weight of the parametric head's softmax in predictions (0: kNN only,
            1: head only).
        train_on_stream: take a gradient step on every incoming batch.
        consolidate_every: steps between consolidations (0: never).
        consolidate_steps, replay_batch_size, replay, retrieve_k: gradient steps per
            consolidation, memories per step, how they are chosen, and neighbours searched
            per incoming sample when retrieving.
        n_classes: classes (default ``model.n_classes``).
        seed: seeds the projection and the store (reservoir, sampling).
        **train_options: lr, optimizer, momentum, weight_decay (``SupervisedStrategy``).
    """

    def __init__(
        self,
        model: nn.Module,
        encoder: str = "random_projection",
        embed_dim: int | None = 64,
        metric: str = "l2",
        store_kind: str = "flat",
        store_device: str = "auto",
        store_options: dict[str, Any] | None = None,
        capacity: int | None = None,
        eviction: str = "reservoir",
        k_choices: list[int] | None = None,
        k_window: int = 500,
        head_weight: float = 0.0,
        train_on_stream: bool = False,
        consolidate_every: int = 0,
        consolidate_steps: int = 1,
        replay_batch_size: int = 10,
        replay: str = "sample",
        retrieve_k: int = 16,
        n_classes: int | None = None,
        seed: int = 0,
        **train_options: Any,
    ) -> None:
        super().__init__(model, **train_options)
        if encoder not in ENCODERS:
            raise ConfigError(f"unknown encoder {encoder!r}; choose one of {list(ENCODERS)}")
        if encoder == "random_projection" and embed_dim is None:
            raise ConfigError("encoder='random_projection' needs embed_dim (e.g. 64)")
        if embed_dim is not None and embed_dim < 1:
            raise ConfigError(f"embed_dim must be >= 1 (or None), got {embed_dim}")
        if encoder != "random_projection" and not hasattr(model, "features"):
            raise ConfigError(
                f"encoder={encoder!r} reads model.features(x), which {type(model).__name__} "
                "lacks; use a continual.models backbone or encoder='random_projection'"
            )
        if not 0.0 <= head_weight <= 1.0:
            raise ConfigError(f"head_weight must lie in [0, 1], got {head_weight}")
        if replay not in REPLAY_MODES:
            raise ConfigError(f"unknown replay {replay!r}; choose one of {list(REPLAY_MODES)}")
        for name, value in (("consolidate_every", consolidate_every),):
            if value < 0:
                raise ConfigError(f"{name} must be >= 0 (0: never), got {value}")
        for name, value in (("consolidate_steps", consolidate_steps), ("retrieve_k", retrieve_k),
                            ("replay_batch_size", replay_batch_size)):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if capacity is not None and capacity < 1:
            raise ConfigError(f"capacity must be >= 1 (or None: keep everything), got {capacity}")
        trains = train_on_stream or consolidate_every > 0
        if head_weight > 0 and not trains:
            raise ConfigError(
                f"head_weight={head_weight} blends in a head that is never trained; set "
                "train_on_stream=true or consolidate_every > 0, or head_weight=0"
            )
        if encoder == "backbone" and trains and consolidate_every == 0:
            raise ConfigError(
                "encoder='backbone' with a training backbone needs consolidate_every > 0: "
                "stored embeddings are refreshed only at consolidation and would go stale"
            )
        if encoder == "backbone" and capacity is not None and eviction in _STALE_UNSAFE:
            raise ConfigError(
                f"encoder='backbone' rebuilds the store to re-embed it, which resets what "
                f"eviction={eviction!r} relies on; use 'fifo' or 'class_balanced', or a frozen encoder"
            )
        n_classes = n_classes if n_classes is not None else getattr(model, "n_classes", None)
        if n_classes is None or n_classes < 1:
            raise ConfigError(f"cannot tell the number of classes of {type(model).__name__}; pass n_classes")
        self.encoder, self.embed_dim, self.n_classes = encoder, embed_dim, int(n_classes)
        from continual.memory.gpu import parse_device

        parse_device(store_device)  # a name the store cannot take is refused here, not at the first write
        self.metric, self.store_kind, self.store_device = metric, store_kind, store_device
        self.store_options = dict(store_options or {})
        self.capacity, self.eviction = capacity, eviction
        self.adaptive = AdaptiveK([1, 2, 4, 8, 16] if k_choices is None else list(k_choices), k_window)
        self.head_weight = float(head_weight)
        self.train_on_stream, self.consolidate_every = train_on_stream, consolidate_every
        self.consolidate_steps, self.replay_batch_size = consolidate_steps, replay_batch_size
        self.replay, self.retrieve_k, self.seed = replay, retrieve_k, seed
        self.keep_inputs = consolidate_every > 0 or encoder == "backbone"
        self.uses_model = trains or head_weight > 0 or encoder == "backbone"
        self.takes_gradient_steps = trains  # else the optimiser never steps (continual.types.Strategy)
        self.frozen: nn.Module | None = None
        if encoder == "frozen_backbone":
            self.frozen = copy.deepcopy(model).eval().requires_grad_(False)
        self.projection: torch.Tensor | None = None  # (in_dim, embed_dim), made at first use
        self.store: Any = None  # memory.VectorStore, made at the first write
        self.step_count = 0
        self._input_shape: tuple[int, ...] | None = None
        self._input_bytes = 0

    # ------------------------------------------------------------------ encoding
    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings of inputs x: (B, ...) -> (B, dim) float32, no gradient."""
        if self.encoder == "random_projection":
            z = x.reshape(x.shape[0], -1).float()
        else:
            net = self.frozen if self.encoder == "frozen_backbone" else self.model
            was_training = net.training
            net.eval()
            z = net.features(x).float()
            net.train(was_training)
        if self.embed_dim is None:
            return z
        if self.projection is None:
            with torch.inference_mode(False):  # predict() may be first: a normal tensor
                g = torch.Generator().manual_seed(self.seed + 7919)  # not the store's stream
                r = torch.randn(z.shape[1], self.embed_dim, generator=g)
                self.projection = (r / math.sqrt(self.embed_dim)).to(z.device)
        if z.shape[1] != self.projection.shape[0]:
            raise ConfigError(
                f"inputs give {z.shape[1]} features but the projection was built for "
                f"{self.projection.shape[0]}; every batch must have the same input shape"
            )
        return z @ self.projection

    # ------------------------------------------------------------------ the four verbs
    def write(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor | None,
              emb: torch.Tensor | None = None) -> np.ndarray:
        """Store x: (B, ...) with labels y: (B,) and tasks (B,) or None (-1); returns ids (B,),
        -1 where the eviction policy refused an item."""
        emb = self.encode(x) if emb is None else emb
        if self.store is None:
            self.store = self._new_store(emb.shape[1])
        return self.store.add(emb, y, -1 if task is None else task,
                              inputs=x.detach() if self.keep_inputs else None, time=self.step_count)

    def read(self, emb: torch.Tensor, k: int) -> tuple[torch.Tensor, np.ndarray]:
        """Labels (Q, k') on the host and ids (Q, k') of the k' = min(k, len) nearest
        memories of embeddings emb: (Q, dim); nothing is marked as recalled."""
        hits = self.store.search(emb, min(k, len(self.store)), recall=False)
        return torch.from_numpy(hits.payload.label), hits.ids

    def consolidate(self, emb: torch.Tensor, y: torch.Tensor, x: torch.Tensor | None = None
                    ) -> tuple[dict[str, Any], np.ndarray]:
        """``consolidate_steps`` gradient steps on replayed memories, retrieved near the
        incoming batch's embeddings emb: (B, dim) with labels y: (B,); the batch's inputs x:
        (B, ...), when given, join the first step. Returns (last step's output, ids replayed)."""
        n = self.replay_batch_size
        ranked = self._retrieve(emb, y) if self.replay != "sample" else np.empty(0, np.int64)
        out: dict[str, Any] = {}
        used = []
        for i in range(self.consolidate_steps):
            ids = ranked[i * n : (i + 1) * n]
            if ids.shape[0] < n:  # top up with uniform samples
                extra = self.store.sample(min(n, len(self.store)), with_inputs=False).ids
                ids = np.concatenate([ids, extra[~np.isin(extra, ids)]])[:n]
            mem = self.store.get(ids, with_inputs=True)
            bx = mem.payload.inputs.to(self.device, non_blocking=True)
            by = torch.from_numpy(mem.payload.label).to(self.device, non_blocking=True)
            if i == 0 and x is not None:
                bx, by = torch.cat([x, bx]), torch.cat([y, by])
            out = self.fit_batch(bx, by)
            used.append(ids)
        return out, np.concatenate(used)

    def forget(self, ids: Any) -> None:
        """Remove these memories (ConfigError for unknown ids); eviction forgets on its own."""
        if self.store is None:
            raise ConfigError("the memory is empty: there is nothing to forget")
        self.store.remove(ids)

    # ------------------------------------------------------------------ learner contract
    def observe(self, batch: Batch) -> dict[str, Any]:
        x, y = batch.x, batch.y
        self._check_batch(x, y)
        emb = self.encode(x)
        # the host's copies of the batch's embeddings, labels and tasks, in one transfer (on a
        # GPU, the step's one synchronisation besides a GPU store's search)
        emb_h, y_h, task_h = self._checked_host_copy(x, y, batch.task, emb)
        queries = emb if self._store_on_gpu() else emb_h
        recalled: list[np.ndarray] = []
        # read: score the batch before anything about it is learnt (test-then-train)
        knn_p = None
        if self.store is not None and len(self.store) and self.head_weight < 1:
            labels, ids = self.read(queries, self.adaptive.choices[-1])
            recalled.append(ids.reshape(-1))
            correct = torch.stack(  # on the host, where adaptive k keeps its window
                [vote_scores(labels[:, :k], self.n_classes).argmax(1) == y_h
                 for k in self.adaptive.choices], dim=1)
            knn_p = knn_distribution(labels[:, : self.adaptive.k].to(self.device, non_blocking=True),
                                     self.n_classes)
        pred = self._blend(knn_p, x).argmax(1)
        out: dict[str, Any] = {"online_correct": (pred == y).sum(), "knn_k": float(self.adaptive.k)}
        # consolidate (gradient steps); if a step raises NonFiniteLoss nothing is written
        now = self.step_count + 1
        due = (self.consolidate_every > 0 and now % self.consolidate_every == 0
               and self.store is not None and len(self.store) > 0)
        if due:
            fit, replayed = self.consolidate(queries, y_h, x if self.train_on_stream else None)
            out.update(fit)
            recalled.append(replayed)
        elif self.train_on_stream:
            out.update(self.fit_batch(x, y))
        self.step_count = now
        if knn_p is not None:
            self.adaptive.update(correct)
        if recalled and self.store is not None:
            ids = np.concatenate(recalled)
            self.store.mark_recalled(ids[ids >= 0], time=self.step_count)
        if self.encoder == "backbone" and due:
            self._reembed()
        # write (with the current weights when the backbone is the encoder)
        self.write(x, y_h, task_h, emb=None if self.encoder == "backbone" else emb_h)
        return out

    @torch.inference_mode()
    def predict(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probabilities (B, n_classes) of the (blended) kNN distribution; no state changes."""
        knn_p = None
        if self.store is not None and len(self.store) and self.head_weight < 1:
            labels, _ = self.read(self.encode(x), self.adaptive.k)
            knn_p = knn_distribution(labels.to(x.device, non_blocking=True), self.n_classes)
        return torch.log(self._blend(knn_p, x).clamp_min(1e-12))

    # ------------------------------------------------------------------ helpers
    def _blend(self, knn_p: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """(B, n_classes) probabilities: kNN (uniform when the memory is empty) and head."""
        if knn_p is None:
            knn_p = torch.full((x.shape[0], self.n_classes), 1.0 / self.n_classes, device=x.device)
        if self.head_weight == 0:
            return knn_p
        with torch.no_grad():
            was_training = self.model.training
            self.model.eval()
            head = F.softmax(self.model(x).float(), dim=1)
            self.model.train(was_training)
        return (1 - self.head_weight) * knn_p + self.head_weight * head

    def _retrieve(self, emb: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        """Ids of retrieved memories, best first: rank-major over the batch, no repeats."""
        labels, ids = self.read(emb, self.retrieve_k)
        keep = ids >= 0
        if self.replay == "confusable":
            keep &= (labels != y.cpu()[:, None]).numpy()
        ranked = ids.T[keep.T]  # nearest of every query first, then the second nearest...
        _, first = np.unique(ranked, return_index=True)
        return ranked[np.sort(first)]

    def _store_device_name(self) -> str:
        """The store's device (see ``store_device`` in the class docstring)."""
        from continual.memory import gpu

        if self.store_device not in ("auto", "cuda"):
            return self.store_device
        on_gpu = self.device.type == "cuda"
        model_gpu = f"cuda:{self.device.index if on_gpu and self.device.index is not None else 0}"
        if self.store_device == "cuda":
            return model_gpu
        if on_gpu and self.store_kind != "hnsw" and gpu.faiss_gpu_count() > 0:
            return model_gpu
        return "cpu"

    def _store_on_gpu(self) -> bool:
        return self.store is not None and self.store.device == "cuda"

    def _new_store(self, dim: int) -> Any:
        from continual.memory.vector_store import VectorStore

        return VectorStore(dim, metric=self.metric, kind=self.store_kind, capacity=self.capacity,
                           eviction=self.eviction, device=self._store_device_name(), seed=self.seed,
                           **self.store_options)

    def _reembed(self) -> None:
        """Recompute every key with the current backbone by rebuilding the store (see the
        module docstring: times, labels, tasks and FIFO order survive)."""
        store = self.store
        if not len(store):
            return
        mem = store.get(store.ids(), with_inputs=True)
        order = np.lexsort((mem.ids, mem.payload.time))
        x = mem.payload.inputs[torch.from_numpy(order).to(mem.payload.inputs.device)].to(self.device)
        emb = torch.cat([self.encode(x[i : i + 1024]) for i in range(0, x.shape[0], 1024)])
        labels, tasks, times = (mem.payload.label[order], mem.payload.task[order],
                                mem.payload.time[order])
        fresh = self._new_store(store.dim)
        for chunk in np.split(np.arange(order.shape[0]), np.flatnonzero(np.diff(times)) + 1):
            sel = torch.from_numpy(chunk).to(self.device)
            fresh.add(emb[sel], labels[chunk], tasks[chunk], inputs=x[sel], time=int(times[chunk[0]]))
        self.store = fresh

    def _check_batch(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Shapes: x (B, ...) of the memory's one input shape, y (B,)."""
        if x.ndim < 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise ConfigError(
                f"a batch needs x: (B, ...) and y: (B,), got x {tuple(x.shape)} and y {tuple(y.shape)}"
            )
        if self._input_shape is None:
            self._input_shape = tuple(x.shape[1:])
            self._input_bytes = x[0].numel() * x.element_size() if self.keep_inputs else 0
        elif tuple(x.shape[1:]) != self._input_shape:
            raise ConfigError(
                f"inputs of shape {tuple(x.shape[1:])} after {self._input_shape}: a memory "
                "holds one input shape"
            )

    def _checked_host_copy(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor | None,
                           emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The host's (emb (B, dim) float32, y (B,), task (B,) or None), copied from the device
        in one transfer (exact: float64 holds them all); refuses labels out of range and
        non-finite inputs."""
        columns = [emb.double(), y.double()[:, None], torch.isfinite(x).flatten(1).all(1).double()[:, None]]
        if task is not None:
            columns.append(task.double()[:, None])
        packed = torch.cat(columns, 1).cpu()
        d = emb.shape[1]
        emb_h, y_h, finite = packed[:, :d].float(), packed[:, d].long(), packed[:, d + 1].bool()
        if y_h.numel() and (int(y_h.min()) < 0 or int(y_h.max()) >= self.n_classes):
            raise ConfigError(f"labels must lie in [0, {self.n_classes}), got {y_h.min()}..{y_h.max()}")
        if not finite.all():
            raise ConfigError("batch.x holds NaN or Inf; clean the stream before it reaches the memory")
        return emb_h, y_h, None if task is None else packed[:, d + 2].long()

    # ------------------------------------------------------------------ bookkeeping
    def bytes_per_memory(self) -> int:
        """Bytes of one memory's data: its float32 key plus its raw input when kept (the
        store's payload columns - label, task, time, recall counts: 56 bytes - not counted)."""
        dim = self.store.dim if self.store is not None else (self.embed_dim or 0)
        return 4 * dim + self._input_bytes

    def summary(self) -> dict[str, Any]:
        n = 0 if self.store is None else len(self.store)
        return {"memories": n, "bytes_per_memory": self.bytes_per_memory(),
                "memory_bytes": n * self.bytes_per_memory(), "knn_k_final": self.adaptive.k}

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Its optimiser when it takes gradient steps; none otherwise (no lr to log or schedule)."""
        return super().optimizers() if self.takes_gradient_steps else []

    def parameter_count(self) -> int:
        """Parameters the learner uses: the model if it trains or predicts, the frozen
        encoder, and the projection matrix."""
        count = count_parameters(self.model) if self.uses_model else 0
        if self.frozen is not None:
            count += count_parameters(self.frozen)
        return count + (0 if self.projection is None else self.projection.numel())

    def state_dict(self) -> dict[str, Any]:
        data = b"" if self.store is None else self.store.to_bytes()
        return {
            **super().state_dict(),
            "frozen": None if self.frozen is None else self.frozen.state_dict(),
            "projection": None if self.projection is None else self.projection.cpu(),
            "store": torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else None,
            "adaptive": self.adaptive.state_dict(),
            "step_count": self.step_count,
            "seed": self.seed,
            "input_shape": None if self._input_shape is None else list(self._input_shape),
            "input_bytes": self._input_bytes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from continual.memory.vector_store import VectorStore

        super().load_state_dict(state)
        if self.frozen is not None and state["frozen"] is not None:
            self.frozen.load_state_dict(state["frozen"])
        proj = state["projection"]
        self.projection = None if proj is None else proj.to(self.device)
        blob = state["store"]
        self.store = None if blob is None else VectorStore.from_bytes(
            blob.numpy().tobytes(), device=self._store_device_name(), source="LTM checkpoint",
            inputs_device=self.device)
        self.adaptive.load_state_dict(state["adaptive"])
        self.step_count = int(state["step_count"])
        self.seed = int(state["seed"])  # the projection and rebuilt stores derive from it
        shape = state["input_shape"]
        self._input_shape = None if shape is None else tuple(shape)
        self._input_bytes = int(state["input_bytes"])
