"""The conformance kit: check a strategy class against the contract in one call.

    from continual.testing import check_strategy
    check_strategy(MyStrategy, options={"lr": 0.05})

Streams and loggers are checked the same way, with ``check_stream(stream)`` and
``check_logger(logger_factory)`` (defined in ``continual.testing_streams`` and
``continual.testing_loggers``, whose docstrings list their checks; re-exported here).

``check_strategy`` builds the strategy on a small synthetic class-incremental stream (no
dataset needed) and checks, each as a named check:

- ``observe``: returns a dict of str -> float/int or 0-d tensor, all finite;
  ``online_correct``, if given, lies in [0, batch size];
- ``predict``: logits of shape (B, n_classes), floating point, before and after training;
- ``no_grad``: predict returns no tensor that needs a gradient even when called with
  gradients enabled, leaves the parameters' ``.grad`` alone, and changes neither the model's
  state (e.g. BatchNorm statistics) nor its answer when called twice;
- ``state_dict``: fresh instances that load ``state_dict()``, one after a ``torch.save`` /
  ``torch.load`` round trip and one straight from memory, predict exactly as the original, and
  all stay identical after training further on the same batches (the state holds everything
  the future depends on); the returned dict itself does not change meanwhile (it is a copy,
  and ``load_state_dict`` keeps no reference into it);
- ``determinism``: two instances built and trained under the same seed give identical
  observe outputs and predictions;
- ``task_free``: on a stream with hidden boundaries the strategy trains and predicts with
  ``batch.task = None``, ``predict(x, task=None)``, no ``on_task_start``/``on_task_end``
  calls, and a ``true_task`` that raises ``TaskLeakError`` when touched;
- ``inputs_unchanged``: ``observe`` leaves the batch as it found it (``x``, ``y``, ``task``,
  ``index``, ``true_task``: the runner still uses them, and ``index``/``task`` are views of the
  stream's schedule) and ``predict`` leaves its ``x`` alone.

Before any check, the strategy must have the hooks the runner calls
(``on_task_start``, ``on_task_end``, ``state_dict``, ``load_state_dict``): a class with only
``observe`` and ``predict`` is told to subclass ``continual.types.Strategy``, which gives them.

Failures are collected and raised together as one ``ContractViolation`` (an AssertionError,
so pytest shows it) naming each check and what to change.
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from continual.testing_common import (  # re-exported: the kit's public names
    ContractViolation,
    accepts,
    copy_value,
    default_model,
    first_difference,
    same_value,
    seed_all,
    synthetic_stream,
)
from continual.types import Batch, Strategy, TaskInfo

CHECKS = ("observe", "predict", "no_grad", "state_dict", "determinism", "task_free",
          "inputs_unchanged")
# What the runner calls on every strategy; continual.types.Strategy gives each a default.
RUNNER_HOOKS = ("on_task_start", "on_task_end", "state_dict", "load_state_dict")
BATCH_FIELDS = ("x", "y", "task", "index", "true_task")


class TaskLeakError(RuntimeError):
    """A strategy touched the true task id of a batch in a scenario that hides it."""


class TaskTripwire:
    """Stands in for ``Batch.true_task`` where task ids are hidden: any use raises TaskLeakError.

    Reading the attribute is allowed (a strategy may pass the batch around); using the value
    (indexing, arithmetic, comparisons, conversion, tensor operations, ``.to()``...) is not.
    """

    def _leak(self, *args: Any, **kwargs: Any) -> Any:
        raise TaskLeakError(
            "the strategy used batch.true_task on a task-free stream; true_task is the runner's "
            "bookkeeping and hidden from learners there: detect task changes from the data instead"
        )

    def __getattr__(self, name: str) -> Any:
        self._leak()

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: D105
        raise TaskLeakError(
            f"the strategy passed batch.true_task to {getattr(func, '__name__', func)} on a "
            "task-free stream; true_task is hidden from learners there"
        )

    def __repr__(self) -> str:
        return "<hidden true_task>"

    def __copy__(self) -> TaskTripwire:
        return self

    def __deepcopy__(self, memo: dict) -> TaskTripwire:
        return self

    __bool__ = __len__ = __iter__ = __getitem__ = __index__ = __int__ = __float__ = _leak
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __hash__ = _leak  # type: ignore[assignment]
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __array__ = _leak
    __contains__ = __format__ = _leak


# ---------------------------------------------------------------------- fixtures
class _Kit:
    def __init__(self, factory, options, model_factory, stream_factory, n_steps, seed, device):
        self.factory, self.options = factory, dict(options or {})
        self.model_factory = model_factory or default_model
        self.stream_factory = stream_factory or synthetic_stream
        self.n_steps, self.seed, self.device = n_steps, seed, torch.device(device)
        self.stream = self.stream_factory(seed=seed, boundaries="visible")
        self.stream.to(self.device)
        self.n_classes = self.stream.n_classes
        probe = [self.stream.eval_set(t)[0] for t in range(self.stream.n_tasks)]
        self.probe = torch.cat(probe)[:32].to(self.device)
        self.pristine_probe = self.probe.clone()  # what the probe was before any predict

    def build(self, seed: int) -> Strategy:
        seed_all(seed)
        model = self.model_factory(self.stream.input_shape, self.n_classes).to(self.device)
        kwargs = dict(self.options)
        if "seed" not in kwargs and accepts(self.factory, "seed"):
            kwargs["seed"] = seed
        seed_all(seed)
        return self.factory(model=model, **kwargs)

    def batches(self, stream=None, hide_task: bool = False, limit: int | None = None):
        """(segment info or None, batch) pairs over the whole stream, at most ``limit`` batches."""
        stream = stream or self.stream
        n = 0
        for seg in stream.segments:
            info = TaskInfo(seg.task, stream.tasks[seg.task].classes, stream.n_classes, n)
            for b in stream.batches(seg, first_step=n):
                if hide_task:
                    b = Batch(b.x, b.y, task=None, true_task=TaskTripwire(), step=b.step,
                              index=b.index)
                yield info, b
                n += 1
                if limit is not None and n >= limit:
                    return

    def train(self, strategy: Strategy, limit: int, visible: bool = True, stream=None,
              hide_task: bool = False) -> list[dict[str, Any]]:
        """Run ``limit`` observe steps, calling the boundary hooks when ``visible``."""
        outs, current = [], None
        for info, b in self.batches(stream, hide_task, limit):
            if visible and (current is None or info.task_id != current.task_id):
                if current is not None:
                    strategy.on_task_end(current)
                strategy.on_task_start(info)
                current = info
            outs.append(strategy.observe(b))
        if visible and current is not None:
            strategy.on_task_end(current)
        return outs

    def predict(self, strategy: Strategy, x: torch.Tensor | None = None) -> torch.Tensor:
        with torch.inference_mode():
            return strategy.predict(self.probe if x is None else x, None).detach().clone()


def _values(out: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v.item() if torch.is_tensor(v) else v) for k, v in out.items()}


def _check_observe_output(out: Any, batch_size: int) -> list[str]:
    if not isinstance(out, Mapping):
        return [f"observe returned {type(out).__name__}; return a dict such as "
                "{'loss': loss.detach()}"]
    problems = []
    for k, v in out.items():
        if not isinstance(k, str):
            problems.append(f"observe returned the key {k!r}; keys must be strings")
            continue
        if torch.is_tensor(v):
            if v.dim() != 0:
                problems.append(f"observe()[{k!r}] is a tensor of shape {tuple(v.shape)}; "
                                "return floats or 0-d tensors (loss.detach(), not per-sample "
                                "losses)")
                continue
            if v.requires_grad:
                problems.append(f"observe()[{k!r}] requires grad; return loss.detach()")
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            problems.append(f"observe()[{k!r}] is {type(v).__name__}; return a float or a 0-d "
                            "tensor")
        elif not math.isfinite(v):
            problems.append(f"observe()[{k!r}] = {v}; values must be finite")
        elif k == "online_correct" and not 0 <= v <= batch_size:
            problems.append(f"observe()['online_correct'] = {v} is outside [0, {batch_size}]: it "
                            "counts the incoming batch's samples classified correctly before "
                            "the step")
    return problems


def _serialise(state: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _deserialise(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=False)


def _check_logits(out: Any, n: int, n_classes: int, when: str) -> list[str]:
    if not torch.is_tensor(out):
        return [f"predict {when} returned {type(out).__name__}; return a tensor of logits"]
    if tuple(out.shape) != (n, n_classes):
        return [f"predict {when} returned shape {tuple(out.shape)} for {n} inputs; expected "
                f"(B, n_classes) = ({n}, {n_classes})"]
    if not out.is_floating_point():
        return [f"predict {when} returned dtype {out.dtype}; return floating-point logits/scores"]
    return []


def check_strategy(
    strategy: Callable[..., Strategy],
    options: Mapping[str, Any] | None = None,
    *,
    model: Callable[[tuple[int, ...], int], nn.Module] | None = None,
    stream: Callable[..., Any] | None = None,
    n_steps: int = 6,
    seed: int = 0,
    skip: Sequence[str] = (),
    device: str = "cpu",
) -> dict[str, str]:
    """Check ``strategy`` (a class, or a factory called as ``strategy(model=..., **options)``)
    against the observe/predict contract; returns ``{check: "passed" | "skipped"}``.

    model: ``model(input_shape, n_classes) -> nn.Module`` (default: a 32-unit MLP).
    stream: ``stream(seed=..., boundaries=...) -> Stream`` (default: ``synthetic_stream``,
        4 classes in 2 tasks, 8x8 inputs, batches of 8); a ``seed`` option is passed to the
        strategy when its constructor takes one.
    skip: names from ``CHECKS`` to leave out, e.g. ``("state_dict",)`` for a strategy that
        does not support checkpoints, ``("task_free",)`` for one that needs task ids.

    Raises ``ContractViolation`` listing every failed check.
    """
    unknown = set(skip) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown checks in skip: {sorted(unknown)}; choose from {list(CHECKS)}")
    kit = _Kit(strategy, options, model, stream, n_steps, seed, device)
    label = getattr(strategy, "__qualname__", repr(strategy))
    missing = [h for h in RUNNER_HOOKS if not callable(getattr(kit.build(seed), h, None))]
    if missing:
        raise ContractViolation(
            f"{label} has no {', '.join(missing)}: the runner calls on_task_start/on_task_end at "
            "visible task boundaries and state_dict/load_state_dict for checkpoints and resume. "
            f"Subclass continual.types.Strategy (class {label.split('.')[-1]}(Strategy): ...), "
            "which gives these hooks defaults, and override the ones your strategy needs "
            "(state_dict/load_state_dict, so that a resumed run continues from your state)"
        )
    results: dict[str, str] = {}
    failures: list[str] = []
    for name in CHECKS:
        if name in skip:
            results[name] = "skipped"
            continue
        try:
            problems = getattr(_Checks, name)(kit)
        except TaskLeakError as e:
            problems = [str(e)]
        except Exception as e:  # a crash is a failed check, reported with its cause
            problems = [f"raised {type(e).__name__}: {e}"]
        results[name] = "failed" if problems else "passed"
        failures += [f"[{name}] {p}" for p in problems]
    if failures:
        raise ContractViolation(
            f"{label} breaks the strategy contract ({len(failures)} problem(s)):\n  "
            + "\n  ".join(failures)
        )
    return results


class _Checks:
    """One static method per check; each returns a list of problems (empty: passed)."""

    @staticmethod
    def observe(kit: _Kit) -> list[str]:
        s = kit.build(kit.seed)
        outs = kit.train(s, kit.n_steps)
        sizes = [b.y.shape[0] for _, b in kit.batches(limit=kit.n_steps)]
        for out, size in zip(outs, sizes):
            problems = _check_observe_output(out, size)
            if problems:
                return problems
        return []

    @staticmethod
    def predict(kit: _Kit) -> list[str]:
        s = kit.build(kit.seed)
        n = kit.probe.shape[0]
        problems = _check_logits(kit.predict(s), n, kit.n_classes, "before training")
        kit.train(s, kit.n_steps)
        problems += _check_logits(kit.predict(s), n, kit.n_classes, "after training")
        one = kit.predict(s, kit.probe[:1])
        problems += _check_logits(one, 1, kit.n_classes, "on a single input")
        return problems

    @staticmethod
    def no_grad(kit: _Kit) -> list[str]:
        s = kit.build(kit.seed)
        kit.train(s, kit.n_steps)
        problems = []
        module = getattr(s, "model", None)
        params = list(module.parameters()) if isinstance(module, nn.Module) else []
        grads = [None if p.grad is None else p.grad.clone() for p in params]
        state = copy.deepcopy(module.state_dict()) if isinstance(module, nn.Module) else None
        with torch.enable_grad():
            first = s.predict(kit.probe, None)
        if torch.is_tensor(first) and first.requires_grad:
            problems.append("predict returned a tensor that requires grad; decorate predict with "
                            "@torch.inference_mode() (or @torch.no_grad())")
        for i, (p, g) in enumerate(zip(params, grads)):
            if (g is None) != (p.grad is None) or (g is not None and not torch.equal(g, p.grad)):
                problems.append(f"predict changed the gradient of parameter {i}; predict must not "
                                "call backward")
                break
        if state is not None:
            for k, v in module.state_dict().items():
                if k in state and torch.is_tensor(v) and not torch.equal(v, state[k]):
                    problems.append(f"predict changed the model state {k!r}; call model.eval() "
                                    "in predict (BatchNorm statistics) and never step the "
                                    "optimiser there")
                    break
        second = kit.predict(s)
        if torch.is_tensor(first) and not torch.equal(first.detach(), second):
            problems.append("predict gave different answers for the same inputs twice in a row; "
                            "use model.eval() (dropout) and keep predict free of randomness")
        return problems

    @staticmethod
    def state_dict(kit: _Kit) -> list[str]:
        a = kit.build(kit.seed)
        half = max(1, kit.n_steps // 2)
        kit.train(a, half)
        state = a.state_dict()
        if not isinstance(state, Mapping) or not state:
            return [f"state_dict() returned {state!r}; return everything the strategy's future "
                    "depends on (model, optimiser, buffers, counters, random generators)"]
        saved = _serialise(state)  # what the state holds now, whatever training does next
        in_memory = kit.build(kit.seed + 1)  # other initial weights: all must come from the state
        in_memory.load_state_dict(state)
        restored = kit.build(kit.seed + 2)  # as from a checkpoint file
        restored.load_state_dict(_deserialise(saved))
        problems = []
        pa = kit.predict(a)
        for s, how in ((restored, "after a save/load round trip"), (in_memory, "in memory")):
            ps = kit.predict(s)
            if not torch.equal(pa, ps):
                problems.append(f"after load_state_dict ({how}) the predictions differ (max |diff| "
                                f"{(pa - ps).abs().max().item():.3g}); state_dict must hold the model")
        if problems:
            return problems
        rest = list(kit.batches(limit=kit.n_steps))[half:]
        for s in (a, in_memory, restored):
            seed_all(kit.seed + 99)
            for _, batch in rest:
                s.observe(batch)
        pa, pr, pm = kit.predict(a), kit.predict(restored), kit.predict(in_memory)
        if not torch.equal(pa, pr):
            problems.append(f"after loading the state and training on the same {len(rest)} "
                            f"batches the predictions differ (max |diff| {(pa - pr).abs().max().item():.3g}); "
                            "state_dict misses something training depends on (optimiser state, "
                            "buffer, step counter, a random generator)")
        elif not torch.equal(pa, pm):
            problems.append(f"a strategy loaded from the in-memory state_dict() trains differently from "
                            f"the original (max |diff| {(pa - pm).abs().max().item():.3g}) though one "
                            "loaded from a saved copy does not: the two share tensors (e.g. optimiser "
                            "moments); load a copy (continual.strategies.base.snapshot)")
        changed = first_difference(state, _deserialise(saved), "state")
        if changed is not None:
            problems.append(f"{changed} changed while training went on after state_dict() returned: "
                            "the state shares tensors with the live model, optimiser or buffers. "
                            "state_dict() must return a copy and load_state_dict() must keep no "
                            "reference into its argument (continual.strategies.base.snapshot does both)")
        return problems

    @staticmethod
    def determinism(kit: _Kit) -> list[str]:
        runs = []
        for _ in range(2):
            s = kit.build(kit.seed)
            seed_all(kit.seed)
            outs = [_values(o) for o in kit.train(s, kit.n_steps)]
            runs.append((outs, kit.predict(s)))
        (o1, p1), (o2, p2) = runs
        problems = []
        if o1 != o2:
            problems.append("two instances built and trained under the same seed returned "
                            "different observe outputs; draw randomness from torch/numpy/random "
                            "seeded by the run (or from a generator seeded by a `seed` option)")
        if not torch.equal(p1, p2):
            problems.append("two instances built and trained under the same seed predict "
                            "differently")
        return problems

    @staticmethod
    def task_free(kit: _Kit) -> list[str]:
        stream = kit.stream_factory(seed=kit.seed, boundaries="hidden")
        stream.to(kit.device)
        s = kit.build(kit.seed)
        n = sum(1 for _ in kit.batches(stream))
        outs = kit.train(s, n, visible=False, stream=stream, hide_task=True)
        problems = []
        for out, (_, b) in zip(outs, kit.batches(stream, hide_task=True)):
            problems += _check_observe_output(out, b.y.shape[0])
            if problems:
                break
        problems += _check_logits(kit.predict(s), kit.probe.shape[0], kit.n_classes,
                                  "on a task-free stream")
        return problems

    @staticmethod
    def inputs_unchanged(kit: _Kit) -> list[str]:
        s = kit.build(kit.seed)
        problems: list[str] = []
        current = None
        # a fresh stream: a strategy that mutates its batches has spoilt the shared one's schedule
        stream = kit.stream_factory(seed=kit.seed, boundaries="visible")
        stream.to(kit.device)
        for info, batch in kit.batches(stream, limit=kit.n_steps):
            if current is None or info.task_id != current.task_id:
                if current is not None:
                    s.on_task_end(current)
                s.on_task_start(info)
                current = info
            before = {f: copy_value(getattr(batch, f)) for f in BATCH_FIELDS}
            s.observe(batch)
            changed = [f for f in BATCH_FIELDS if not same_value(before[f], getattr(batch, f))]
            if changed:
                fields = ", ".join(f"batch.{f}" for f in changed)
                problems.append(
                    f"observe changed {fields} in place; the batch is the runner's (it scores and "
                    "logs it after observe, and batch.index and batch.task are views of the "
                    "stream's schedule): work on a copy (x = batch.x.clone()) or use out-of-place "
                    "operations (x = x * 2, not x.mul_(2)), and never reassign the batch's fields"
                )
                break
        x = kit.pristine_probe.clone()
        kit.predict(s, x)
        if not same_value(kit.pristine_probe, x):
            problems.append("predict changed its input x in place; the runner reuses the eval "
                            "inputs for every eval point: work on a copy or out of place")
        return problems


__all__ = ["CHECKS", "ContractViolation", "TaskLeakError", "TaskTripwire", "check_logger", "check_strategy",
           "check_stream", "synthetic_stream"]

from continual.testing_loggers import check_logger  # noqa: E402 - re-exported
from continual.testing_streams import check_stream  # noqa: E402 - re-exported
