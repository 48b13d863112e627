"""What the conformance kit's checks share (``continual.testing`` for strategies,
``continual.testing_streams`` and ``continual.testing_loggers`` for streams and loggers): the
violation they raise, the synthetic stream and model they run on, running named checks, and
exact comparison of states and records."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn


class ContractViolation(AssertionError):
    """A strategy breaks the observe/predict contract; the message lists every failed check."""


def synthetic_stream(
    n_classes: int = 4, n_tasks: int = 2, input_shape: tuple[int, ...] = (1, 8, 8),
    train_per_class: int = 24, test_per_class: int = 8, batch_size: int = 8, seed: int = 0,
    **presentation: Any,
):
    """A small learnable class-incremental stream: one Gaussian blob per class.

    x: (N, *input_shape) float32; classes split evenly over ``n_tasks``.
    """
    from continual import streams
    g = torch.Generator().manual_seed(seed)
    dim = int(np.prod(input_shape))
    centres = torch.randn(n_classes, dim, generator=g)

    def draw(per_class: int):
        y = torch.arange(n_classes).repeat_interleave(per_class)
        x = centres[y] + 0.5 * torch.randn(y.numel(), dim, generator=g)
        return x.reshape(-1, *input_shape), y

    (xtr, ytr), (xte, yte) = draw(train_per_class), draw(test_per_class)
    data = streams.from_arrays(xtr, ytr, xte, yte, name="synthetic", n_classes=n_classes)
    return streams.class_incremental(
        data, n_tasks=n_tasks, batch_size=batch_size, seed=seed, name="synthetic", **presentation
    )


def default_model(input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    from continual.models import build_model

    return build_model("mlp", input_shape, n_classes, hidden=32)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def accepts(fn: Callable, name: str) -> bool:
    from continual.config import accepted_options

    try:
        params, _ = accepted_options(fn)
    except (TypeError, ValueError):
        return False
    return name in params


# ---------------------------------------------------------------------- the kit
def first_difference(live: Any, saved: Any, path: str) -> str | None:
    """The path of the first value in ``live`` that differs from ``saved`` (same structure), or
    None. Tensors and arrays compare exactly (NaN equal to NaN), containers item by item, plain
    values with ``==``; other objects are not compared."""
    if torch.is_tensor(live) or isinstance(live, np.ndarray):
        a, b = torch.as_tensor(live), torch.as_tensor(saved)
        if a.shape != b.shape or a.dtype != b.dtype:
            return path
        same = (a == b) | (a.isnan() & b.isnan()) if a.is_floating_point() else a == b
        return None if bool(same.all()) else path
    if isinstance(live, Mapping):
        if not isinstance(saved, Mapping) or set(live) != set(saved):
            return path
        for k in live:
            found = first_difference(live[k], saved[k], f"{path}[{k!r}]")
            if found is not None:
                return found
        return None
    if isinstance(live, (list, tuple)):
        if not isinstance(saved, (list, tuple)) or len(live) != len(saved):
            return path
        for i, (a, b) in enumerate(zip(live, saved)):
            found = first_difference(a, b, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    if isinstance(live, (int, float, str, bytes, bool, type(None))):
        same = live == saved or (isinstance(live, float) and isinstance(saved, float)
                                and math.isnan(live) and math.isnan(saved))
        return None if same else path
    return None


def copy_value(value: Any) -> Any:
    return value.clone() if torch.is_tensor(value) else value


def same_value(before: Any, after: Any) -> bool:
    """Same value: tensors element by element (NaN equal to NaN), anything else by ``==``."""
    if torch.is_tensor(before):
        if not (torch.is_tensor(after) and before.shape == after.shape
                and before.dtype == after.dtype):
            return False
        same = before == after
        if before.is_floating_point():
            same = same | (before.isnan() & after.isnan())
        return bool(same.all())
    return before is after or before == after


#: problems listed per check (a bug repeats in every segment)
MAX_LISTED = 3


def violation(label: str, what: str, failures: list[str]) -> AssertionError:
    return ContractViolation(
        f"{label} breaks the {what} contract ({len(failures)} problem(s)):\n  " + "\n  ".join(failures))


def run_checks(checks: dict[str, Callable[[], list[str] | None]], skip: Sequence[str], known: Sequence[str],
                label: str, what: str) -> dict[str, str]:
    """Run each check (None: not applicable, so skipped); raise one ContractViolation for all."""
    unknown = set(skip) - set(known)
    if unknown:
        raise ValueError(f"unknown checks in skip: {sorted(unknown)}; choose from {list(known)}")
    results: dict[str, str] = {}
    failures: list[str] = []
    for name, check in checks.items():
        if name in skip:
            results[name] = "skipped"
            continue
        try:
            problems = check()
        except Exception as e:  # a crash is a failed check, reported with its cause
            problems = [f"raised {type(e).__name__}: {e}"]
        if problems is None:
            results[name] = "skipped"
            continue
        results[name] = "failed" if problems else "passed"
        shown = problems[:MAX_LISTED] + ([f"... and {len(problems) - MAX_LISTED} more like these"]
                                         if len(problems) > MAX_LISTED else [])
        failures += [f"[{name}] {p}" for p in shown]
    if failures:
        raise violation(label, what, failures)
    return results


def label_of(obj: Any) -> str:
    name = getattr(obj, "name", None)
    return f"{type(obj).__name__}" + (f" {name!r}" if isinstance(name, str) else "")
