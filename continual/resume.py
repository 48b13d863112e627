"""Resuming a run: what a run's checkpoint holds (``RunState``, the strategy, the fingerprint of
the training options), writing it, and restoring a run folder from the newest valid one.

The file format (checksum, atomic write, the newest K kept) is ``continual.checkpoint``'s; this
module decides what goes into a run's checkpoint and refuses to continue a run under other
training options. The Runner decides when to checkpoint (see ``Runner.save_checkpoint``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from continual import checkpoint as C
from continual.evaluation import EvalRow
from continual.records import flatten_keys
from continual.types import ConfigError, Strategy, strategy_member

#: config keys that shape training: a checkpoint resumes only into a run with the same ones.
#: Everything else (eval.*, log.*, loggers, checkpoint.*, resume, device) may change on resume.
TRAINING_CONFIG_KEYS = ("stream", "strategy", "model", "schedule", "seed", "on_nan")


@dataclass
class RunState:
    """Everything the rest of the run depends on besides the strategy (for checkpoints)."""

    segment: int = 0
    position: int = 0  # schedule position inside the current segment
    step: int = 0
    samples: int = 0
    tokens: int = 0  # training tokens (streams that count them)
    online_correct: float = 0.0
    online_seen: int = 0
    rows: list[EvalRow] = field(default_factory=list)
    train_seconds: float = 0.0
    n_records: int = 0  # lines of metrics.jsonl written
    n_details: int = 0  # lines of answers.jsonl written (streams that report per-item results)
    reports_online: bool | None = None  # does observe() return 'online_correct'?
    skipped_nonfinite: int = 0
    evals_done: int = 0
    eval_seconds: float = 0.0  # evaluation, apart from training (train_seconds: steps and hooks)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunState:
        return cls(**{**d, "rows": [EvalRow(**r) for r in d["rows"]]})


def fingerprint(strategy: Strategy, stream_name: str, config: dict[str, Any],
                amp: torch.dtype | None) -> dict[str, Any]:
    """What shapes training (the strategy's class, the stream, TRAINING_CONFIG_KEYS of the
    config, the amp dtype when on), as stored in every checkpoint and compared on resume."""
    fp = {"strategy_class": f"{type(strategy).__module__}.{type(strategy).__qualname__}",
          "stream_name": stream_name, **{k: config[k] for k in TRAINING_CONFIG_KEYS if k in config}}
    if amp is not None:  # only when on: checkpoints of fp32 runs keep their fingerprint
        fp["amp"] = str(amp).removeprefix("torch.")
    return json.loads(json.dumps(fp, sort_keys=True, default=str))


def save_run_checkpoint(folder: Path, step: int, state: RunState, strategy: Strategy,
                        branch: Strategy | None, run_fingerprint: dict[str, Any], keep: int) -> Path | None:
    """Write everything the rest of the run depends on as checkpoint ``step`` in ``folder``
    (atomic; keeps the newest ``keep``) and return its path; None, with a warning, when the
    strategy has no state to save (such a run writes no checkpoints)."""
    strategy_state = strategy_member(strategy, "state_dict")()
    if not strategy_state:
        # nothing to restore a strategy from: resuming would continue from a fresh model
        name = type(strategy).__name__
        print(f"continual: strategy {name} has no state_dict() (or returns {{}}): this run writes no "
              "checkpoints, and a killed run starts over; implement state_dict()/load_state_dict() "
              "(continual.types.Strategy) to make it resumable", file=sys.stderr)
        return None
    payload = {
        "format": "continual-run", "version": 1,
        "fingerprint": run_fingerprint,
        "state": state.to_dict(),
        "strategy": strategy_state,
        "branch": branch.state_dict() if branch is not None else None,
        "rng": C.rng_state(),
    }
    return C.save_checkpoint(folder, step, payload, keep=keep)


def load_run_checkpoint(folder: Path) -> tuple[dict[str, Any] | None, Path | None, dict[str, Any]]:
    """The newest valid checkpoint in ``folder``, its path, and the summary's resume facts
    (``resumed_from``, ``corrupt_checkpoints_skipped``); (None, None, facts) when there is none.
    Corrupt checkpoints are skipped with a warning."""
    payload, path, skipped = C.load_latest(folder)
    for msg in skipped:
        print(f"continual: skipping corrupt checkpoint: {msg}", file=sys.stderr)
    info = {"resumed_from": str(path) if path else None, "corrupt_checkpoints_skipped": len(skipped)}
    if payload is None and skipped:
        print(f"continual: every checkpoint in {folder} ({len(skipped)}) is corrupt; "
              "starting over from the beginning", file=sys.stderr)
    return payload, path, info


def check_resumable(payload: dict[str, Any], path: Path, run_fingerprint: dict[str, Any], out_dir: str) -> None:
    """Refuse a checkpoint of other training options (``check_fingerprint``) or one without
    strategy state to continue from; raises ConfigError saying what to do instead."""
    check_fingerprint(payload, path, run_fingerprint, out_dir)
    if not payload["strategy"]:
        raise ConfigError(
            f"checkpoint {path} holds no strategy state (its strategy had no state_dict), so the run "
            "cannot continue where it stopped; start over with resume=false or use a new run folder")


def check_fingerprint(payload: dict[str, Any], path: Path, run_fingerprint: dict[str, Any], out_dir: str) -> None:
    """Refuse to continue a run whose training options differ from the checkpoint's."""
    saved = payload.get("fingerprint")
    if saved is None:
        print(f"continual: checkpoint {path} has no fingerprint (written before continual 0.2); "
              "resuming without checking that its options match this run's", file=sys.stderr)
        return
    old, new = flatten_keys(saved), flatten_keys(run_fingerprint)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        shown = "; ".join(f"{k}: {old.get(k)!r} in the checkpoint, {new.get(k)!r} now" for k in changed[:8])
        more = f" (and {len(changed) - 8} more)" if len(changed) > 8 else ""
        raise ConfigError(
            f"the run folder {out_dir} holds checkpoints of a run with other training options: "
            f"{shown}{more}. Continuing would train from the old state under the new options. Use a "
            "new run folder (hydra.run.dir=...), or resume=false to start this folder over")
