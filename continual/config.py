"""Structured run configuration and checked instantiation of config groups.

Hydra checks the top level (unknown keys, wrong types) against ``RunConfig``;
``instantiate_checked`` checks a group's options (stream, strategy, model) against
the signature of what it builds, so a typo fails at start with the valid choices.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass, field
from typing import Any

from continual.errors import ConfigError


@dataclass
class EvalConfig:
    every: int = 0  # also evaluate every this many steps (0: task ends only)
    max_per_task: int | None = None  # subsample each task's test set (a fixed subset)
    batch_size: int = 1024
    stability_window: int | None = None  # samples after a boundary for stability_gap
    switch_tolerance: int | None = None  # samples within which a detected switch counts
    # periodic eval points also score tasks not started yet (default: no, NaN in scores.csv; the
    # init and task-end rows always score every task, which is all that fwt needs)
    unseen: bool = False


@dataclass
class LogConfig:
    every: int = 10  # steps per metrics.jsonl record
    console: bool = True  # rich progress bar and final table


@dataclass
class ReportConfig:
    # report.md/.html and PNGs in each run folder: auto = for a single run, not for the jobs of a
    # sweep (the sweep's report is written once, at its end, into the sweep folder)
    per_run: Any = "auto"  # auto | true | false
    sweep: bool = True  # the sweep's report at the end of a multirun


@dataclass
class CheckpointConfig:
    enabled: bool = True
    every: int = 0  # also checkpoint every this many steps (0: at task ends only)
    keep: int = 2  # newest checkpoints kept
    # task-end checkpoints are skipped while the newest one (or the run's start) is younger than
    # this: a short run does not pay for them, a long one loses at most this much work (0: every task end)
    min_interval_s: float = 30.0


RESUME_CHOICES = ("auto", "true", "false")
AMP_CHOICES = ("false", "bf16")
ON_NAN_CHOICES = ("stop", "skip")


def amp_mode(value: Any) -> str:
    """``amp`` as written: ``false`` (fp32) or ``bf16`` (``continual.runner.amp_dtype`` maps it).

    fp16 is refused: it needs a gradient scaler the strategies do not carry, and bf16 has
    fp32's range (no scaler), which is what OnPro's official code gets from its GradScaler.
    """
    mode = str(value).lower() if isinstance(value, (bool, str)) or value is None else None
    if mode in ("false", "none", "off"):
        return "false"
    if mode == "bf16":
        return mode
    raise ConfigError(f"amp must be one of {list(AMP_CHOICES)}, got {value!r}"
                      + ("; fp16 needs a gradient scaler, use bf16" if mode == "fp16" else ""))


def check_run_options(eval: EvalConfig, log: LogConfig, checkpoint: CheckpointConfig, seed: int = 0,
                      on_nan: str = "stop", amp: Any = False) -> None:
    """Refuse run options that would fail deep inside the run or be silently reinterpreted: the
    one check of the ``eval``, ``log`` and ``checkpoint`` sections and the run's seed, on_nan and
    amp, made by the Runner and, before any work, by ``continual.experiment``."""
    rules = (  # (value, allowed, what is expected)
        (eval.every, lambda v: v >= 0, "eval.every must be >= 0 (0: task ends only)"),
        (eval.max_per_task, lambda v: v is None or v >= 1,
         "eval.max_per_task must be >= 1 test samples per task, or null for all"),
        (eval.batch_size, lambda v: v >= 1, "eval.batch_size must be >= 1"),
        (log.every, lambda v: v >= 1, "log.every must be >= 1 step per metrics.jsonl record"),
        (seed, lambda v: 0 <= v < 2**32, "seed must be in 0..4294967295 (numpy's range)"),
        (checkpoint.every, lambda v: v >= 0, "checkpoint.every must be >= 0 (0: task ends only)"),
        (checkpoint.keep, lambda v: v >= 1, "checkpoint.keep must be >= 1 (the newest checkpoints kept)"),
    )
    for value, ok, expected in rules:
        if isinstance(value, bool) or not (value is None or isinstance(value, int)) or not ok(value):
            raise ConfigError(f"{expected}; got {value!r}")
    if on_nan not in ON_NAN_CHOICES:
        raise ConfigError(f"on_nan must be 'stop' or 'skip', got {on_nan!r}")
    if checkpoint.every and checkpoint.every % log.every:
        raise ConfigError(
            f"checkpoint.every={checkpoint.every} must be a multiple of log.every={log.every} "
            "so that a checkpoint never splits a logging window"
        )
    if checkpoint.min_interval_s < 0:
        raise ConfigError(f"checkpoint.min_interval_s must be >= 0, got {checkpoint.min_interval_s}")
    amp_mode(amp)


def resume_mode(value: Any) -> str:
    """``resume`` as written: ``auto``, ``true`` or ``false`` (Hydra turns the last two into
    booleans before any schema sees them, so the field is untyped and checked here)."""
    mode = str(value).lower() if isinstance(value, (bool, str)) else None
    if mode not in RESUME_CHOICES:
        raise ConfigError(f"resume must be one of {list(RESUME_CHOICES)}, got {value!r}")
    return mode


@dataclass
class RunConfig:
    stream: Any = None
    strategy: Any = None
    model: Any = None
    schedule: Any = None  # the lr schedule of every gradient strategy (conf/schedule/; default constant)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N (see continual.experiment.resolve_device)
    deterministic: bool = False  # deterministic kernels (see continual.experiment.set_determinism)
    amp: Any = False  # false | bf16: observe() under torch.autocast (see continual.runner.amp_dtype)
    threads: Any = "auto"  # torch threads: auto (see continual.threads.choose_threads) or a number >= 1
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    loggers: Any = field(default_factory=dict)  # {name: options}: the chosen conf/loggers/ files
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    resume: Any = "auto"  # auto | true | false (see resume_mode)
    on_nan: str = "stop"  # stop | skip


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="run_schema", node=RunConfig)


def locate_target(target: str) -> Any:
    from hydra.utils import get_object

    try:
        return get_object(target)
    except Exception as e:  # hydra wraps import errors in several types
        raise ConfigError(f"cannot import _target_ {target!r}: {e}") from None


def accepted_options(fn: Any) -> tuple[dict[str, inspect.Parameter], dict[str, Any]]:
    """Keyword options ``fn`` accepts, following ``**kwargs`` into what it forwards to
    (a class's base ``__init__``, or ``fn.forwards_to``), with their type hints."""
    params: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    chain = list(inspect.getmro(fn)) if inspect.isclass(fn) else [fn]
    while chain:
        f = chain.pop(0)
        init = f.__init__ if inspect.isclass(f) else f
        if init is object.__init__:
            continue
        try:
            sig = inspect.signature(init)
        except (TypeError, ValueError):
            continue
        try:
            hints = {**typing.get_type_hints(init), **hints}
        except Exception:
            pass
        var_kw = False
        for name, p in sig.parameters.items():
            if p.kind is p.VAR_KEYWORD:
                var_kw = True
            elif p.kind is not p.VAR_POSITIONAL and name != "self":
                params.setdefault(name, p)
        if not var_kw:
            break
        if hasattr(f, "forwards_to"):
            chain.insert(0, f.forwards_to)
    return params, hints


def _type_ok(value: Any, hint: Any) -> bool:
    if value is None:
        return hint is Any or type(None) in typing.get_args(hint) or hint is type(None)
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, _UnionType) else (hint,)
    for h in options:
        if h is Any:
            return True
        if h is type(None):  # a value that is not None does not match it (None returned above)
            continue
        if h is bool:
            if isinstance(value, bool):
                return True
        elif h is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return True
        elif h is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return True
        elif h is str:
            if isinstance(value, str):
                return True
        else:
            return True  # lists, tensors, datasets, callables: not checked here
    return False


try:
    from types import UnionType as _UnionType
except ImportError:  # pragma: no cover
    _UnionType = typing.Union


def check_options(fn: Any, options: dict[str, Any], group: str, provided: tuple[str, ...] = ()) -> None:
    """Raise ConfigError naming any unknown option or wrongly typed value."""
    params, hints = accepted_options(fn)
    name = getattr(fn, "__qualname__", str(fn))
    valid = sorted(k for k in params if k not in provided)
    for key, value in options.items():
        if key not in params:
            raise ConfigError(
                f"{group} ({name}) has no option {key!r}; valid options: {', '.join(valid)}"
            )
        hint = hints.get(key)
        if hint is not None and not _type_ok(value, hint):
            raise ConfigError(
                f"{group}.{key}={value!r} has the wrong type for {name}: expected {hint}"
            )


def instantiate_checked(cfg: Any, group: str, **provided: Any) -> Any:
    """``hydra.utils.instantiate`` after checking the options against the target."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    try:
        options = (OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
                   if not isinstance(cfg, dict) else dict(cfg))
    except MissingMandatoryValue as e:
        key = str(getattr(e, "full_key", "") or "").rsplit(".", 1)[-1] or "?"
        raise ConfigError(f"{group}.{key} has no default and must be given: add {group}.{key}=... "
                          f"(see its config file's comment)") from None
    target = options.pop("_target_", None)
    if target is None:
        raise ConfigError(f"{group} config has no _target_; choose a {group} from conf/{group}/")
    fn = locate_target(target)
    check_options(fn, options, group, tuple(provided))
    try:
        return instantiate({"_target_": target, **options}, **provided, _convert_="all")
    except Exception as e:  # hydra wraps errors raised by the target: surface ours as they are
        cause = e
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        value_error = e
        while value_error is not None and not isinstance(value_error, ValueError):
            value_error = value_error.__cause__
        if value_error is not None:  # a library refusing a value (torch: "Invalid momentum value: -1")
            shown = ", ".join(f"{k}={v!r}" for k, v in options.items())
            raise ConfigError(f"{group} {target.rsplit('.', 1)[-1]} refused its options ({shown}): "
                              f"{value_error}") from None
        raise


#: what the run provides each group's target besides its config options (not the user's to give)
RUNTIME_ARGS = {"stream": ("seed",), "model": ("seed",), "strategy": ("model", "tokenizer", "seed"),
                "schedule": ("task_steps",)}


def check_group_options(cfg: Any) -> None:
    """Every option of the stream, model, strategy and schedule groups against the signature of
    what it builds (``check_options``): the check ``instantiate_checked`` makes, made before any
    work (before the stream is built), and by ``--cfg job``."""
    from omegaconf import OmegaConf

    for group, provided in RUNTIME_ARGS.items():
        node = cfg.get(group) if hasattr(cfg, "get") else None
        if node is None:
            continue
        options = dict(node) if isinstance(node, dict) else OmegaConf.to_container(node, resolve=True)
        target = options.pop("_target_", None)
        if target is not None:
            check_options(locate_target(target), options, group, provided)
        elif group == "model":  # a backbone by name (continual.models.BACKBONES)
            from continual.models import BACKBONES

            name = options.pop("name", None)
            options.pop("channels_last", None)
            if name in BACKBONES:
                check_options(BACKBONES[name], options, f"model {name}", provided=("input_shape",))

