"""Checkpoints: atomic, checksummed, loaded without running code, the last K kept.

File layout: ``MAGIC`` (8 bytes), SHA-256 of the payload (32 bytes), then the payload
written by ``torch.save``. Loading verifies the checksum first and then uses
``torch.load(weights_only=True)``, which accepts tensors and plain containers only.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from continual.records import write_atomic

MAGIC = b"CLCKPT01"
NAME = re.compile(r"^ckpt-(\d{9})\.pt$")


class CorruptCheckpoint(ValueError):
    """A checkpoint file that is truncated, altered or not ours."""


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as plain data."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        # the run device's generator only: a checkpoint must resume in a process that sees fewer
        # GPUs (a Slurm requeue on another node), where restoring by device index would fail
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
    }


def cuda_state_to_restore(saved: Any, device_index: int) -> torch.Tensor | None:
    """The CUDA generator state to restore on ``device_index`` from a checkpoint's ``cuda``
    entry: one state (this format), or the per-device list older checkpoints hold (its entry
    for this index when there is one, else its first); None when the run had no GPU."""
    if saved is None or (isinstance(saved, (list, tuple)) and not saved):
        return None
    if isinstance(saved, (list, tuple)):
        return saved[device_index] if device_index < len(saved) else saved[0]
    return saved


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available():
        cuda = cuda_state_to_restore(state.get("cuda"), torch.cuda.current_device())
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)


def save_checkpoint(folder: str | Path, step: int, payload: dict[str, Any], keep: int = 2) -> Path:
    """Write ``payload`` as checkpoint ``step`` in ``folder``; keep the newest ``keep``."""
    folder = Path(folder)
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    path = folder / f"ckpt-{step:09d}.pt"
    write_atomic(path, MAGIC + hashlib.sha256(data).digest() + data)
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoint files in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if NAME.match(p.name))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load one checkpoint, verifying its checksum; raises CorruptCheckpoint."""
    data = Path(path).read_bytes()
    if len(data) < 40 or data[:8] != MAGIC:
        raise CorruptCheckpoint(f"{path} is not a continual checkpoint (bad header or truncated)")
    digest, payload = data[8:40], data[40:]
    if hashlib.sha256(payload).digest() != digest:
        raise CorruptCheckpoint(f"{path} fails its checksum: truncated or altered")
    try:
        return torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
    except Exception as e:  # a checksum match with an unloadable payload: not ours
        raise CorruptCheckpoint(f"{path} cannot be loaded safely: {e}") from None


def load_latest(folder: str | Path) -> tuple[dict[str, Any] | None, Path | None, list[str]]:
    """The newest valid checkpoint, its path, and messages about corrupt ones skipped."""
    skipped: list[str] = []
    for path in reversed(list_checkpoints(folder)):
        try:
            return load_checkpoint(path), path, skipped
        except CorruptCheckpoint as e:
            skipped.append(str(e))
    return None, None, skipped
