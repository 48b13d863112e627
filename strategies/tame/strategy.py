"""TAME: task-agnostic continual learning with multiple experts.

Zhu, Majzoubi, Jain, Choromanska, "TAME: Task Agnostic Continual Learning using
Multiple Experts", CVPR 2024 Workshops (arXiv 2210.03869). The learner never sees
task ids or boundaries. This module holds the strategy, ``TAME``; its parts, each usable and
tested on its own, have their own modules in this package:

- ``detector``: ``LossTracker`` + detectors (``ThresholdDetector``, the paper's rule;
  ``RiverDetector``, river's ADWIN / PageHinkley / KSWIN), river-style ``update(loss)`` ->
  switch flag: decide from the active expert's loss that the data distribution has switched.
- ``experts``: ``ExpertPool``, the experts, each with its optimiser, loss tracker, detector
  and pruning buffer; finds the first existing expert that fits the new data, or spawns one.
- ``selector``: ``ExpertSelector``, a network x -> expert id trained on a per-class uniform
  sample of (x, expert active when x was seen); at inference it routes each input to an expert.
- shared with other strategies: global L1 unstructured pruning and parameter counting
  (``continual.models.parameters``), the SGD fine-tuning loop of selector training and
  pruning (``continual.strategies.base.fit``, ``train_epochs``), the switch metrics
  (``continual.metrics.boundary_scores``, ``recurrence_scores``).

Per batch (paper, Sec. 3): a NaN/Inf l_t raises NonFiniteLoss before the detector, the loss
window or any weight sees it (the runner skips the batch or stops: ``on_nan``). The active
expert's loss l_t (eval mode, before the step: see below) updates its smoothed loss
s_t = alpha * l_t + (1 - alpha) * s_{t-1}; with tau = mean(window) + 3 * max(std(window), 0.005)
over the last W raw losses, s_t > tau is a switch. On a switch the experts are tried in
order and the first whose candidate smoothed loss (from its own last s) is under its
frozen tau becomes active; if none fits, a new expert is spawned. Otherwise the active
expert takes an SGD step and its window gets l_t.

Where we depart from the paper or its code, and why:

- Experts are deep copies of the runner's model (re-initialised), so by default
  (``labels='global'``) their head has ``n_classes`` outputs on global labels, not
  ``classes per task`` outputs on labels re-numbered within the task. A new expert's window
  starts at ln(outputs) (a fresh expert's loss) unless ``initial_loss`` is given; the paper
  uses ln(classes per task) for the same reason. ``labels='within_task'`` (preset
  ``tame_code_within_task``, with the sigmoid) is the code's setting: experts have
  ``classes_per_task`` outputs and learn y mod classes_per_task, which is a class's place in
  its task when the stream splits the classes in order (the code permutes the labels, then
  splits consecutively); a prediction's column c holds the expert's output
  c mod classes_per_task, so the runner's task-IL accuracy is the code's within-task
  accuracy, and class-IL accuracy means nothing there. The selector still samples by the
  global class (the code's per-class queues do too).
- No sigmoid before the cross-entropy by default (``sigmoid_outputs=False``): the paper's
  network has one, but with 10 global outputs and the code's SGD (lr 0.1, momentum 0.9)
  it stalls at chance (measured in benchmarks/results/tame.md). ``sigmoid_outputs=True``
  restores it.
- Experts' SGD lr is 0.05, not the code's 0.1: without the sigmoid (which bounds the loss
  and its gradient) lr 0.1 with momentum 0.9 gives divergence spikes in fresh experts,
  which the detector rightly reads as switches (Split-Fashion-MNIST boundary precision
  0.82 at 0.1, 1.00 at 0.05; benchmarks/results/tame.md).
- The switch rule (``conf/strategy/tame.yaml``'s defaults, issue 17; beyond the paper and the
  code, whose rule is preset ``tame_paper``: a fixed W=100, floor 0.005, batch means, each
  firing a switch), four parts, each measured alone and together in
  benchmarks/results/tame.md ("A window that fits the stream"):
  ``window='auto'``: tau is taken over the expert's latest
  clamp(ceil(window_fraction * seen), min_window, max_window) losses, ``seen`` the losses it has
  recorded (``detector.AdaptiveWindow``; 0.5, 20, 1000 in the config). A fixed W longer than a
  task keeps the expert's learning curve in the window and misses the next switch (W=100 finds
  1 of 4 on online Split-MNIST, 80 steps a task); the latter half of what the expert has seen
  drops its learning curve whatever the task's length. But a window of converged losses is
  quiet, and so: ``patience=2``: a batch that fires is set aside (not trained on, not recorded,
  dropped) and the switch is made only if the next batch fires too, since a switch lasts and a
  one-step divergence of the expert does not; the old expert, untrained on the batch set
  aside, meets the next batch of a new task with the same high loss. ``decision_statistic=
  'median'``: every decision reads the median of the batch's per-sample losses, as a switch
  moves every sample's loss while one confidently wrong sample (loss 20-50) lifts the mean of
  a batch of 10 by 2-5 and, recorded, lifts tau past the next switch. ``min_std`` 0.05: with
  the paper's 0.005 a window of converged 2-class losses (about 0.001) puts tau 0.02 above
  them. A task shorter than about 2 x min_window steps keeps its learning curve in the window,
  and its switches are missed as W=100 misses them on short tasks.
- A new expert is not checked on its first step (its window holds only ln(n_classes)).
- Smoothed losses advance only while an expert is active (the code also updates an
  inactive expert's smoothed loss every batch, so a reactivated expert carries the other
  task's high smoothed loss and fires again at once; each such re-fire would count as a
  detected switch). A reactivated expert's smoothed loss continues from its candidate.
- Every decision uses one loss scale, eval mode before the step, as the code's ``test()``:
  the window and tau, the active expert's smoothed loss and the candidates of the other
  experts. (Before issue 17 the window held training-mode losses while candidates were
  scored in eval mode; with BatchNorm the two differ.) A model that behaves the same in both
  modes (no normalisation with running statistics, no dropout) takes the value from its
  training forward pass; others pay one extra eval forward pass per step.
- Only the active expert's loss is computed each step; the others' losses are computed
  only when a switch is checked (same decisions as computing all of them every batch, at a
  fraction of the cost).
- Each expert keeps its own pruning buffer of C_p (x, y) seen while it was active (the
  code keeps one buffer and resets it when an expert is spawned); pruning then works
  for every expert whenever it happens, also after the stream.
- Online pruning (``prune_at='switch'``, default; the paper's abstract; the code prepares a
  pruning buffer per expert for it but prunes after the stream): an expert is pruned to
  ``expert_prune`` and fine-tuned on its pruning buffer when it stops training (at the
  switch away from it), its masks are folded into plain weights and its momentum buffers
  dropped; a reused pruned expert trains under masks rebuilt from its zeros, so it stays
  pruned, and is pruned and fine-tuned again when it stops. Those masks are kept beside
  plain weights (``Expert.masks``, re-applied after each step: the same network as torch's
  ``weight_orig * weight_mask``) and checkpointed with the expert; pruned deployed copies are
  folded too. Torch's pruning form lives only during a fine-tuning: its computed ``weight``
  is a non-leaf tensor, which made the deployment's copy of a reused pruned expert (and any
  deep copy of the strategy) raise RuntimeError. Older checkpoints in that form still load.
  Training then holds pruned experts plus one dense expert (``params_held_peak`` in the
  summary counts nonzero weights: the figure a sparse storage would hold; the pruned experts
  are stored as dense tensors with zeros, so RSS does not shrink by the pruned share). Its
  window and tau stay those of the dense expert, as the paper's rule has them: moving them by
  the loss pruning added on the pruning buffer made pruned experts accept new tasks (2 wrong
  reuses in 3 test streams), while keeping them can turn a recurring task away (1 of 5
  recurrences on the test stream spawned a new expert). ``prune_at='end'`` is the previous
  behaviour: pruned copies at deployment, training experts dense.
- Every evaluation is scored by what TAME would predict at that moment (issue 17: with only
  the paper's after-stream training, every mid-stream row was scored by a one-expert
  deployment made at the first evaluation, so forgetting read -0.70). Before an evaluation
  (``prepare_eval``, and ``predict``), a deployment older than the last training step is
  remade: with ``train_at='end'`` (default) a *refresh*: the selector, warm-started from its
  last training, trains ``refresh_epochs`` on its buffer, and the experts are copied as the
  pool holds them (pruned if retired, the active one dense); ``finalize()`` after the
  stream makes the paper's full deployment (selector training for ``selector_epochs``, warm
  as well, then pruned and fine-tuned copies of the selector and of every expert not already
  pruned). ``train_at='eval'`` makes the full deployment at every evaluation. Deployed
  networks are copies, so nothing done for an evaluation disturbs detection.
- The selector buffer does not deduplicate repeated samples (the code does, by dataset
  index; ``Batch.index`` is bookkeeping a strategy must not use); a per-class reservoir
  over all passes keeps a uniform sample of what was seen.
- River detectors see the raw loss; their alarm counts only when the smoothed loss is
  above the window's mean (the loss went up), since a new expert's falling learning
  curve is a change too.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from continual.models.parameters import (
    check_share,
    count_parameters,
    fold_masks,
    prune_to_sparsity,
    pruned_like,
)
from continual.strategies.base import (
    GradientStrategy,
    finite_loss_value,
    guarded_step,
    require_at_least,
    snapshot,
)
from continual.strategies.tame.detector import AdaptiveWindow, LossTracker, make_detector
from continual.strategies.tame.experts import Expert, ExpertPool
from continual.strategies.tame.selector import ExpertSelector
from continual.strategies.tame.training import cross_entropy, fit_optimizer
from continual.types import Batch, ConfigError

TRAIN_AT = ("end", "eval")
PRUNE_AT = ("switch", "end")
LABELS = ("global", "within_task")


@dataclass
class _Deployed:
    """The networks predict uses: copies of the selector and experts as of ``version``.

    ``full``: made by the paper's after-stream procedure (selector trained for
    ``selector_epochs``; pruned, fine-tuned copies); else a refresh (the selector trained for
    ``refresh_epochs``, the experts as the pool holds them, nothing pruned for the occasion).
    """

    selector: nn.Module | None
    experts: list[nn.Module] = field(default_factory=list)
    version: int = -1
    full: bool = False


class TAME(GradientStrategy):
    """TAME (Zhu et al. 2024): loss-shift detection, an expert pool and a selector; task-free.

    Args (defaults: the paper's values, the code's optimiser; ``conf/strategy/tame.yaml``):
        model: template for experts and selector (a ``Classifier``), re-initialised per copy.
        window, alpha, n_sigma, min_std: the detector's W (or ``'auto'``: a window that
            grows with the expert, see below), smoothing factor, tau's sigma multiple and std
            floor.
        window_fraction, min_window, max_window: with ``window='auto'``, tau is taken over
            the expert's latest clamp(ceil(window_fraction * seen), min_window, max_window)
            losses, ``seen`` the losses it has recorded (``AdaptiveWindow``; beyond the paper).
        patience: how many batches in a row must fire for a switch (1: the paper); the first
            patience - 1 of them are set aside, neither trained on nor recorded (beyond the
            paper, see above; ``set_aside_batches`` in the summary counts them).
        decision_statistic: the batch loss every switch decision reads: ``mean`` (the paper)
            or ``median`` of the per-sample losses (beyond the paper, see above).
        initial_loss: the value a new expert's window starts with (None: ln(outputs)).
        clip_window: the window takes min(loss, tau) (not in the paper; off by default).
        detector: ``threshold`` (paper), ``adwin``, ``page_hinkley`` or ``kswin``;
            detector_params go to the river class.
        lr, momentum, weight_decay: the experts' SGD.
        sigmoid_outputs: sigmoid before the cross-entropy (experts and selector), as the
            paper's network; off by default (see the module docstring).
        labels: ``global`` (experts output every class) or ``within_task`` (the code's
            setting: experts have ``classes_per_task`` outputs and learn y mod
            classes_per_task; see the module docstring).
        selector_capacity (C_s), prune_capacity (C_p): buffer sizes.
        selector_epochs, selector_lr, selector_batch_size: selector training.
        refresh_epochs: selector epochs of a refresh before a mid-stream evaluation
            (warm-started from the last training; None: selector_epochs // 4).
        train_at: when the paper's full deployment (selector training, pruned and fine-tuned
            copies) is made: ``end`` (``finalize()``; an evaluation before it gets a refresh)
            or ``eval`` (before every evaluation).
        prune: whether to prune; prune_at: ``switch`` (each expert when it stops training)
            or ``end`` (copies at deployment); expert_prune / selector_prune: shares of
            weights removed; prune_epochs, expert_finetune_lr, selector_finetune_lr:
            fine-tuning after pruning.
        max_experts: a safety cap; past it, the best-fitting expert other than the one that
            fired is reused instead (with ``max_experts=1`` a detection is recorded in
            ``detected_switches`` but changes nothing: no switch event).
    """

    def __init__(
        self,
        model: nn.Module,
        window: int | str = 100,
        window_fraction: float = 0.5,
        min_window: int = 20,
        max_window: int = 1000,
        alpha: float = 0.2,
        n_sigma: float = 3.0,
        min_std: float = 0.005,
        initial_loss: float | None = None,
        clip_window: bool = False,
        detector: str = "threshold",
        detector_params: dict[str, Any] | None = None,
        patience: int = 1,
        decision_statistic: str = "mean",
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        sigmoid_outputs: bool = False,
        labels: str = "global",
        classes_per_task: int | None = None,
        selector_capacity: int = 5000,
        prune_capacity: int = 500,
        selector_epochs: int = 200,
        selector_lr: float = 0.1,
        selector_batch_size: int = 128,
        refresh_epochs: int | None = None,
        train_at: str = "end",
        prune: bool = True,
        prune_at: str = "switch",
        expert_prune: float = 0.98,
        selector_prune: float = 0.5,
        prune_epochs: int = 200,
        expert_finetune_lr: float = 0.1,
        selector_finetune_lr: float = 1e-3,
        max_experts: int = 100,
        seed: int = 0,
    ) -> None:
        if train_at not in TRAIN_AT:
            raise ConfigError(f"train_at must be one of {list(TRAIN_AT)}, got {train_at!r}")
        if prune_at not in PRUNE_AT:
            raise ConfigError(f"prune_at must be one of {list(PRUNE_AT)}, got {prune_at!r}")
        self.make_detector = lambda tracker=None: make_detector(detector, detector_params, tracker,
                                                                 patience)
        self.make_detector()  # fail on an unknown detector or bad parameters now
        if max_experts < 1:
            raise ConfigError(f"max_experts must be at least 1, got {max_experts}")
        require_at_least(1, "TAME", selector_batch_size=selector_batch_size)
        require_at_least(0, "TAME", momentum=momentum, weight_decay=weight_decay,
                         selector_epochs=selector_epochs, prune_epochs=prune_epochs)
        if refresh_epochs is not None:
            require_at_least(0, "TAME", refresh_epochs=refresh_epochs)
        n_classes = int(getattr(model, "n_classes", 0))
        if n_classes < 1:
            raise ConfigError(
                f"TAME needs a Classifier with .n_classes, got {type(model).__name__}; "
                "build the model with continual.models.build_model"
            )
        check_share(expert_prune)
        check_share(selector_prune)
        self.n_classes = n_classes
        self.labels = labels
        n_outputs = self._check_labels(labels, classes_per_task, n_classes)
        # column c of a prediction is output c mod n_outputs: a task's classes, in order
        self.output_of_class = torch.arange(n_classes) % n_outputs
        start = math.log(n_outputs) if initial_loss is None else float(initial_loss)
        tracker = dict(alpha=alpha, n_sigma=n_sigma, min_std=min_std, initial_loss=start,
                       clip=clip_window, **self._window_options(window, window_fraction,
                                                                min_window, max_window))
        LossTracker(**tracker)  # fail on bad window parameters now, not at the first expert
        self.sigmoid = bool(sigmoid_outputs)
        self.pool = ExpertPool(
            model, lambda: LossTracker(**tracker), self.make_detector, lr, momentum, weight_decay,
            prune_capacity, self.sigmoid, seed, n_outputs, decision_statistic,
        )
        self.selector = ExpertSelector(model, n_classes, selector_capacity, seed)
        self.device = self.pool.device
        self.output_of_class = self.output_of_class.to(self.device)
        self.expert_optimizers = self.pool.optimizers  # plain attribute: grows as experts spawn
        self.selector_options = dict(epochs=selector_epochs, lr=selector_lr,
                                     batch_size=selector_batch_size)
        # a quarter, warm-started: on Split-MNIST 5k the same end accuracy and forgetting as
        # the full 200 epochs at a quarter of the cost (benchmarks/results/tame.md)
        self.refresh_epochs = selector_epochs // 4 if refresh_epochs is None else int(refresh_epochs)
        self.train_at, self.do_prune, self.prune_at = train_at, bool(prune), prune_at
        self.expert_prune, self.selector_prune = float(expert_prune), float(selector_prune)
        self.prune_epochs = int(prune_epochs)
        self.expert_finetune_lr = expert_finetune_lr
        self.selector_finetune_lr = selector_finetune_lr
        self.max_experts = int(max_experts)
        self.set_aside = 0  # batches set aside awaiting a switch's confirmation (patience > 1)
        self.generator = torch.Generator().manual_seed(seed)
        self.active = 0
        self.samples_seen = 0
        self.detected_switches: list[int] = []
        self.switch_events: list[tuple[int, str, int]] = []
        self.version = 0  # bumps with every training step; deployed copies remember theirs
        self.deployed = _Deployed(selector=None)
        self.refreshes, self.refresh_seconds = 0, 0.0  # mid-stream deployments and their cost
        self.online_prunes = 0
        self.held_params_peak = 0
        self._params_cache: tuple[Any, int] = (None, 0)

    @staticmethod
    def _window_options(window: int | str, fraction: float, min_window: int,
                        max_window: int) -> dict[str, Any]:
        """The tracker's window: a fixed W (the paper), or ``'auto'``, an ``AdaptiveWindow``."""
        if window == "auto":
            return {"adaptive": AdaptiveWindow(fraction, min_window, max_window)}
        if isinstance(window, bool) or not isinstance(window, int):
            raise ConfigError(f"window is the number of losses tau is taken over (the paper: 100) "
                              f"or 'auto' (a window that grows with the expert), got {window!r}")
        return {"window": window}

    @staticmethod
    def _check_labels(labels: str, classes_per_task: int | None, n_classes: int) -> int:
        """The experts' number of outputs for this label setting."""
        if labels not in LABELS:
            raise ConfigError(f"labels must be one of {list(LABELS)}, got {labels!r}")
        if labels == "global":
            return n_classes
        k = classes_per_task
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or n_classes % k:
            raise ConfigError(
                f"labels='within_task' needs classes_per_task dividing the {n_classes} classes, "
                f"got {classes_per_task}; e.g. classes_per_task=2 for Split-MNIST's 5 tasks"
            )
        return int(classes_per_task)

    def target(self, y: torch.Tensor) -> torch.Tensor:
        """The experts' labels: y, or y mod classes_per_task in the code's label setting."""
        return self.output_of_class[y] if self.labels == "within_task" else y

    # ------------------------------------------------------------------ training
    def _switch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[int, str, float | None]:
        """After a detected switch: reuse the first expert that fits, else spawn one.

        Returns (expert, 'reuse' | 'spawn' | 'stay', its eval-mode loss on the batch if known).
        """
        match = self.pool.first_match(x, y, exclude=self.active)
        if match is None and len(self.pool) >= self.max_experts:
            # the cap: the best-fitting *other* expert (the one that just fired is not a
            # choice); with a single expert there is none, and the active one keeps training
            losses = {i: self.pool.loss(i, x, y) for i in range(len(self.pool)) if i != self.active}
            if not losses:
                return self.active, "stay", None
            match = min(losses.items(), key=lambda kv: kv[1])
        self._retire(self.active)
        if match is not None:
            # Its smoothed loss continues from its own last value: record() applies the
            # candidate update on this batch.
            if self.pool[match[0]].pruned:
                self.pool[match[0]].mask_pruned()  # a pruned expert stays pruned
            return match[0], "reuse", match[1]
        new = self.pool.spawn()
        self.selector.grow(len(self.pool))
        return new, "spawn", None

    def _retire(self, i: int) -> None:
        """Expert i stops training (a switch): with ``prune_at='switch'`` prune it now and
        fine-tune it on its pruning buffer (masks folded), drop its masks and momentum buffers,
        so the pool holds pruned experts plus the one being trained."""
        e = self.pool[i]
        if not (self.do_prune and self.prune_at == "switch") or e.pruned_and_current():
            return
        # Its window and tau stay those of the dense expert (the paper's rule, unchanged):
        # moving them by the loss pruning added on the pruning buffer made pruned experts
        # accept new tasks (2 wrong reuses in 3 test streams; benchmarks/results/tame.md).
        with torch.inference_mode(False), torch.enable_grad():
            self._prune_expert(e, e.model)
        e.masks = {}  # rebuilt from its zeros if it is reused
        e.optimizer.state.clear()
        e.pruned_at = e.steps
        self.online_prunes += 1

    def _values(self, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor,
                decision: float | None) -> tuple[float, float]:
        """(training loss, decision loss) on the host: the eval-mode decision already taken
        (a mode-dependent model) or the one the training forward pass gives."""
        if decision is None:
            return self.pool.training_values(logits, y, loss)
        return finite_loss_value(loss), decision

    def observe(self, batch: Batch) -> dict[str, Any]:
        """One step: detect a switch from the active expert's loss, then train the active expert."""
        x, y = batch.x, self.target(batch.y)
        switched = 0.0
        if not len(self.pool):
            self.pool.spawn()
        expert = self.pool[self.active]
        # the decision loss: eval mode before the step, as every other decision (the code's)
        decision = self.pool.decision_loss(self.active, x, y)
        expert.model.train()
        logits = expert.model(x)
        loss = cross_entropy(logits, y, self.sigmoid)
        online_correct = (logits.detach().argmax(1) == y).sum()
        # checked before the detector, the window or any weight sees it (NonFiniteLoss); the
        # loss and the decision reach the host together: one wait on a GPU
        value, decision = self._values(logits, y, loss, decision)
        fired = bool(expert.steps) and expert.detector.update(decision)
        if not fired and expert.steps and expert.detector.set_aside:
            # neither trained on nor recorded: a switch fires again on the next batch, a
            # one-batch outlier (a transient divergence) does not and is dropped
            self.set_aside += 1
            self.samples_seen += int(x.shape[0])
            return {
                "loss": value, "online_correct": online_correct,
                "n_experts": float(len(self.pool)), "active_expert": float(self.active),
                "params": float(self._params()), "switch": 0.0, "set_aside": 1.0,
            }
        if fired:
            switched = 1.0
            self.detected_switches.append(self.samples_seen)
            new, action, new_decision = self._switch(x, y)
            if action != "stay":
                self.active = new
                self.switch_events.append((self.samples_seen, action, new))
                expert = self.pool[new]
                if new_decision is None:
                    new_decision = self.pool.decision_loss(new, x, y)
                expert.model.train()
                logits = expert.model(x)
                loss = cross_entropy(logits, y, self.sigmoid)
                value, decision = self._values(logits, y, loss, new_decision)
        guarded_step(expert.optimizer, loss, check=False)  # checked above
        expert.keep_pruned()
        expert.tracker.record(decision)
        expert.steps += 1
        expert.prune_buffer.add(x, y)
        # per-class sampling by the global class, split on the host (the second and last wait)
        self.selector.add(x, batch.y, self.active)
        self.samples_seen += int(x.shape[0])
        self.version += 1
        held = self._params()
        self.held_params_peak = max(self.held_params_peak, held)
        return {
            "loss": value, "online_correct": online_correct, "n_experts": float(len(self.pool)),
            "active_expert": float(self.active), "params": float(held),
            "switch": switched, "set_aside": 0.0,
        }

    # ------------------------------------------------------------------ selector, pruning
    def _deploy(self, full: bool) -> None:
        """Make the networks predict uses, as of now (see ``_Deployed``).

        Safe to call under ``torch.inference_mode()`` (the runner's predict context).
        """
        if not len(self.pool):
            return
        t0 = time.perf_counter()
        with torch.inference_mode(False), torch.enable_grad():
            self._train_deployed(full)
        if not full:
            self.refreshes += 1
            self.refresh_seconds += time.perf_counter() - t0

    def _train_deployed(self, full: bool) -> None:
        sel = self.selector
        xs, ids = sel.items()
        if len(self.pool) > 1 and xs.shape[0]:
            # warm: the selector goes on from its last training (a refresh's, if any)
            epochs = self.selector_options["epochs"] if full else self.refresh_epochs
            self._fit(sel.model, xs, ids, epochs, self.selector_options["lr"],
                      "TAME's selector training")
        selector = copy.deepcopy(sel.model) if len(self.pool) > 1 else None
        experts = [copy.deepcopy(e.model) for e in self.pool.experts]
        if full and self.do_prune:
            if selector is not None:
                prune_to_sparsity(selector, self.selector_prune)
                self._fit(selector, xs, ids, self.prune_epochs, self.selector_finetune_lr,
                          "TAME's selector fine-tuning after pruning")
                fold_masks(selector)
            for e, model in zip(self.pool.experts, experts):
                if not e.pruned_and_current():
                    self._prune_expert(e, model)
        for m in [selector, *experts]:
            if m is not None:
                m.eval()
        self.deployed = _Deployed(selector=selector, experts=experts, version=self.version,
                                  full=full)

    def _prune_expert(self, e: Expert, model: nn.Module) -> None:
        """Prune ``model`` (expert e or its copy), fine-tune it on e's pruning buffer and fold
        the masks (plain weights with zeros: no pruning reparametrisation outlives the
        fine-tuning, so the pool and the deployment can be deep-copied)."""
        prune_to_sparsity(model, self.expert_prune)
        if len(e.prune_buffer):
            px, py = e.prune_buffer.items()
            self._fit(model, px, py, self.prune_epochs, self.expert_finetune_lr,
                      "TAME's expert fine-tuning after pruning")
        fold_masks(model)

    def _fit(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float,
             where: str) -> float:
        """``fit`` with this strategy's NaN policy (``GradientStrategy.train_in_hook``)."""
        return self.train_in_hook(
            model, fit_optimizer(model, lr), x, y, epochs, self.selector_options["batch_size"],
            lambda out, target: cross_entropy(out, target, self.sigmoid), self.generator, where)

    def finalize(self) -> None:
        """After the stream (the paper): train the selector, prune and fine-tune."""
        self._deploy(full=True)

    def prepare_eval(self) -> None:
        """Before an evaluation point: bring the deployment up to date if anything trained
        since it was made: the full procedure with ``train_at='eval'``, else a refresh."""
        if len(self.pool) and self.deployed.version != self.version:
            self._deploy(full=self.train_at == "eval")

    @torch.inference_mode()
    def route(self, x: torch.Tensor) -> torch.Tensor:
        """The expert id the selector picks for each input x: (B, ...) -> (B,)."""
        if self.deployed.selector is None or len(self.deployed.experts) < 2:
            return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.deployed.selector(x).argmax(1)

    def predict(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, n_classes) of the expert the selector picks for each input.

        Never from a stale deployment: one made before the last training step is brought up
        to date first (as ``prepare_eval``). In the code's label setting column c holds the
        expert's output c mod classes_per_task (so only a task's own columns rank classes).
        """
        self.prepare_eval()
        return self._predict(x)

    @torch.inference_mode()
    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        if not self.deployed.experts:
            return torch.zeros(x.shape[0], self.n_classes, device=x.device)
        ids = self.route(x)
        out = torch.empty(x.shape[0], self.n_classes, device=x.device)
        for i in torch.unique(ids).tolist():
            m = ids == i
            out[m] = self.deployed.experts[i](x[m])[:, self.output_of_class].to(out.dtype)
        return out

    # ------------------------------------------------------------------ bookkeeping
    def _params(self) -> int:
        """Parameters held while training (``held_parameters``), recounted only when the
        pool grows or an expert is pruned."""
        key = (len(self.pool), self.online_prunes)
        if self._params_cache[0] != key:
            self._params_cache = (key, self.pool.held_parameters()
                                  + count_parameters(self.selector.model))
        return self._params_cache[1]

    def n_parameters(self, deployed: bool = False) -> int:
        """Parameters of experts + selector; ``deployed``: nonzero ones of the pruned copies."""
        if deployed:
            nets = [m for m in [self.deployed.selector, *self.deployed.experts] if m is not None]
            return sum(count_parameters(m, nonzero=True) for m in nets)
        return self.pool.n_parameters() + count_parameters(self.selector.model)

    def parameter_count(self) -> int:
        """All experts + selector, dense (the runner's ``params``)."""
        return self.n_parameters()

    def summary(self) -> dict[str, Any]:
        """TAME's figures for summary.json (switch_events: [samples, 'reuse'|'spawn', expert]).

        params_held_peak: the most parameters held during training (pruned experts counted by
        their nonzero weights); refreshes / refresh_seconds: deployments made for mid-stream
        evaluations and their cost.
        """
        return {
            "n_experts": len(self.pool),
            "n_reused_after_switch": sum(1 for e in self.switch_events if e[1] == "reuse"),
            "params_deployed_nonzero": self.n_parameters(deployed=True),
            "params_held_peak": self.held_params_peak,
            "online_prunes": self.online_prunes,
            "set_aside_batches": self.set_aside,
            "refreshes": self.refreshes,
            "refresh_seconds": round(self.refresh_seconds, 3),
            "switch_events": [list(e) for e in self.switch_events],
            "skipped_nonfinite_hook_steps": self.skipped_nonfinite_hook_steps,
        }

    def state_dict(self) -> dict[str, Any]:
        return snapshot({
            "pool": self.pool.state_dict(), "selector": self.selector.state_dict(),
            "active": self.active, "samples_seen": self.samples_seen,
            "detected_switches": list(self.detected_switches),
            "switch_events": list(self.switch_events), "version": self.version,
            "generator": self.generator.get_state(),
            "skipped_nonfinite_hook_steps": self.skipped_nonfinite_hook_steps,
            "counters": [self.refreshes, self.refresh_seconds, self.online_prunes,
                         self.held_params_peak],
            "set_aside": self.set_aside,
            "deployed": None if not self.deployed.experts else {
                "selector": None if self.deployed.selector is None
                else self.deployed.selector.state_dict(),
                "experts": [m.state_dict() for m in self.deployed.experts],
                "version": self.deployed.version, "full": self.deployed.full,
            },
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = snapshot(state)  # the experts' optimisers would keep tensors of the caller's dict
        self.pool.load_state_dict(state["pool"])
        self.selector.load_state_dict(state["selector"])
        self.active, self.samples_seen = state["active"], state["samples_seen"]
        self.detected_switches = list(state["detected_switches"])
        self.switch_events = [tuple(e) for e in state["switch_events"]]
        self.version = state["version"]
        self.generator.set_state(state["generator"])
        self.skipped_nonfinite_hook_steps = int(state.get("skipped_nonfinite_hook_steps", 0))
        if "counters" in state:
            refreshes, seconds, prunes, peak = state["counters"]
            self.refreshes, self.refresh_seconds = int(refreshes), float(seconds)
            self.online_prunes, self.held_params_peak = int(prunes), int(peak)
        self.set_aside = int(state.get("set_aside", 0))  # states before patience: none
        dep = state["deployed"]
        if dep is None:
            self.deployed = _Deployed(selector=None)
            return
        sel = None
        if dep["selector"] is not None:
            sel = pruned_like(self.selector.model, dep["selector"]).to(self.device)
        experts = [pruned_like(self.pool.template, s).to(self.device) for s in dep["experts"]]
        for m in [sel, *experts]:
            if m is not None:
                fold_masks(m)  # older checkpoints hold pruned copies in torch's pruning form
                m.eval()
        self.deployed = _Deployed(selector=sel, experts=experts, version=dep["version"],
                                  full=bool(dep.get("full", True)))
