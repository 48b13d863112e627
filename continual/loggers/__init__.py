"""Run loggers chosen by name (``loggers=[wandb,tensorboard]``): views of the run's records.

Every logger gets the same records the Runner writes to ``metrics.jsonl`` (``log``),
optionally ``start(runner)`` and ``progress(state)``, and ``finish(summary)``. A logger
that fails (no network, bad key, missing package) warns once and is switched off; the
run and its other loggers go on, and the run folder stays the complete record.

Heavy packages (wandb, tensorboard) are imported only when their logger is asked for.
"""

from __future__ import annotations

import importlib
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from continual.types import ConfigError

#: logger name -> "module:Class"; the class takes ``(config, out_dir, names, sweep_dir)``.
LOGGERS = {
    "wandb": "continual.loggers.wandb_logger:WandbLogger",
    "tensorboard": "continual.loggers.tensorboard_logger:TensorBoardLogger",
}

#: keys of a metrics.jsonl record that are bookkeeping, not scalars to plot
NOT_SCALARS = {"type", "kind", "time", "step", "samples_seen"}


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The plottable numbers of one metrics.jsonl record, named ``train/<key>`` for step
    records and ``eval/<key>`` for eval points (``eval/acc``, ``eval/acc_task_0``, ...).

    Non-numeric and non-finite values are left out (metrics.jsonl stores them as null).
    """
    prefix = "eval/" if record.get("type") == "eval" else "train/"
    out = {}
    for key, value in record.items():
        if key in NOT_SCALARS or isinstance(value, (bool, str)) or value is None:
            continue
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[prefix + key] = float(value)
    return out


def run_names(config: dict[str, Any], names: dict[str, str] | None) -> dict[str, Any]:
    """Stream, strategy and model names and the seed of a run, from the Hydra choices
    (``names``) where given, else from the resolved config."""
    names = names or {}
    stream_cfg = config.get("stream") or {}
    strategy_cfg = config.get("strategy") or {}
    model_cfg = config.get("model") or {}
    stream = names.get("stream") or stream_cfg.get("name") or stream_cfg.get("dataset") or "stream"
    target = str(strategy_cfg.get("_target_", "strategy"))
    strategy = names.get("strategy") or target.rsplit(".", 1)[-1]
    model = names.get("model") or model_cfg.get("name") or ""
    return {"stream": str(stream), "strategy": str(strategy), "model": str(model),
            "seed": config.get("seed", 0)}


class GuardedLogger:
    """Forwards calls to ``inner``; the first exception is a warning and switches it off."""

    def __init__(self, name: str, inner: Any) -> None:
        self.name, self.inner, self.failed = name, inner, False

    def _call(self, method: str, *args: Any) -> None:
        if self.failed or not hasattr(self.inner, method):
            return
        try:
            getattr(self.inner, method)(*args)
        except Exception as e:  # a logger must never stop the run
            self.failed = True
            warnings.warn(f"logger {self.name!r} failed in {method}() and is switched off for this "
                          f"run ({type(e).__name__}: {e}); the run folder still has every record",
                          RuntimeWarning, stacklevel=2)
            if hasattr(self.inner, "abort"):
                try:
                    self.inner.abort(e)
                except Exception:
                    pass

    def start(self, runner: Any) -> None:
        self._call("start", runner)

    def log(self, record: dict[str, Any]) -> None:
        self._call("log", record)

    def progress(self, state: Any) -> None:
        self._call("progress", state)

    def finish(self, summary: dict[str, Any]) -> None:
        self._call("finish", summary)

    def abort(self, error: BaseException | None = None) -> None:
        self._call("abort", error)


def make_loggers(
    names: Sequence[str],
    config: dict[str, Any],
    out_dir: str | os.PathLike,
    choices: dict[str, str] | None = None,
    sweep_dir: str | os.PathLike | None = None,
) -> list[GuardedLogger]:
    """Build the loggers named in ``names`` (``cfg.loggers``) for one run.

    config: the run's resolved config (``OmegaConf.to_container(cfg, resolve=True)``).
    out_dir: the run folder; wandb and TensorBoard files go under it.
    choices: Hydra's runtime choices (``stream``, ``strategy``, ``model`` names).
    sweep_dir: the multirun folder when the run is one job of a sweep (the wandb group),
        None for a single run.
    Raises ConfigError for an unknown name. Nothing heavy is imported here: each logger
    imports its package at its first call, and a failure there only warns.
    """
    unknown = sorted(set(names) - set(LOGGERS))
    if unknown:
        raise ConfigError(f"unknown logger(s) {unknown} in loggers=[...]; choose from "
                          f"{sorted(LOGGERS)} (the console view is log.console=true|false)")
    out = []
    for name in dict.fromkeys(names):  # each once, in the order given
        module, cls = LOGGERS[name].split(":")
        logger_cls = getattr(importlib.import_module(module), cls)
        inner = logger_cls(config=config, out_dir=str(out_dir), names=run_names(config, choices),
                           sweep_dir=None if sweep_dir is None else str(sweep_dir))
        out.append(GuardedLogger(name, inner))
    return out


def abort_loggers(loggers: Sequence[Any], error: BaseException | None = None) -> None:
    """Close every logger of a run that failed (wandb marks the run failed); never raises."""
    for lg in loggers:
        if hasattr(lg, "abort"):
            try:
                lg.abort(error)
            except Exception:
                pass


def sweep_group(sweep_dir: str | os.PathLike | None) -> str | None:
    """A readable, stable group name for a multirun folder: its last two path parts
    (``multirun/2026-11-27/21-06-12`` -> ``2026-11-27/21-06-12``), at most 128 characters."""
    if not sweep_dir:
        return None
    parts = Path(os.path.abspath(sweep_dir)).parts[1:]
    return "/".join(parts[-2:])[-128:] or None
