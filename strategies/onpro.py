"""OnPro: online prototype learning for online continual learning.

Wei, Ye, Huang, Zhang, Shan, "Online Prototype Learning for Online Continual
Learning", ICCV 2023 (arXiv 2308.00301); official code github.com/weilllllls/OnPro
(read to understand it; this is our own implementation).

One training step (section 3 of the paper, ``train.py`` of the official code):

1. sample m = min(64, 7 x classes seen) buffer items on a later task (the official
   ``train_other_tasks``); on the first task, ``buffer_batch_size`` items for L_seen only;
2. APF (adaptive prototypical feedback, Sec. 3.3): mix a share ``mixup_base_rate``
   of them by random mixup and spend the rest on class pairs drawn with
   probability softmax(1 / ||p_a - p_b||) (Eq. 7) over the prototype distances;
3. rotation views (OCM): 16 (or 4) rotated copies with pseudo-labels y + C*i, each
   paired with an augmented view (flip, grayscale, resized crop);
4. L_INS: OCM's supervised NT-Xent over S = lambda (z f_slice^T + z z^T) (Eq. 3);
5. L_OPE (online prototype equilibrium, Eq. 4-6): a contrastive loss over the
   class prototypes of two views, for the incoming batch (L_new) and for an
   un-mixed buffer sample (L_seen), whose prototypes APF uses next step;
6. L_CE on the mixed buffer batch (on the augmented incoming batch in the first
   task); loss = L_CE + L_INS + L_new + L_seen, one Adam step; reservoir insertion.

Where this departs from the paper or its code (each on purpose):

- ``rotations=4`` keeps only the four global rotations (the official code always
  makes 16 copies: 4 rotations x 4 "half-image 180 degree" variants). It is a
  switchable CPU saving; ``rotations=16`` is the faithful setting.
- No rotation classifier head: the official model has none either; the rotation
  pseudo-labels only choose the positives of L_INS.
- The official code keeps L_seen on every step after the very first one of the
  first task and skips APF on the first step of every later task; we do the same
  (the issue's summary "L_seen skipped on the first batch of every task" differs).
- L_INS on the incoming batch drops the constant -log(eps) term the official code
  adds for each sample's similarity with itself; the gradient is unchanged.
- Grayscale is skipped for one-channel inputs (they are gray already).
- Class ids come from the classes seen, not from task id x classes per task, so
  any class order and task-free streams work. On task-free streams a task starts
  when a class never seen before appears in the batch.
- With ``ope=False`` the buffer prototypes APF needs are still computed, without
  gradient. With ``apf=False`` the whole buffer sample gets random mixup (the
  paper's ablation). If fewer than two classes have prototypes, APF's pair share
  is random mixup too (the official code would fail there).
- No mixed precision (the official code uses CUDA autocast).
- Host-device traffic: the step copies the incoming labels to the host once and APF's pair
  probabilities once (on a GPU, its two synchronisations); class sets, pair counts, the
  buffer's labels and the draws that depend on them live on the host, drawn by the CPU
  generator (on the CPU the draws are the same as drawing on the device).

Inputs must be image batches (B, C, H, W), square when ``rotations`` is 4 or 16: the rotation
pseudo-labels and the augmented views (flip, resized crop, grayscale) are defined on images,
and with identical views the contrastive losses would have nothing to contrast. Anything else
(e.g. the vector inputs of ``stream=drift_sea``) is refused at its first batch with a
ConfigError saying so, before anything is learnt. A NaN/Inf loss raises NonFiniteLoss before
any weight, prototype or buffer changes (``continual.strategies.base.guarded_step``).

Kept from the official code although the paper does not say so: L_INS uses lambda 1
in the first task; APF pairs are (a, b) with a < b by class id and an unmixed pair
item is a pure a-item, so the lower id (with tasks in class order: the older class)
gets about 0.7 of the pair share's label weight; mixed buffer items get the soft
label (1 - lam) y_a + lam y_b as their L_INS pseudo-label.

The default lr 5e-4 is the paper's, tuned for about 1,000 steps a task; on much
shorter streams new classes are learned too slowly (benchmarks/results/onpro.md).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd.profiler import record_function
from torch.nn import functional as F

from continual.memory.buffers import ReservoirBuffer
from continual.strategies.augment import augmented_view
from continual.strategies.base import GradientStrategy, make_optimizer, require_at_least, snapshot
from continual.types import Batch, ConfigError, NonFiniteLoss, TaskInfo

ROTATIONS = (1, 4, 16)


# --------------------------------------------------------------------------- views


def _rotate_half(x: torch.Tensor, left: bool) -> torch.Tensor:
    """Rotate the left (or right) half of each image by 180 degrees in place."""
    out = x.clone()
    half = x.shape[-1] // 2
    cols = slice(0, half) if left else slice(half, None)
    out[..., cols] = x[..., cols].flip(-2, -1)
    return out


def check_rotations(rotations: int) -> None:
    """Refuse a number of rotation copies other than 1, 4 or 16."""
    if rotations not in ROTATIONS:
        raise ConfigError(f"rotations must be one of {ROTATIONS}, got {rotations}; "
                          "16 is the paper's setting, 4 the documented CPU saving")


def rotation_views(x: torch.Tensor, y: torch.Tensor, n_classes: int, rotations: int = 16
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """OCM's rotation copies with their pseudo-labels (paper Sec. 3.1, official ``Rotation``).

    x: (B, C, H, W), y: (B,) -> copies (R*B, C, H, W), labels (R*B,) with copy i of
    sample b at row i*B + b labelled y_b + n_classes * i. ``y`` may be float (the
    official code gives mixed buffer samples the soft label (1-lam) y_a + lam y_b).

    rotations=16 (faithful): copy i = 4g + k, global rotation g in (0, 180, 90, 270)
    degrees (counter-clockwise, ``torch.rot90``) of inner variant k in (identity, left
    half rotated by 180, both halves, right half). rotations=4: g only. 1: x itself.
    """
    check_rotations(rotations)
    if rotations == 16:
        both = _rotate_half(_rotate_half(x, left=True), left=False)
        inner = torch.cat([x, _rotate_half(x, left=True), both, _rotate_half(x, left=False)])
    else:
        inner = x
    if rotations == 1:
        copies = inner
    else:
        copies = torch.cat([torch.rot90(inner, k, (2, 3)) for k in (0, 2, 1, 3)])
    labels = torch.cat([y + n_classes * i for i in range(rotations)])
    return copies, labels


# --------------------------------------------------------------------------- APF


def random_mixup(x: torch.Tensor, y: torch.Tensor, p: float, lam_range: tuple[float, float]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random mixup within a batch, as kornia's ``RandomMixUpV2`` that the official APF uses.

    x: (N, ...), y: (N,) -> mixed x (N, ...), labels (N, 3) = (y_a, y_b, lam). With
    probability p the batch is mixed at all; then each sample, with probability p,
    gets lam ~ U(lam_range) and a partner from a random permutation (else lam = 0).
    """
    n = x.shape[0]
    dev = x.device
    if n == 0 or torch.rand(()) >= p:
        return x, torch.stack([y.float(), y.float(), torch.zeros(n, device=dev)], 1)
    partner = torch.randperm(n, device=dev)
    lam = torch.empty(n, device=dev).uniform_(*lam_range) * (torch.rand(n, device=dev) < p).float()
    lam_x = lam.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    mixed = x * (1 - lam_x) + x[partner] * lam_x
    return mixed, torch.stack([y.float(), y[partner].float(), lam], 1)


def apf_pair_probabilities(prototypes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 7: class pair (a, b) is mixed with probability softmax over pairs of 1 / ||p_a - p_b||.

    prototypes: (K, D) -> pairs (K(K-1)/2, 2) of row indices a < b in
    ``itertools.combinations`` order, probabilities (K(K-1)/2,). Close classes
    (easily confused) are mixed more often.
    """
    k = prototypes.shape[0]
    pairs = torch.triu_indices(k, k, 1, device=prototypes.device).t()
    dist = torch.pdist(prototypes).clamp_min(1e-12)
    return pairs, torch.softmax(1.0 / dist, dim=0)


def apf_pair_counts(probs: torch.Tensor, n: int) -> torch.Tensor:
    """Split n samples over pairs: round(p * n), the rounding error spread at random (official).

    probs: (P,) -> counts (P,) int64 summing to n.
    """
    counts = torch.round(probs * n).long()
    diff = n - int(counts.sum())
    if diff > 0:
        counts[torch.randperm(counts.numel(), device=counts.device)[:diff]] += 1
    elif diff < 0:
        nonzero = counts.nonzero().squeeze(1)
        counts[nonzero[torch.randperm(nonzero.numel(), device=counts.device)[:-diff]]] -= 1
    return counts


def _sample_of_class(labels: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    # (called with host tensors by apf_mixup: bincount and max would each wait for a GPU)
    """For each class id in wanted: (n,), the index of a uniformly drawn item of labels with it."""
    order = torch.argsort(labels)
    counts = torch.bincount(labels, minlength=int(wanted.max()) + 1)
    starts = torch.cumsum(counts, 0) - counts
    pick = starts[wanted] + torch.floor(torch.rand(wanted.numel(), device=labels.device)
                                        * counts[wanted]).long()
    return order[pick]


def apf_mixup(mem_x: torch.Tensor, mem_y: torch.Tensor,
              buffer_x: torch.Tensor, buffer_y: torch.Tensor, class_means: torch.Tensor,
              base_rate: float = 0.75, mixup_p: float = 0.6,
              lam_range: tuple[float, float] = (0.0, 0.6), alpha: float = 0.4,
              buffer_y_host: torch.Tensor | None = None, has_prototype: torch.Tensor | None = None,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive prototypical feedback (Sec. 3.3, official ``AdaptivePrototypicalFeedback``).

    mem_x: (m, ...), mem_y: (m,) the buffer sample; buffer_x, buffer_y: all stored items;
    class_means: (n_classes, D) last buffer prototypes, zero rows for classes without one.
    Returns x (m, ...) and labels (m, 3) = (y_a, y_b, lam): int(m * base_rate) items of
    mem get random mixup; the rest are pairs (a, b) drawn by Eq. 7, an a-item and a b-item
    of the buffer mixed with lam ~ Beta(alpha, alpha) (one coin of probability mixup_p per
    pair decides whether that pair is mixed at all; unmixed items are plain a-items).

    buffer_y_host, has_prototype: buffer_y on the CPU and the (n_classes,) CPU mask of the
    classes with a prototype, when the caller keeps them (else copied from the device). The
    pair bookkeeping runs on the host; only the pair probabilities are copied back.
    """
    m = mem_x.shape[0]
    dev = mem_x.device
    n_base = int(m * base_rate)
    order = torch.randperm(m, device=dev)
    x_base, y_base = random_mixup(mem_x[order[:n_base]], mem_y[order[:n_base]], mixup_p, lam_range)
    n_pair = m - n_base
    if n_pair == 0:
        return x_base, y_base
    labels = buffer_y.cpu() if buffer_y_host is None else buffer_y_host
    if has_prototype is None:
        has_prototype = (class_means.abs().sum(1) > 0).cpu()
    stored = torch.zeros(class_means.shape[0], dtype=torch.bool)
    stored[labels] = True
    classes = (has_prototype & stored).nonzero().squeeze(1)
    if classes.numel() < 2:
        rest = order[n_base:]
        x_rest, y_rest = random_mixup(mem_x[rest], mem_y[rest], mixup_p, lam_range)
        return torch.cat([x_base, x_rest]), torch.cat([y_base, y_rest])
    _, probs = apf_pair_probabilities(class_means[classes.to(dev, non_blocking=True)])
    counts = apf_pair_counts(probs.cpu(), n_pair)
    pairs = torch.triu_indices(classes.numel(), classes.numel(), 1).t()
    pair_of_item = torch.repeat_interleave(torch.arange(pairs.shape[0]), counts, output_size=n_pair)
    a = classes[pairs[pair_of_item, 0]]
    b = classes[pairs[pair_of_item, 1]]
    xa = buffer_x[_sample_of_class(labels, a).to(dev, non_blocking=True)]
    xb = buffer_x[_sample_of_class(labels, b).to(dev, non_blocking=True)]
    coin = (torch.rand(pairs.shape[0]) <= mixup_p).float()
    lam = torch.distributions.Beta(alpha, alpha).sample((n_pair,)) * coin[pair_of_item]
    y_pair = torch.stack([a.float(), b.float(), lam], 1).to(dev, non_blocking=True)
    lam_x = y_pair[:, 2].view(-1, *([1] * (xa.dim() - 1))).to(xa.dtype)
    x_pair = (1 - lam_x) * xa + lam_x * xb
    return torch.cat([x_base, x_pair]), torch.cat([y_base, y_pair])


def mixup_cross_entropy(logits: torch.Tensor, y_mix: torch.Tensor) -> torch.Tensor:
    """(1 - lam) CE(y_a) + lam CE(y_b), mean; logits: (N, C); y_mix: (N, 3) = (y_a, y_b, lam)."""
    lam = y_mix[:, 2]
    loss_a = F.cross_entropy(logits, y_mix[:, 0].long(), reduction="none")
    loss_b = F.cross_entropy(logits, y_mix[:, 1].long(), reduction="none")
    return ((1 - lam) * loss_a + lam * loss_b).mean()


# --------------------------------------------------------------------------- losses


def instance_similarity(z: torch.Tensor, f: torch.Tensor, sim_lambda: float = 1.0,
                        start: int | None = None) -> torch.Tensor:
    """Eq. 3's similarity S = lambda (z f_slice^T + z z^T), as in OCM.

    z: (N, d) normalised projections, f: (N, D >= d) normalised features -> (N, N).
    f_slice = f[:, start:start+d], start drawn uniformly from [0, D - d) when not given
    (the official ``randperm(D - d)[0]``; start 0 when D == d).
    """
    d, big = z.shape[1], f.shape[1]
    if start is None:
        start = int(torch.randint(0, big - d, ())) if big > d else 0
    return sim_lambda * (z @ f[:, start:start + d].t() + z @ z.t())


def instance_loss(sim: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07,
                  pair_views: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """OCM's supervised NT-Xent (official ``Supervised_NT_xent_n`` / ``_uni``), L_INS of Eq. 3.

    sim: (2B, 2B) similarities of [view 1; view 2]; labels: (B,) pseudo-labels of view 1
    (view 2 repeats them). With q_ij = exp(S_ij / T) / sum_k exp(S_ik / T) and, per row i,
    w_ij = [l_i == l_j] / #{j: l_j == l_i} (self included):

    - pair_views=True (incoming batch): self excluded from the sum over k,
      loss = mean_i -log q_{i, i+-B} + 2 mean_i sum_{j != i} w_ij (-log q_ij);
    - pair_views=False (buffer batch): self kept, loss = mean_i sum_j w_ij (-log q_ij).

    -log q is computed as -log(q + eps) as in the official code.
    """
    n = sim.shape[0]
    b = n // 2
    lab = labels.repeat(2).view(-1, 1)
    logits = (sim - sim.max(1, keepdim=True).values.detach()) / temperature
    expo = torch.exp(logits)
    eye = torch.eye(n, dtype=torch.bool, device=sim.device)
    if pair_views:
        expo = expo.masked_fill(eye, 0.0)
    nll = -torch.log(expo / (expo.sum(1, keepdim=True) + eps) + eps)
    same = (lab == lab.t()).float()
    weights = same / (same.sum(1, keepdim=True) + eps)
    if not pair_views:
        return (weights * nll).sum() / n
    supervised = (weights * nll.masked_fill(eye, 0.0)).sum() / n
    views = (nll[:b, b:].diagonal().sum() + nll[b:, :b].diagonal().sum()) / n
    return views + 2 * supervised


def class_prototypes(z: torch.Tensor, y: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Mean of z: (N, D) over rows of each class in classes: (K,) -> (K, D), not renormalised."""
    onehot = (classes.view(-1, 1) == y.view(1, -1)).to(z.dtype)
    return onehot @ z / onehot.sum(1, keepdim=True).clamp_min(1)


def ope_loss(z1: torch.Tensor, z2: torch.Tensor, y: torch.Tensor, temperature: float = 0.5,
             classes: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Online prototype equilibrium, Eq. 4-6 (official ``OPELoss``).

    z1, z2: (N, D) normalised projections of two views, y: (N,) int labels. For the K
    classes present, prototypes p^1_k, p^2_k (class means, renormalised); with
    u = [p^1; p^2] (2K, D), loss = mean_i -log( exp(u_i.u_i' / T) / sum_{j != i} exp(u_i.u_j / T) ),
    i' the same class in the other view. Returns (loss, classes (K,), means of z1 (K, D),
    means of z2 (K, D)); the means are not renormalised (APF uses their average).
    classes: ``torch.unique(y)`` when the caller has it on the host (on a GPU, unique waits
    for the device); returned on y's device.
    """
    classes = torch.unique(y) if classes is None else classes.to(y.device, non_blocking=True)
    k = classes.numel()
    m1, m2 = class_prototypes(z1, y, classes), class_prototypes(z2, y, classes)
    if k == 0:
        return z1.sum() * 0.0, classes, m1, m2
    u = F.normalize(torch.cat([m1, m2]), dim=1)
    logits = u @ u.t() / temperature
    eye = torch.eye(2 * k, dtype=torch.bool, device=u.device)
    denom = torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1)
    pos = torch.cat([torch.arange(k, 2 * k, device=u.device), torch.arange(k, device=u.device)])
    loss = (denom - logits[torch.arange(2 * k, device=u.device), pos]).mean()
    return loss, classes, m1, m2


# --------------------------------------------------------------------------- strategy


class OnPro(GradientStrategy):
    """Online prototype learning (Wei et al., ICCV 2023) on top of any ``Classifier`` backbone.

    Builds its projection head (``proj_dim``, 128 in the paper) on ``model.features``;
    predicts with ``model``'s own linear head. Defaults are the paper's CIFAR-10 ones
    (M=200, mixup_p 0.6, mixup_base_rate 0.75, sim_lambda 0.5); CIFAR-100 uses
    mixup_p 0.2, mixup_base_rate 0.9, sim_lambda 1.0. Ablations: ``ope=False`` drops
    L_new and L_seen; ``apf=False`` replaces APF by random mixup of the whole sample;
    ``rotations`` in (1, 4, 16).
    """

    def __init__(
        self,
        model: nn.Module,
        buffer_size: int = 200,
        buffer_batch_size: int = 64,
        per_class_batch: int = 7,
        rotations: int = 16,
        ope: bool = True,
        apf: bool = True,
        mixup_base_rate: float = 0.75,
        mixup_p: float = 0.6,
        mixup_lower: float = 0.0,
        mixup_upper: float = 0.6,
        mixup_alpha: float = 0.4,
        ins_temperature: float = 0.07,
        proto_temperature: float = 0.5,
        sim_lambda: float = 0.5,
        proj_dim: int = 128,
        crop_scale: tuple[float, float] = (0.3, 1.0),
        gray_p: float = 0.25,
        lr: float = 5e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 1e-4,
        seed: int = 0,
    ) -> None:
        require_at_least(1, "OnPro", buffer_batch_size=buffer_batch_size, per_class_batch=per_class_batch,
                         proj_dim=proj_dim)
        require_at_least(0, "OnPro", weight_decay=weight_decay)
        check_rotations(rotations)
        feature_dim = getattr(model, "feature_dim", None)
        if feature_dim is None or not hasattr(model, "features"):
            raise ConfigError("OnPro needs a Classifier with .features(x) and .feature_dim "
                              "(build it with continual.models.build_model)")
        if feature_dim < proj_dim:
            raise ConfigError(f"OnPro's projection (proj_dim={proj_dim}) must not exceed the "
                              f"backbone's feature_dim={feature_dim}; set proj_dim<={feature_dim}")
        if not 0.0 <= mixup_base_rate <= 1.0 or not 0.0 <= mixup_p <= 1.0:
            raise ConfigError(f"mixup_base_rate and mixup_p are probabilities in [0, 1], "
                              f"got {mixup_base_rate} and {mixup_p}")
        self.model = model
        self.device = next(model.parameters()).device
        self.n_classes = int(model.n_classes)
        self.projector = nn.Linear(feature_dim, proj_dim).to(self.device)
        params = list(model.parameters()) + list(self.projector.parameters())
        self.optimizer = make_optimizer(params, "adam", lr, weight_decay=weight_decay,
                                        betas=tuple(betas))
        self.buffer = ReservoirBuffer(buffer_size, device=self.device, seed=seed, host_labels=True)
        self.buffer_batch_size = buffer_batch_size
        self.per_class_batch = per_class_batch
        self.rotations = rotations
        self.ope, self.apf = bool(ope), bool(apf)
        self.mixup_base_rate = mixup_base_rate if apf else 1.0
        self.mixup_p = mixup_p
        self.lam_range = (float(mixup_lower), float(mixup_upper))
        self.mixup_alpha = mixup_alpha
        self.ins_temperature = ins_temperature
        self.proto_temperature = proto_temperature
        self.sim_lambda = sim_lambda
        self.crop_scale = tuple(crop_scale)
        self.gray_p = gray_p
        self.class_means = torch.zeros(self.n_classes, proj_dim, device=self.device)
        # on the host: which classes were seen, which have a prototype (rows of class_means)
        self.seen = torch.zeros(self.n_classes, dtype=torch.bool)
        self.has_prototype = torch.zeros(self.n_classes, dtype=torch.bool)
        self.task_index = -1
        self.batch_in_task = 0
        self.boundaries_visible = False

    # ----------------------------------------------------------------- task bookkeeping

    def on_task_start(self, info: TaskInfo) -> None:
        self.boundaries_visible = True
        self._begin_task()

    def _begin_task(self) -> None:
        self.task_index += 1
        self.batch_in_task = 0

    # ----------------------------------------------------------------- pieces of a step

    def _view(self, x: torch.Tensor) -> torch.Tensor:
        with record_function("onpro.views"):
            return augmented_view(x, self.crop_scale, self.gray_p)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        with record_function("onpro.forward"):
            return self.model(x)

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, ...) -> normalised features (N, D), normalised projections (N, proj_dim)."""
        with record_function("onpro.forward"):
            f = self.model.features(x)
            return F.normalize(f, dim=1), F.normalize(self.projector(f), dim=1)

    def _rotated_pair(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[rotation copies; their augmented views] (2RB, ...) and the copies' labels (RB,)."""
        with record_function("onpro.views"):
            rot, labels = rotation_views(x, y, self.n_classes, self.rotations)
            return torch.cat([rot, augmented_view(rot, self.crop_scale, self.gray_p)]), labels

    def _instance(self, f: torch.Tensor, z: torch.Tensor, labels: torch.Tensor, scale: float,
                  pair_views: bool) -> torch.Tensor:
        with record_function("onpro.loss.ins"):
            sim = instance_similarity(z, f, scale)
            return instance_loss(sim, labels, self.ins_temperature, pair_views)

    def _ope(self, z1: torch.Tensor, z2: torch.Tensor, y: torch.Tensor, y_host: torch.Tensor
             ) -> tuple[torch.Tensor, ...]:
        with record_function("onpro.loss.ope"):
            return ope_loss(z1, z2, y, self.proto_temperature, classes=torch.unique(y_host))

    def _sample_buffer(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n buffer items: x, y on the device and y on the host."""
        idx = self.buffer.draw(n)
        bx, by = self.buffer.take(idx)
        return bx, by, self.buffer.labels_host[idx]

    def _seen_prototypes(self, bx: torch.Tensor, by: torch.Tensor, by_host: torch.Tensor) -> torch.Tensor:
        """L_seen on an un-mixed buffer sample; stores its class means for APF's next step."""
        with torch.set_grad_enabled(self.ope and torch.is_grad_enabled()):
            _, z = self._embed(torch.cat([bx, self._view(bx)]))
            loss, classes, m1, m2 = self._ope(z[: bx.shape[0]], z[bx.shape[0]:], by, by_host)
        self.class_means = torch.zeros_like(self.class_means)
        self.class_means[classes] = ((m1 + m2) / 2).detach()
        self.has_prototype = torch.zeros_like(self.has_prototype)
        self.has_prototype[torch.unique(by_host)] = True
        return loss if self.ope else loss.detach() * 0.0

    # ----------------------------------------------------------------- the step

    def _check_images(self, x: torch.Tensor) -> None:
        """Refuse inputs the rotation views and augmentations are not defined on."""
        if x.dim() != 4:
            raise ConfigError(
                f"OnPro needs image batches (B, C, H, W): its rotation pseudo-labels and its "
                f"augmented views (flip, resized crop, grayscale) are defined on images, but this "
                f"stream gives inputs of shape {tuple(x.shape[1:])}. Use an image stream (e.g. "
                "stream=split_mnist) or a strategy for vector inputs (naive, er, joint, tame, ltm_knn)"
            )
        if self.rotations > 1 and x.shape[2] != x.shape[3]:
            raise ConfigError(
                f"OnPro's 90-degree rotation views need square images, got {tuple(x.shape[2:])}; "
                "set strategy.rotations=1 (no rotation views) or use a square-image stream"
            )

    def observe(self, batch: Batch) -> dict[str, Any]:
        x, y = batch.x, batch.y
        self._check_images(x)
        # a batch refused for a non-finite loss leaves the strategy as it found it
        before = (self.seen.clone(), self.class_means, self.has_prototype, self.task_index,
                  self.batch_in_task)
        y_host = y.cpu()  # the labels' one trip to the host: class sets are host bookkeeping
        if not self.boundaries_visible and (self.task_index < 0 or not bool(self.seen[y_host].all())):
            self._begin_task()
        self.seen[y_host] = True
        self.model.train()
        self.projector.train()
        if self.task_index == 0:
            parts = self._first_task_losses(x, y, y_host)
        else:
            parts = self._later_task_losses(x, y, y_host)
        loss = sum(parts.values())
        try:
            self.step(loss, label="onpro")
        except NonFiniteLoss:
            self.seen, self.class_means, self.has_prototype, self.task_index, self.batch_in_task = before
            raise
        self.buffer.add(x.detach(), y.detach(), y_host)
        self.batch_in_task += 1
        return {"loss": loss.detach(), **{k: v.detach() for k, v in parts.items()}}

    def _first_task_losses(self, x: torch.Tensor, y: torch.Tensor, y_host: torch.Tensor
                           ) -> dict[str, torch.Tensor]:
        """Official ``train_task0``: CE on the augmented batch, no APF, L_INS with lambda 1."""
        b = x.shape[0]
        pair, labels = self._rotated_pair(x, y)
        f, z = self._embed(pair)
        ins = self._instance(f, z, labels, 1.0, pair_views=True)
        zero = z.sum() * 0.0
        seen = zero
        if self.batch_in_task > 0 and len(self.buffer):
            seen = self._seen_prototypes(*self._sample_buffer(self.buffer_batch_size))
        new = self._ope(z[:b], z[len(labels):len(labels) + b], y, y_host)[0] if self.ope else zero
        logits = self._logits(self._view(x))
        with record_function("onpro.loss.ce"):
            ce = F.cross_entropy(logits, y)
        return {"ce": ce, "ins": ins, "ope_new": new, "ope_seen": seen}

    def _later_task_losses(self, x: torch.Tensor, y: torch.Tensor, y_host: torch.Tensor
                           ) -> dict[str, torch.Tensor]:
        """Official ``train_other_tasks``: APF-mixed buffer batch for CE and L_INS."""
        b = x.shape[0]
        m = min(self.buffer_batch_size, self.per_class_batch * int(self.seen.sum()))
        with record_function("onpro.sample_apf"):
            ori_x, ori_y, ori_y_host = self._sample_buffer(m)
            if self.batch_in_task > 0:
                bx, by = self.buffer.items()
                mem_x, mem_mix = apf_mixup(ori_x, ori_y, bx, by, self.class_means,
                                           self.mixup_base_rate, self.mixup_p, self.lam_range,
                                           self.mixup_alpha, self.buffer.labels_host[: len(self.buffer)],
                                           self.has_prototype)
            else:
                zeros = torch.zeros(ori_y.shape[0], device=self.device)
                mem_x, mem_mix = ori_x, torch.stack([ori_y.float(), ori_y.float(), zeros], 1)
            # the official instance labels of mixed items: the soft label (1-lam) y_a + lam y_b
            mem_soft = (1 - mem_mix[:, 2]) * mem_mix[:, 0] + mem_mix[:, 2] * mem_mix[:, 1]
        pair_x, labels_x = self._rotated_pair(x, y)
        pair_r, labels_r = self._rotated_pair(mem_x, mem_soft)
        f, z = self._embed(torch.cat([pair_x, pair_r]))
        nx = pair_x.shape[0]
        ins = (self._instance(f[nx:], z[nx:], labels_r, self.sim_lambda, pair_views=False)
               + self._instance(f[:nx], z[:nx], labels_x, self.sim_lambda, pair_views=True))
        logits = self._logits(self._view(mem_x))
        with record_function("onpro.loss.ce"):
            ce = mixup_cross_entropy(logits, mem_mix)
        seen = self._seen_prototypes(ori_x, ori_y, ori_y_host)
        r = len(labels_x)
        new = self._ope(z[:b], z[r:r + b], y, y_host)[0] if self.ope else z.sum() * 0.0
        return {"ce": ce, "ins": ins, "ope_new": new, "ope_seen": seen}

    # ----------------------------------------------------------------- inference, state

    @torch.inference_mode()
    def predict(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        self.model.eval()
        return self.model(x)

    def state_dict(self) -> dict[str, Any]:
        return snapshot({
            "model": self.model.state_dict(),
            "projector": self.projector.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "buffer": self.buffer.state_dict(),
            "class_means": self.class_means.detach().cpu(),
            "seen": self.seen.cpu(),
            "task_index": self.task_index,
            "batch_in_task": self.batch_in_task,
            "boundaries_visible": self.boundaries_visible,
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.projector.load_state_dict(state["projector"])
        self.optimizer.load_state_dict(snapshot(state["optimizer"]))
        self.buffer.load_state_dict(state["buffer"])
        self.class_means = state["class_means"].to(self.device).clone()
        self.has_prototype = state["class_means"].abs().sum(1) > 0
        self.seen = state["seen"].cpu().clone()
        self.task_index = int(state["task_index"])
        self.batch_in_task = int(state["batch_in_task"])
        self.boundaries_visible = bool(state["boundaries_visible"])
