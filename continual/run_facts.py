"""What a run's summary records besides its metrics: the model's size, the process's peak
memory and the software versions (``Runner.summary``)."""

from __future__ import annotations

import functools
import resource
from pathlib import Path
from typing import Any

import torch

from continual.models.parameters import count_parameters
from continual.types import Strategy, strategy_member


def parameter_count(strategy: Strategy) -> int:
    """Parameters of the strategy's model(s): its ``parameter_count()``, or for a strategy that
    only implements the protocol's two methods, ``Strategy.parameter_count``'s default."""
    return int(strategy_member(strategy, "parameter_count")())


def trainable_parameter_count(strategy: Strategy) -> int | None:
    """Parameters of the strategy's ``model`` that train (requires_grad), each tied matrix
    once; None for a strategy without a ``model`` (not measured)."""
    model = getattr(strategy, "model", None)
    if not isinstance(model, torch.nn.Module):
        return None
    return count_parameters(model, trainable=True)


def reset_peak_rss() -> bool:
    """Reset the process's peak-RSS mark (Linux: ``/proc/self/clear_refs``), so a run in a
    sweep's shared process reports its own peak; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss(reset: bool) -> dict[str, Any]:
    """``peak_rss_mb`` and what it covers: ``run`` (since this run started, after a reset) or
    ``process`` (since the process started: it only grows from job to job of a sweep)."""
    if reset:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return {"peak_rss_mb": int(line.split()[1]) / 1024, "peak_rss_scope": "run"}
        except OSError:
            pass
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_rss_scope": "process"}


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("continual-sim", "torch", "numpy", "hydra-core", "faiss-gpu", "faiss-cpu"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return tuple(out.items())


def versions() -> dict[str, str]:
    """Python and package versions (read once per process: metadata lookups are slow)."""
    return dict(_versions())
