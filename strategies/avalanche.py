"""Avalanche's training strategies on our streams, under our Runner (the observe/predict contract).

``AvalancheStrategy(model, strategy="ewc", protocol=..., options={...})`` builds an Avalanche
strategy (``avalanche.training``, 0.6) around our model and optimiser and drives it with one
of two protocols:

- ``protocol="online"`` (any stream, visible or hidden boundaries): every ``observe`` is one
  Avalanche ``train()`` call on an ``OnlineCLExperience`` holding that batch -- Avalanche's own
  online-CL protocol (what ``split_online_stream(experience_size=batch_size)`` produces).
  Per-experience machinery (EWC importances, LwF's teacher, replay-buffer updates, NCM class
  means) therefore runs after every batch, as it does in Avalanche's online scenarios. The
  batch's dataset is a slice of a shared chunk of samples (``OnlineData``), as
  ``split_online_stream`` slices a task's dataset, which keeps Avalanche's buffers cheap.
- ``protocol="experience"`` (visible boundaries only): ``observe`` collects the task's batches
  and ``on_task_end`` runs one Avalanche ``train()`` on the whole task as one experience, for
  as many epochs as the stream made passes -- Avalanche's usual offline protocol, under which
  per-task methods (EWC, LwF, SI, GEM, AGEM, iCaRL, GDumb) run as Avalanche designed them
  (iCaRL is given the classes seen so far and the number of classes, never the future
  order). The departure: nothing is learnt during a task, so online accuracy and in-task
  periodic evaluations measure a model that has not yet trained on the current task; task-end
  rows (acc, forgetting, bwt) are the usual ones.

``avalanche`` is imported only when an adapter is built (importing it takes seconds).
Avalanche's plugin state (replay buffers, importances, teachers) is not part of
``state_dict``: a resumed run keeps the model and optimiser and restarts that state.

NaN/Inf losses follow the project's policy (``continual.strategies.base.GradientStrategy``):
the adapter routes Avalanche's ``backward`` and ``optimizer_step`` through a check of the
minibatch loss before its backward pass. Under ``protocol="online"`` a non-finite loss raises
``NonFiniteLoss`` out of ``observe`` with the model, the optimiser and Avalanche's buffers
untouched by that batch (the runner skips it or stops); with ``train_epochs`` > 1 or a
``train_mb_size`` below the batch size, minibatches before the bad one have been applied. In
the task-end training of ``protocol="experience"`` a bad minibatch is skipped (zero
gradients, no optimiser step) and counted in ``skipped_nonfinite_hook_steps``, or raises
``NonFiniteLoss`` under ``on_nan=stop``.

Warnings that are Avalanche's own business are dropped, exactly and only around the calls
into it: ``No loggers specified`` (its evaluator, which we give no loggers because the runner
logs) and ``Call to deprecated function update`` (Avalanche 0.6 templates call their own
deprecated ``update`` at every experience: every step under ``protocol="online"``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import re
import warnings
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from continual.strategies.augment import SCRAugment
from continual.strategies.base import GradientStrategy, finite_loss_value
from continual.types import Batch, ConfigError, NonFiniteLoss, TaskInfo

AVALANCHE_STRATEGIES: dict[str, str] = {
    "naive": "avalanche.training.Naive",
    "cumulative": "avalanche.training.Cumulative",
    "replay": "avalanche.training.Replay",
    "ewc": "avalanche.training.EWC",
    "lwf": "avalanche.training.LwF",
    "si": "avalanche.training.SynapticIntelligence",
    "mas": "avalanche.training.MAS",
    "gem": "avalanche.training.GEM",
    "agem": "avalanche.training.AGEM",
    "gdumb": "avalanche.training.GDumb",
    "icarl": "avalanche.training.ICaRL",
    "der": "avalanche.training.DER",
    "er_ace": "avalanche.training.ER_ACE",
    "er_aml": "avalanche.training.ER_AML",
    "mir": "avalanche.training.MIR",
    "scr": "avalanche.training.SCR",
}
PROTOCOLS = ("online", "experience")
# One memory (or constraint) per experience: with one-batch experiences it grows without bound,
# and AGEM's replay batch (sample_size // experiences) reaches 0 after sample_size batches.
GROWS_PER_EXPERIENCE = {"gem": "GEM", "agem": "AGEM", "cumulative": "Cumulative"}
# Avalanche 0.6 ER_AML cycles a drop_last DataLoader of train_mb_size over each class's buffer:
# while a class holds fewer samples (the first batches of an online stream) it loops forever.
ONLINE_HANGS = {"er_aml": "ER_AML"}
# Arguments the adapter sets itself; giving them in ``options`` is an error.
RESERVED = ("model", "feature_extractor", "classifier", "optimizer", "device", "evaluator",
            "train_mb_size", "train_epochs", "eval_mb_size", "eval_every")


# (category, message start) of the warnings Avalanche raises about itself; see the docstring.
AVALANCHE_CHATTER = (
    (UserWarning, re.compile(r"No loggers specified, metrics will not be logged")),
    (DeprecationWarning, re.compile(r"Call to deprecated function update \(removal in version")),
)


def _is_chatter(w: warnings.WarningMessage) -> bool:
    return any(issubclass(w.category, category) and pattern.match(str(w.message))
               for category, pattern in AVALANCHE_CHATTER)


@contextlib.contextmanager
def _without_avalanche_chatter() -> Iterator[None]:
    """Drop exactly ``AVALANCHE_CHATTER`` raised inside; pass every other warning on.

    A ``filterwarnings("ignore", ...)`` alone does not hold: Avalanche's ``@deprecated``
    calls ``warnings.simplefilter("once", DeprecationWarning)`` on every call, which goes in
    front of it (and, by changing the filters, resets "once"). So warnings inside are
    recorded, and all but the chatter re-issued at their own source location on the way out.
    """
    with warnings.catch_warnings(record=True) as caught:
        for category, pattern in AVALANCHE_CHATTER:
            warnings.filterwarnings("ignore", message=pattern.pattern, category=category)
        try:
            yield
        finally:
            kept = [w for w in caught if not _is_chatter(w)]
    for w in kept:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _import_avalanche_training():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # qpsolvers warns at import when no QP solver is there
        import avalanche.training  # noqa: F401
    from avalanche.training.plugins import EvaluationPlugin

    return EvaluationPlugin


def _feature_parts(model: nn.Module, name: str) -> tuple[nn.Module, nn.Module]:
    """(feature extractor, classifier head) of a continual.models.Classifier-like model."""
    body, head = getattr(model, "body", None), getattr(model, "head", None)
    if not isinstance(body, nn.Module) or not isinstance(head, nn.Linear):
        raise ConfigError(
            f"avalanche strategy {name!r} needs a model with a feature extractor `body` and a "
            "linear `head` (continual.models backbones have both); got "
            f"{type(model).__name__}"
        )
    return body, head


# Avalanche strategies whose first training forward ends with the incoming rows (Naive and the
# regularisers: those rows alone; DER: the replayed rows, then these; ER-ACE: these, the buffer
# in a second forward): under protocol="online", with one minibatch per batch, those rows'
# predictions are the test-then-train ones, counted as our own strategies count them
# (strategies/base.py: pre-step training logits), which spares the runner a second forward
# pass per batch (a few % of an online step; benchmarks/avalanche_sweep.py).
OUTPUTS_END_WITH_THE_BATCH = ("naive", "ewc", "lwf", "si", "mas", "der", "er_ace")


class _LossRecorder:
    """Avalanche plugin that keeps the last training iteration's loss (train() zeroes
    strategy.loss) and, if ``count_hits``, which rows the first forward of each train() call
    got right (B_forward,) before any step, and that forward's output shape."""

    def __init__(self, count_hits: bool = False) -> None:
        self.value: torch.Tensor | None = None
        self.count_hits = count_hits
        self.correct: torch.Tensor | None = None
        self.shape: tuple[int, ...] = ()

    def before_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        self.correct = None

    def after_forward(self, strategy: Any, **kwargs: Any) -> None:
        if self.count_hits and self.correct is None:
            out = strategy.mb_output.detach()
            self.correct, self.shape = out.argmax(1) == strategy.mb_y, tuple(out.shape)

    def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
        self.value = strategy.loss.detach()


def _official_scr_model(body: nn.Module, dim: int) -> nn.Module:
    """SCR's model as in the official code (Mai et al. 2021), on our backbone's ``body``.

    Training: normalize(projection(features)), the projection Linear-ReLU-Linear from the raw
    (dim,) features to 128-d; test: NCM over the L2-normalised features. Avalanche's SCRModel
    instead normalises the features before the projection and leaves the projection's output
    unnormalised, though its SCRLoss expects unit vectors; normalising both (its model plus a
    normalised head) made the projection collapse at lr 0.1 (constant loss, no learning).
    """
    from avalanche.models import SCRModel

    class OfficialSCRModel(SCRModel):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            features = self.feature_extractor(x)
            if self.training:
                return nn.functional.normalize(self.train_classifier(features), dim=1)
            return self.eval_classifier(nn.functional.normalize(features, dim=1))

    projection = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 128))
    return OfficialSCRModel(body, projection)


class AvalancheStrategy(GradientStrategy):
    """Runs an Avalanche training strategy (by short name or dotted path) on our streams.

    model: our backbone (B, ...) -> (B, n_classes); strategy: a key of AVALANCHE_STRATEGIES
    or ``"package.module.Class"`` of any ``avalanche.training`` template; protocol: "online"
    or "experience" (see the module docstring); lr/optimizer/momentum/weight_decay: the
    optimiser (shared with our own strategies); train_mb_size: Avalanche's minibatch size
    (None: the incoming batch's size); train_epochs: epochs per experience (None: 1 online,
    the stream's passes per task in the experience protocol); options: the Avalanche
    strategy's own keyword arguments (checked against its signature); online_chunk: samples
    per shared Avalanche dataset under the online protocol (``OnlineData``: larger is faster
    for replay strategies, smaller keeps less data alive on long streams; 1 gives every batch
    its own).
    """

    def __init__(
        self,
        model: nn.Module,
        strategy: str = "naive",
        protocol: str = "online",
        lr: float = 0.05,
        optimizer: str = "sgd",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        train_mb_size: int | None = None,
        train_epochs: int | None = None,
        options: dict[str, Any] | None = None,
        online_chunk: int = 4096,
    ) -> None:
        from continual.strategies.base import make_optimizer

        if protocol not in PROTOCOLS:
            raise ConfigError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
        if isinstance(online_chunk, bool) or not isinstance(online_chunk, int) or online_chunk < 1:
            raise ConfigError(f"online_chunk must be a number of samples >= 1, got {online_chunk!r}")
        self.name, self.protocol = strategy, protocol
        self.train_mb_size, self.train_epochs = train_mb_size, train_epochs
        options = dict(options or {})
        self._check_protocol(strategy, protocol, options)
        target = AVALANCHE_STRATEGIES.get(strategy, strategy)
        if "." not in target:
            raise ConfigError(
                f"unknown avalanche strategy {strategy!r}; choose one of "
                f"{sorted(AVALANCHE_STRATEGIES)} or give a dotted path to an avalanche.training "
                "class"
            )
        if strategy == "gem" and importlib.util.find_spec("quadprog") is None:
            raise ConfigError("avalanche GEM solves its QP with quadprog: `pip install quadprog`")
        evaluation_plugin = _import_avalanche_training()
        from continual.config import locate_target

        cls = locate_target(target)
        self._check_options(cls, strategy, options)
        self.base_model = model
        self.device = next(model.parameters()).device
        self.n_classes = getattr(getattr(model, "head", None), "out_features", None)
        args = self._model_arguments(strategy, model, options)
        params = [p for m in args.values() if isinstance(m, nn.Module) for p in m.parameters()]
        opt = make_optimizer(list(dict.fromkeys(params)), optimizer, lr, momentum, weight_decay)
        if "criterion" in inspect.signature(cls.__init__).parameters:
            args["criterion"] = nn.CrossEntropyLoss()  # required by some, fixed inside others
        with _without_avalanche_chatter():
            self.avl = cls(
                **args, optimizer=opt, train_mb_size=train_mb_size or 10,
                train_epochs=train_epochs or 1, eval_mb_size=256, device=self.device,
                evaluator=evaluation_plugin(loggers=[]), **options,
            )
        self.optimizer = opt  # the same object as self.avl.optimizer (an LR schedule finds it)
        self._guard_updates()
        self._training_in_hook = False
        self._loss_recorder = _LossRecorder(
            count_hits=protocol == "online" and strategy in OUTPUTS_END_WITH_THE_BATCH and train_mb_size is None)
        self.avl.plugins.append(self._loss_recorder)
        self.model = self.avl.model
        self._n_experiences = 0
        self._seen_classes: set[int] = set()
        self._task: TaskInfo | None = None
        self._first_in_task = True
        self._pending: list[tuple[torch.Tensor, ...]] = []
        self._class_order: list[int] = []  # classes in the order they were first seen
        self._experience_sizes: list[int] = []  # how many of them each experience brought
        self._online_data = OnlineData(online_chunk)

    # ------------------------------------------------------------------ construction
    @staticmethod
    def _check_protocol(strategy: str, protocol: str, options: dict[str, Any]) -> None:
        if protocol != "online":
            return
        if strategy in ONLINE_HANGS:
            raise ConfigError(
                f"avalanche {ONLINE_HANGS[strategy]} never returns from a one-batch experience "
                "while a class has fewer than train_mb_size samples in its buffer; use "
                "strategy.protocol=experience on a stream with visible boundaries"
            )
        if strategy in GROWS_PER_EXPERIENCE:
            raise ConfigError(
                f"avalanche {GROWS_PER_EXPERIENCE[strategy]} keeps state per experience; with "
                "protocol=online every batch is an experience and that state grows without bound; "
                "use strategy.protocol=experience on a stream with visible boundaries"
            )
        if strategy == "ewc" and options.get("mode", "separate") == "separate":
            raise ConfigError(
                "avalanche EWC with mode=separate keeps one penalty per experience; with "
                "protocol=online every batch is an experience: use strategy.options.mode=online "
                "(with decay_factor) or strategy.protocol=experience"
            )

    @staticmethod
    def _check_options(cls: type, strategy: str, options: dict[str, Any]) -> None:
        reserved = sorted(set(options) & set(RESERVED))
        if reserved:
            raise ConfigError(
                f"strategy.options {reserved} are set by the adapter; use the adapter's own "
                "lr/optimizer/momentum/weight_decay/train_mb_size/train_epochs options instead"
            )
        from continual.config import accepted_options

        params, _ = accepted_options(cls)  # follows **kwargs into the base templates
        valid = sorted(k for k in params if k not in (*RESERVED, "criterion", "plugins"))
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ConfigError(
                f"avalanche strategy {strategy!r} has no option(s) {unknown}; valid options: "
                f"{', '.join(valid)}"
            )

    def _model_arguments(self, strategy: str, model: nn.Module, options: dict[str, Any]):
        """The model slots of each Avalanche constructor, filled from our backbone."""
        if strategy == "icarl":
            body, head = _feature_parts(model, strategy)
            options.setdefault("buffer_transform", None)
            return {"feature_extractor": body, "classifier": head}
        if strategy == "er_aml":
            body, _ = _feature_parts(model, strategy)
            return {"model": model, "feature_extractor": body}
        if strategy == "scr":
            body, head = _feature_parts(model, strategy)
            options.setdefault("augmentations", SCRAugment())
            return {"model": _official_scr_model(body, head.in_features).to(self.device)}
        return {"model": model}

    def _guard_updates(self) -> None:
        """Check each minibatch loss before Avalanche's backward (see the module docstring).

        Every Avalanche template used here trains through ``self.backward()`` and
        ``self.optimizer_step()``; instance attributes replace them for this strategy only.
        """
        avl = self.avl
        backward, optimizer_step = avl.backward, avl.optimizer_step
        skip_update = False

        def checked_backward() -> None:
            nonlocal skip_update
            if self.check_each_step or self._training_in_hook:
                try:
                    finite_loss_value(avl.loss.sum(), f"avalanche {self.name}")
                except NonFiniteLoss:
                    if not (self._training_in_hook and self.check_each_step):
                        raise
                    # skip the minibatch; plugins acting after backward (A-GEM, GEM) get zeros
                    for group in avl.optimizer.param_groups:
                        for p in group["params"]:
                            p.grad = torch.zeros_like(p)
                    skip_update = True
                    return
            backward()

        def checked_optimizer_step() -> None:
            nonlocal skip_update
            if skip_update:
                skip_update = False
                self.skipped_nonfinite_hook_steps += 1
                return
            optimizer_step()

        avl.backward, avl.optimizer_step = checked_backward, checked_optimizer_step

    # ------------------------------------------------------------------ experiences
    def _experience(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor | None,
                    online: bool):
        from avalanche.benchmarks import OnlineCLExperience
        from avalanche.benchmarks.scenarios.dataset_scenario import DatasetExperience
        from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset

        if online:
            data = self._online_data.slice(x, y, task)
        else:
            data = _make_taskaware_tensor_classification_dataset(
                x, y, targets=y.tolist(), task_labels=0 if task is None else task.tolist()
            )
        visible = self._task is not None
        if online:
            origin = DatasetExperience(
                dataset=data, current_experience=self._task.task_id if visible else 0
            )
            exp = OnlineCLExperience(
                dataset=data, origin_experience=origin, is_first_subexp=self._first_in_task,
                access_task_boundaries=visible,
            )
            exp.current_experience = self._n_experiences
        else:
            exp = DatasetExperience(dataset=data, current_experience=self._n_experiences)
        classes = sorted(set(y.tolist()))
        exp.classes_in_this_experience = classes
        exp.previous_classes = sorted(self._seen_classes)
        new = [c for c in classes if c not in self._seen_classes]
        self._seen_classes.update(classes)
        exp.classes_seen_so_far = sorted(self._seen_classes)
        exp.future_classes = []  # unknown to a learner
        # iCaRL reads the class order from the benchmark: give the past, and the classes not yet
        # seen (known from the head's size, not from the stream) as one trailing group
        self._class_order += new
        self._experience_sizes.append(len(new))
        unseen = [c for c in range(self.n_classes or 0) if c not in self._seen_classes]
        exp.benchmark = SimpleNamespace(
            n_classes_per_exp=self._experience_sizes + ([len(unseen)] if unseen else []),
            classes_order=self._class_order + unseen)
        if self.name == "icarl" and not new:
            raise ConfigError(
                "avalanche iCaRL needs every experience to bring new classes (class-incremental "
                f"streams); experience {self._n_experiences} only has seen classes {classes}"
            )
        return exp

    def _train(self, exp, epochs: int, mb_size: int) -> None:
        self.avl.train_epochs, self.avl.train_mb_size = epochs, mb_size
        with _without_avalanche_chatter():
            self.avl.train(exp, eval_streams=[])
        self._n_experiences += 1

    # ------------------------------------------------------------------ the contract
    def on_task_start(self, info: TaskInfo) -> None:
        self._task, self._first_in_task, self._pending = info, True, []
        self._online_data.start_task()

    def observe(self, batch: Batch) -> dict[str, Any]:
        """Online: one Avalanche train() on this batch; experience: keep it for the task's end."""
        if self.protocol == "experience":
            if self._task is None:
                raise ConfigError(
                    "strategy.protocol=experience needs a stream with visible task boundaries "
                    "(it trains on each task at its end); use strategy.protocol=online on "
                    "task-free streams"
                )
            self._pending.append((batch.x.detach(), batch.y, batch.task, batch.index))
            return {}
        exp = self._experience(batch.x.detach(), batch.y, batch.task, online=True)
        self._train(exp, self.train_epochs or 1, self.train_mb_size or batch.y.shape[0])
        self._first_in_task = False
        recorder = self._loss_recorder
        out = {} if recorder.value is None else {"loss": recorder.value.sum()}  # shape (1,)
        if recorder.count_hits:
            n = batch.y.shape[0]
            if len(recorder.shape) != 2 or recorder.shape[0] < n or (
                    recorder.shape[1] != (self.n_classes or self._infer_classes(batch.x))):
                raise RuntimeError(
                    f"avalanche {self.name}'s first training forward gave shape {recorder.shape} for "
                    f"a batch of {n} and {self.n_classes} classes; OUTPUTS_END_WITH_THE_BATCH in "
                    "continual/strategies/avalanche.py must not list it"
                )
            out["online_correct"] = recorder.correct[-n:].sum()
        return out

    def on_task_end(self, info: TaskInfo) -> None:
        if self.protocol != "experience" or not self._pending:
            return
        xs, ys, ts, idx = zip(*self._pending)
        x, y = torch.cat(xs), torch.cat(ys)
        task = None if ts[0] is None else torch.cat(ts)
        passes = 1
        if idx[0] is not None:  # the stream's passes repeat each index: keep one copy
            index = torch.cat(idx)
            keep = _first_occurrences(index)
            passes = max(1, round(index.numel() / keep.numel()))
            x, y = x[keep], y[keep]
            task = None if task is None else task[keep]
        exp = self._experience(x, y, task, online=False)
        self._training_in_hook = True
        try:
            self._train(exp, self.train_epochs or passes, self.train_mb_size or ys[0].shape[0])
        finally:
            self._training_in_hook = False
        self._pending = []

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (B, n_classes): the Avalanche model in eval mode (NCM for iCaRL and SCR)."""
        from avalanche.models import MultiTaskModule, avalanche_forward

        model = self.avl.model
        n_classes = self.n_classes or self._infer_classes(x)
        ncm = getattr(model, "eval_classifier", None)
        if getattr(ncm, "class_means_dict", None) == {}:
            return torch.zeros(x.shape[0], n_classes, device=x.device)  # no class means yet
        was_training = model.training
        model.eval()
        try:
            if isinstance(model, MultiTaskModule):
                tasks = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
                out = avalanche_forward(model, x, tasks if task is None else task)
            else:
                out = model(x)
        finally:
            model.train(was_training)
        if out.shape[1] < n_classes:  # NCM scores only the classes it has means for
            full = torch.full((x.shape[0], n_classes), float("-inf"), device=out.device)
            full[:, : out.shape[1]] = out
            out = full
        return out

    def _infer_classes(self, x: torch.Tensor) -> int:
        was_training = self.base_model.training
        self.base_model.eval()
        self.n_classes = int(self.base_model(x[:1]).shape[1])
        self.base_model.train(was_training)
        return self.n_classes

    def state_dict(self) -> dict[str, Any]:
        """Model, optimiser and class bookkeeping: a copy, unchanged by later training."""
        from continual.strategies.base import snapshot

        return snapshot({
            "model": self.avl.model.state_dict(),
            "optimizer": self.avl.optimizer.state_dict(),
            "n_experiences": self._n_experiences,
            "seen_classes": sorted(self._seen_classes),
            "skipped_nonfinite_hook_steps": self.skipped_nonfinite_hook_steps,
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from continual.strategies.base import snapshot

        _load_model_state(self.avl.model, state["model"])
        self.avl.optimizer.load_state_dict(snapshot(state["optimizer"]))
        self._n_experiences = int(state["n_experiences"])
        self._seen_classes = set(state["seen_classes"])
        self.skipped_nonfinite_hook_steps = int(state.get("skipped_nonfinite_hook_steps", 0))

    def summary(self) -> dict[str, Any]:
        return {"avalanche_strategy": self.name, "avalanche_protocol": self.protocol,
                "skipped_nonfinite_hook_steps": self.skipped_nonfinite_hook_steps}


class OnlineData:
    """The online protocol's one-batch datasets, as slices of a few shared Avalanche datasets.

    Avalanche concatenates datasets (every replay-buffer update and read: DER, ER-ACE, MIR,
    Replay...) cheaply only while they are slices of the same underlying dataset; across
    several it re-indexes every item in Python. Its own online streams
    (``split_online_stream``) slice each task's dataset, so a class's buffer items share one;
    with a new dataset per batch they did not, and ``avl_der`` ran 2.0-2.5x slower than the
    same DER on ``split_online_stream`` (benchmarks/avalanche_sweep.py, RESULTS.md). So batches
    are copied into chunks of ``chunk`` samples, each wrapped once in an Avalanche dataset over
    mutable storage (its targets and task labels are plain lists, which Avalanche keeps by
    reference), a batch's dataset is the subset of its rows (written before the subset is made,
    never changed), and every task starts a new chunk (``start_task``), so a task no larger
    than ``chunk`` is one dataset, as in Avalanche's own online stream.

    Memory: a chunk lives while anything (a buffer) holds one of its rows. So the adapter keeps
    at most a copy of the training data seen, and at most M chunks for a buffer of M items
    (M x ``chunk`` samples on a long stream, where one dataset per batch kept M batches);
    ``online_chunk=1`` restores that bound, at the speed cost above.
    """

    def __init__(self, chunk: int = 4096) -> None:
        self.chunk = chunk
        self._x: torch.Tensor | None = None
        self._y: torch.Tensor | None = None
        self._targets: list[int] = []
        self._tasks: list[int] = []
        self._dataset: Any = None
        self._used = 0

    def slice(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor | None):
        """An Avalanche dataset of (x (B, ...), y (B,), task labels (B,) or 0) as its rows."""
        n = y.shape[0]
        fits = (self._x is not None and self._used + n <= self._x.shape[0]
                and self._x.shape[1:] == x.shape[1:] and self._x.dtype == x.dtype
                and self._x.device == x.device)
        if not fits:
            self._new_chunk(x, y, max(self.chunk, n))
        rows = range(self._used, self._used + n)
        self._x[rows.start:rows.stop] = x
        self._y[rows.start:rows.stop] = y
        self._targets[rows.start:rows.stop] = y.tolist()
        self._tasks[rows.start:rows.stop] = [0] * n if task is None else task.tolist()
        self._used += n
        return self._dataset.subset(rows)

    def start_task(self) -> None:
        """Put the next batch in a new chunk, so that a task's rows share chunks with no other task."""
        self._x = None

    def _new_chunk(self, x: torch.Tensor, y: torch.Tensor, size: int) -> None:
        from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset

        self._x = torch.empty((size, *x.shape[1:]), dtype=x.dtype, device=x.device)
        self._y = torch.empty(size, dtype=y.dtype, device=y.device)
        self._targets, self._tasks, self._used = [0] * size, [0] * size, 0
        self._dataset = _make_taskaware_tensor_classification_dataset(
            self._x, self._y, targets=self._targets, task_labels=self._tasks)


def _first_occurrences(index: torch.Tensor) -> torch.Tensor:
    """Positions of the first occurrence of each value of ``index`` (N,), in stream order."""
    order = torch.argsort(index, stable=True)
    sorted_index = index[order]
    first = torch.ones_like(sorted_index, dtype=torch.bool)
    first[1:] = sorted_index[1:] != sorted_index[:-1]
    return order[first].sort().values


def _load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``model.load_state_dict`` that also restores NCM class means (a buffer that starts None)."""
    from avalanche.models import NCMClassifier

    state = dict(state)
    for prefix, module in model.named_modules():
        if isinstance(module, NCMClassifier):
            key = f"{prefix}.class_means" if prefix else "class_means"
            if key in state:
                module.load_state_dict({"class_means": state.pop(key)})
    model.load_state_dict(state)
