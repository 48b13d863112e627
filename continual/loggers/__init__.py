"""Run loggers chosen by name (``loggers=[wandb,tensorboard]``): views of the run's records.

Every logger is a ``continual.types.Logger``: it gets the same records the Runner writes to
``metrics.jsonl`` (``log``), and ``start(runner)``, ``progress(state)``,
``checkpoint(path, step)``, ``finish(summary)`` and ``abort(error)``, each a no-op unless it
overrides it. A logger that fails (no network, bad key, missing package) warns once and
is switched off; the run and its other loggers go on, and the run folder stays the complete
record.

Each logger's options are its config file in ``conf/loggers/`` (``loggers.wandb.log_checkpoints``);
Hydra composes the chosen ones into ``cfg.loggers`` as ``{name: options}``. Heavy packages
(wandb, tensorboard) are imported only when their logger is asked for.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import os
import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from continual.types import ConfigError, Logger

#: logger name -> "module:Class"; the class takes ``(config, out_dir, names, **options)``.
LOGGERS = {
    "wandb": "continual.loggers.wandb_logger:WandbLogger",
    "tensorboard": "continual.loggers.tensorboard_logger:TensorBoardLogger",
}
#: the package each logger needs (checked before any work unless ``on_failure=continue``)
LOGGER_PACKAGES = {"wandb": "wandb", "tensorboard": "tensorboard"}
#: every logger's own option: ``stop`` (a run that asked for the logger and cannot have it
#: stops at start, with the reason) or ``continue`` (it warns and runs without the logger)
ON_FAILURE = ("stop", "continue")

#: keys of a metrics.jsonl record that are bookkeeping, not scalars to plot
NOT_SCALARS = {"type", "kind", "time", "step", "samples_seen", "tokens_seen"}

#: config keys that do not change what a run computes: left out of the hparams a sweep compares
NOT_SETTINGS = ("device", "threads", "loggers", "log", "checkpoint", "report", "resume", "eval")


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The plottable numbers of one metrics.jsonl record, named ``train/<key>`` for step
    records and ``eval/<key>`` for eval points (``eval/acc``, ``eval/acc_task_0``, ...); the
    main trajectory's task-end rows of an infinite schedule (``task_end_main``, beside the
    annealed copy's ``task_end``) are ``eval_main/<key>``, a line of their own.

    Non-numeric and non-finite values are left out (metrics.jsonl stores them as null).
    """
    if record.get("type") == "eval":
        prefix = "eval_main/" if record.get("kind") == "task_end_main" else "eval/"
    else:
        prefix = "train/"
    out = {}
    for key, value in record.items():
        if key in NOT_SCALARS or isinstance(value, (bool, str)) or value is None:
            continue
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[prefix + key] = float(value)
    return out


def x_value(record: dict[str, Any]) -> tuple[str, int]:
    """The x-axis of a record in the loggers: ``tokens_seen`` for language-model runs (streams
    that count tokens), else ``samples_seen``."""
    key = "tokens_seen" if "tokens_seen" in record else "samples_seen"
    return key, int(record.get(key, 0))


def run_names(config: dict[str, Any], choices: Mapping[str, str] | None = None,
              swept: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What a run is called: stream, strategy and model names and the seed (Hydra's choices
    where given, else read from the resolved config), the experiment preset, the config-group
    choices themselves (``hydra/*`` and ``loggers`` left out) and the sweep's overrides of this job."""
    from continual.models.lm import model_label

    choices = {k: str(v) for k, v in (choices or {}).items()
               if not k.startswith("hydra") and k != "loggers" and v is not None}
    stream_cfg = config.get("stream") or {}
    strategy_cfg = config.get("strategy") or {}
    model_cfg = config.get("model") or {}
    stream = choices.get("stream") or stream_cfg.get("name") or stream_cfg.get("dataset") or "stream"
    target = str(strategy_cfg.get("_target_", "strategy"))
    strategy = choices.get("strategy") or target.rsplit(".", 1)[-1]
    model = model_label(model_cfg, choices.get("model"))  # hf:<name> for model=hf, as summary.json
    return {"stream": str(stream), "strategy": str(strategy), "model": str(model),
            "seed": config.get("seed", 0), "experiment": choices.get("experiment"),
            "choices": choices, "swept": dict(swept or {})}


def run_name(names: dict[str, Any], seed: bool = True) -> str:
    """``<stream>-<strategy>-<seed>``, then the sweep's other overrides of this job
    (``split_mnist-er-0 strategy.lr=0.1``), so the jobs of one sweep never share a name.
    ``seed=False``: the same without the seed (the setting that seeds repeat)."""
    base = f"{names['stream']}-{names['strategy']}" + (f"-{names['seed']}" if seed else "")
    shown = {"stream", "strategy", "seed"}
    extra = " ".join(f"{k}={v}" for k, v in sorted(names.get("swept", {}).items()) if k not in shown)
    return f"{base} {extra}" if extra else base


def experiment_name(names: dict[str, Any]) -> str:
    """The group of a run: its ``+experiment=`` preset, else its setting without the seed
    (``run_name(names, seed=False)``), so a group's runs differ by seed alone."""
    return names.get("experiment") or run_name(names, seed=False)


def swept_overrides(job_overrides: Sequence[str], sweep_dir: str | os.PathLike | None,
                    sweeper_params: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The overrides a sweep varies, with this job's values: ``{"strategy.lr": "0.1"}``.

    job_overrides: the job's own overrides (Hydra's ``hydra.overrides.task``, one value each).
    sweep_dir: the multirun folder (None for a single run: nothing is swept). Hydra's basic
        sweeper writes the sweep's overrides, ranges and lists unexpanded, to its
        ``multirun.yaml``; a key given a sweep there (``a=1,2``, ``range(..)``, ``choice(..)``)
        is swept, and so is every key of ``sweeper_params`` (``hydra.sweeper.params``: Optuna's
        search space, the basic sweeper's params). When neither says, every override counts.
    """
    if sweep_dir is None:
        return {}
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    job = {o.key_or_group: o.get_value_element_as_str() for o in parser.parse_overrides(list(job_overrides))}
    keys = set(sweeper_params or {})
    known = bool(keys)
    swept_keys = _sweep_file_keys(Path(sweep_dir) / "multirun.yaml")
    if swept_keys is not None:
        keys |= swept_keys
        known = True
    return {k: v for k, v in job.items() if (k in keys or not known) and not k.startswith("hydra")}


#: the keys a sweep job folder already names (conf/config.yaml's hydra.sweep.subdir)
NAMED_IN_FOLDER = ("stream", "strategy", "seed")


def sweep_job_suffix(sweep_dir: str, job_overrides: Sequence[str]) -> str:
    """What a sweep job's folder adds to ``<stream>_<strategy>_s<seed>``: the other keys the
    sweep varies, with this job's values (``_schedule=infinite``), so that the folders of jobs
    that differ by them say how; empty when the sweep varies nothing else or its keys are not
    known (no basic sweeper's ``multirun.yaml``). The OmegaConf resolver ``continual_swept``."""
    keys = _sweep_file_keys(Path(str(sweep_dir)) / "multirun.yaml")
    if not keys:
        return ""
    swept = swept_overrides(list(job_overrides), sweep_dir)
    named = "_".join(f"{k}={v}" for k, v in sorted(swept.items()) if k not in NAMED_IN_FOLDER)
    named = re.sub(r"[^A-Za-z0-9_.=,+-]+", "-", named)[:120]  # a safe, short path component
    return f"_{named}" if named else ""


def register_folder_resolver() -> None:
    """Make ``${continual_swept:...}`` (``sweep_job_suffix``) known to OmegaConf (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("continual_swept"):
        OmegaConf.register_new_resolver("continual_swept", sweep_job_suffix)


#: multirun.yaml's swept keys by (path, mtime, size): every job of a sweep in one process
#: (basic launcher) reads the same file, 15-20 ms a parse
_SWEEP_KEYS: dict[tuple[str, int, int], frozenset[str] | None] = {}


def _sweep_file_keys(multirun: Path) -> frozenset[str] | None:
    """The keys ``multirun.yaml`` sweeps (``a=1,2``, ``range(..)``, ``choice(..)``); None when
    there is no such file or it is another launcher's."""
    try:
        info = multirun.stat()
    except OSError:
        return None
    key = (str(multirun.resolve()), info.st_mtime_ns, info.st_size)
    if key not in _SWEEP_KEYS:
        if len(_SWEEP_KEYS) >= 64:  # a long-lived process that ran many sweeps keeps the latest
            _SWEEP_KEYS.clear()
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf

        try:
            sweep = OmegaConf.load(multirun).hydra.overrides.task
            parsed = OverridesParser.create().parse_overrides(list(sweep))
            _SWEEP_KEYS[key] = frozenset(o.key_or_group for o in parsed if o.is_sweep_override())
        except Exception:  # another launcher's file: then every override counts
            _SWEEP_KEYS[key] = None
    return _SWEEP_KEYS[key]


def logger_options(loggers: Sequence[str] | Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``cfg.loggers`` as ``{name: options}``: Hydra's ``{wandb: {...}}``, or a plain list of
    names (each with its defaults)."""
    if not loggers:
        return {}
    if isinstance(loggers, Mapping):
        return {str(k): dict(v or {}) for k, v in loggers.items()}
    if isinstance(loggers, str):
        loggers = [loggers]
    return {str(name): {} for name in loggers}


class GuardedLogger(Logger):
    """Forwards calls to ``inner``; the first exception is a warning and switches it off."""

    def __init__(self, name: str, inner: Logger) -> None:
        self.name, self.inner, self.failed = name, inner, False

    def _call(self, method: str, *args: Any) -> None:
        if self.failed:
            return
        try:
            getattr(self.inner, method)(*args)
        except Exception as e:  # a logger must never stop the run
            self.failed = True
            warnings.warn(f"logger {self.name!r} failed in {method}() and is switched off for this "
                          f"run ({type(e).__name__}: {e}); the run folder still has every record",
                          RuntimeWarning, stacklevel=2)
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

    def checkpoint(self, path: Any, step: int) -> None:
        self._call("checkpoint", path, step)

    def finish(self, summary: dict[str, Any]) -> None:
        self._call("finish", summary)

    def abort(self, error: BaseException | None = None) -> None:
        self._call("abort", error)


def package_installed(name: str) -> bool:
    """Whether ``import name`` can work, without importing it: already imported (or set in
    ``sys.modules``, as tests do; None there means "cannot be imported"), or findable."""
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def make_loggers(
    loggers: Sequence[str] | Mapping[str, Any] | None,
    config: dict[str, Any],
    out_dir: str | os.PathLike,
    choices: Mapping[str, str] | None = None,
    swept: Mapping[str, str] | None = None,
) -> list[GuardedLogger]:
    """Build the loggers of one run.

    loggers: ``cfg.loggers`` resolved: ``{name: options}`` (conf/loggers/<name>.yaml) or a
        list of names.
    config: the run's resolved config (``OmegaConf.to_container(cfg, resolve=True)``).
    out_dir: the run folder; wandb and TensorBoard files go under it.
    choices: Hydra's runtime choices (``stream``, ``strategy``, ``model``, ``experiment`` names).
    swept: the overrides the sweep varies, with this job's values (``swept_overrides``);
        empty for a single run.
    Raises ConfigError for an unknown name or option. Nothing heavy is imported here: each
    logger imports its package at its first call, and a failure there only warns.
    """
    options = logger_options(loggers)
    unknown = sorted(set(options) - set(LOGGERS))
    if unknown:
        raise ConfigError(f"unknown logger(s) {unknown} in loggers=[...]; choose from "
                          f"{sorted(LOGGERS)} (the console view is log.console=true|false)")
    names = run_names(config, choices, swept)
    out = []
    for name, opts in options.items():
        opts = dict(opts)
        on_failure = opts.pop("on_failure", "stop")
        if on_failure not in ON_FAILURE:
            raise ConfigError(f"loggers.{name}.on_failure must be one of {list(ON_FAILURE)}, got {on_failure!r}")
        module, cls = LOGGERS[name].split(":")
        logger_cls = getattr(importlib.import_module(module), cls)
        accepted = set(inspect.signature(logger_cls).parameters) - {"config", "out_dir", "names"}
        bad = sorted(set(opts) - accepted)
        if bad:
            raise ConfigError(f"unknown option(s) {bad} of logger {name!r}; its options: "
                              f"{sorted(accepted | {'on_failure'})} (conf/loggers/{name}.yaml)")
        from continual.config import check_options

        check_options(logger_cls, opts, f"loggers.{name}", provided=("config", "out_dir", "names"))
        package = LOGGER_PACKAGES[name]
        if not package_installed(package):
            if on_failure == "stop":
                raise ConfigError(f"loggers=[{name}] needs the {package} package, which is not installed: "
                                  f"pip install {package}, or set loggers.{name}.on_failure=continue to run "
                                  "without it")
            warnings.warn(f"logger {name!r}: {package} is not installed; the run goes on without it "
                          f"(loggers.{name}.on_failure=continue)", RuntimeWarning, stacklevel=2)
            continue
        inner = logger_cls(config=config, out_dir=str(out_dir), names=names, **opts)
        out.append(GuardedLogger(name, inner))
    return out


def abort_loggers(loggers: Sequence[Logger], error: BaseException | None = None) -> None:
    """Close every logger of a run that failed (wandb marks the run failed); never raises."""
    for lg in loggers:
        try:
            lg.abort(error)
        except Exception:
            pass


def hparams(config: dict[str, Any], names: dict[str, Any]) -> dict[str, Any]:
    """The settings a sweep compares runs by, flat (``strategy.lr``): the config-group choices
    (``choices.strategy``), the swept overrides and every option that shapes training (class
    paths left out: the choices name them), as numbers or strings (booleans, lists and None
    as text)."""
    from continual.records import flatten_keys

    flat = {f"choices.{k}": v for k, v in names.get("choices", {}).items()}
    flat.update(flatten_keys({k: v for k, v in config.items() if k not in NOT_SETTINGS}))
    for key, value in names.get("swept", {}).items():  # the config holds their typed values
        flat.setdefault(key, value)
    return {key: value if isinstance(value, (int, float, str)) and not isinstance(value, bool) else str(value)
            for key, value in flat.items() if not key.endswith("_target_")}
