"""Building and running one experiment from a composed config: seed, device, determinism
and threads (``continual.threads``), then stream, model, strategy, schedule, loggers and the
runner (``run_experiment``).

The command line (continual.cli) calls ``run_experiment`` once per job; tests and benchmarks
call it directly. Heavy imports (torch, strategies, loggers) happen inside the functions, so
importing this module stays cheap.
"""

from __future__ import annotations

import os
import random
import sys
from typing import Any

from continual.run_folder import RunFolder
from continual.threads import choose_threads
from continual.timeline import mark


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: Any, job_num: int | None = None) -> str:
    """The torch device of a run's ``device`` setting: ``cpu`` or ``cuda:N``.

    ``auto``: a GPU when torch sees one, else the CPU. ``cuda:N``: GPU N of those torch sees
    (``CUDA_VISIBLE_DEVICES`` decides which they are). ``cuda`` (and ``auto`` on a GPU machine):
    GPU 0 for a single run; for a job of a multirun (``job_num``, Hydra's job number) that sees
    several GPUs, GPU ``job_num % device_count``, so the jobs of a local sweep spread over the
    GPUs instead of all landing on GPU 0 (docs/configuration.md).
    """
    import re

    import torch

    from continual.types import ConfigError

    name = str(getattr(name, "value", name)).strip().lower()
    if name == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        name = "cuda"
    if name == "cpu":
        return "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N (N the index of a GPU torch sees), "
                          f"got {name!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"device={name} was asked for but torch sees no GPU; use device=auto or device=cpu")
    count = torch.cuda.device_count()
    if match.group(1) is not None:
        index = int(match.group(1))
        if index >= count:
            raise ConfigError(
                f"device={name} but torch sees {count} GPU(s) (indexes 0..{count - 1}, after "
                f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}); "
                f"use one of {', '.join(f'cuda:{i}' for i in range(count))}, or device=cuda"
            )
    else:
        index = int(job_num) % count if job_num is not None and count > 1 else 0
    return f"cuda:{index}"


def use_device(device: str) -> None:
    """Make ``device`` torch's current GPU (a no-op on the CPU), so that everything that uses
    "the current device" (the CUDA generator a checkpoint saves, FAISS, ``.cuda()``) agrees."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.set_device(torch.device(device))


#: cuBLAS needs a fixed workspace for reproducible results (CUDA docs, "Results reproducibility");
#: it must be in the environment before the first cuBLAS call
CUBLAS_WORKSPACE = ":4096:8"


def set_determinism(enabled: bool) -> None:
    """``deterministic=true``: deterministic kernels only (an op without one raises, naming
    itself), cuDNN deterministic with autotuning off, and ``CUBLAS_WORKSPACE_CONFIG`` set (kept
    if the user set it). ``false`` restores torch's defaults, so a job of a sweep run in the same
    process does not inherit an earlier job's setting. Call before any CUDA work."""
    import torch

    from continual.types import ConfigError

    if not isinstance(enabled, bool):
        raise ConfigError(f"deterministic must be true or false, got {enabled!r}")
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def build_model_from_config(cfg: Any, stream: Any):
    """A backbone by ``name`` (see continual.models) or any module by ``_target_``;
    its output size must match the stream's classes."""
    import torch
    from omegaconf import OmegaConf

    from continual.config import check_options, instantiate_checked
    from continual.models import BACKBONES, build_model
    from continual.types import ConfigError

    options = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else dict(cfg)
    if "_target_" in options:
        model = instantiate_checked(options, "model")
        if isinstance(model, tuple):
            raise ConfigError(
                f"model {options['_target_']!r} is a language model but stream {stream.name!r} is a "
                "classification stream; use stream=knowledge or stream=corpora with it, or an image backbone here"
            )
    else:
        name = options.pop("name", None)
        if name not in BACKBONES:
            raise ConfigError(f"unknown model {name!r}; choose one of {sorted(BACKBONES)}")
        channels_last = options.pop("channels_last", None)
        check_options(BACKBONES[name], options, f"model {name}", provided=("input_shape",))
        model = build_model(name, stream.input_shape, stream.n_classes, channels_last=channels_last, **options)
    with torch.no_grad():
        was_training = model.training
        model.eval()
        out = model(stream.dataset.x_train[:1].cpu())
        model.train(was_training)
    if out.ndim != 2 or out.shape[1] != stream.n_classes:
        raise ConfigError(
            f"the model outputs shape {tuple(out.shape)} per input but stream {stream.name!r} has "
            f"{stream.n_classes} classes; its head must output (B, {stream.n_classes})"
        )
    return model


def build_lm_from_config(cfg: Any, stream: Any, seed: int):
    """(model, tokenizer) of a language-model config (``conf/model/tiny_lm.yaml``, ``smollm2.yaml``)."""
    from omegaconf import OmegaConf

    from continual.config import accepted_options, instantiate_checked
    from continual.types import ConfigError

    options = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else dict(cfg)
    if "_target_" not in options:
        raise ConfigError(
            f"stream {stream.name!r} trains a language model, but the model config has no _target_ "
            f"(model {options.get('name')!r} is an image backbone); use model=tiny_lm or model=smollm2"
        )
    params, _ = accepted_options(instantiate_target(options))
    built = instantiate_checked(options, "model", **({"seed": seed} if "seed" in params and "seed" not in options
                                                     else {}))
    if not (isinstance(built, tuple) and len(built) == 2):
        raise ConfigError(
            f"stream {stream.name!r} needs a language model: the model's _target_ must return "
            "(model, tokenizer), as continual.models.lm.tiny_causal_lm does; use model=tiny_lm or model=smollm2"
        )
    return built


def build_schedule_from_config(cfg: Any, stream: Any):
    """The lr schedule of ``cfg`` (a ``conf/schedule/`` group) for ``stream``, or None.

    ``task_steps`` comes from the stream: the steps of each segment when it shows its
    boundaries, one task of the whole stream's length when it hides them (task-free); a
    schedule that restarts at every task then refuses to run.
    """
    from omegaconf import OmegaConf

    from continual.config import instantiate_checked
    from continual.types import ConfigError

    if cfg is None:
        return None
    options = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else dict(cfg)
    visible = stream.boundaries == "visible"
    task_steps = stream.segment_steps() if visible else [stream.n_steps()]
    schedule = instantiate_checked(options, "schedule", task_steps=task_steps)
    if schedule.needs_boundaries and not visible:
        name = type(schedule).__name__
        raise ConfigError(
            f"schedule {name} restarts at every task, but stream {stream.name!r} hides its task "
            "boundaries (task-free), so there is no task to restart at; use schedule=constant, "
            "cosine, wsd_once, infinite or one_cycle (over the whole stream)"
        )
    return schedule


def run_experiment(
    cfg: Any, out_dir: str | None = None, choices: dict[str, str] | None = None, sweep_dir: str | None = None,
    report: bool = True, job_num: int | None = None, swept: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Build stream, model and strategy from ``cfg`` and run them; returns the summary.

    job_num: Hydra's job number in a multirun (it picks the GPU under ``device=cuda``).
    swept: the overrides the sweep varies, with this job's values (the loggers name runs by them)."""
    from omegaconf import OmegaConf

    from continual.config import resume_mode
    from continual.loggers import abort_loggers
    from continual.runner import Runner

    mark("job_start")
    sections, per_run = check_config(cfg)  # every run option, before any work
    resume = resume_mode(cfg.resume)
    folder = RunFolder(out_dir or os.getcwd())
    folder.lock()  # a second run in this folder is refused before any work
    try:
        if folder.is_finished() and resume != "false":
            print(f"continual: {folder.path} holds a finished run (summary.json); nothing to train. "
                  "resume=false starts it over (the results move to previous/)", file=sys.stderr)
            return folder.summary()
        start_over(folder, resume)
        set_determinism(cfg.get("deterministic", False))  # before any CUDA work (cuBLAS reads its env once)
        seed_everything(int(cfg.seed))
        device = resolve_device(cfg.device, job_num)
        use_device(device)
        stream, strategy, schedule = build_parts(cfg, device, sweep_dir is not None)
        choices = choices or {}
        config = OmegaConf.to_container(cfg, resolve=True)
        config["device"] = device
        loggers = run_loggers(cfg, config, str(folder.path), choices, swept)
        runner = Runner(stream, strategy, folder, **sections, seed=int(cfg.seed), device=device,
                        on_nan=cfg.on_nan, amp=cfg.get("amp", False), schedule=schedule, loggers=loggers,
                        config=config, extra_summary=summary_names(cfg, choices, schedule))
        if resume != "false":
            resume_if_possible(runner, resume)
        try:
            mark("run_start")
            summary = runner.run()
            mark("run_end")
        except BaseException as e:
            abort_loggers(loggers, e)  # wandb marks the run failed; never raises
            raise
    finally:
        folder.unlock()
    if report and (per_run == "true" or (per_run == "auto" and sweep_dir is None)):
        from continual.report import write_run_report

        write_run_report(runner.out_dir)  # never raises; warns on failure
    mark("job_end")
    return summary


def check_config(cfg: Any) -> tuple[dict[str, Any], str]:
    """Refuse an unknown key or a bad value of the run's own options before any work; returns the
    Runner's sections (``eval``, ``log``, ``checkpoint`` as ``continual.config`` objects) and
    ``report.per_run``."""
    from omegaconf import OmegaConf

    from continual.config import (
        CheckpointConfig,
        EvalConfig,
        LogConfig,
        check_group_options,
        check_run_options,
        resume_mode,
    )
    from continual.types import ConfigError

    check_top_level(cfg)
    check_group_options(cfg)  # a typo in stream/model/strategy/schedule options, before anything is built
    resume_mode(cfg.resume)
    per_run = str(cfg.report.per_run).lower()  # Hydra turns true/false into booleans
    if per_run not in ("auto", "true", "false"):
        raise ConfigError(f"report.per_run must be auto, true or false, got {cfg.report.per_run!r}")
    sections = {name: schema(**OmegaConf.to_container(cfg[name], resolve=True))
                for name, schema in (("eval", EvalConfig), ("log", LogConfig), ("checkpoint", CheckpointConfig))}
    check_run_options(**sections, seed=cfg.seed, on_nan=cfg.on_nan, amp=cfg.get("amp", False))
    return sections, per_run


def build_parts(cfg: Any, device: str, in_sweep: bool) -> tuple[Any, Any, Any]:
    """The run's stream (on ``device``), strategy (its model built first, and the torch threads
    chosen for it) and lr schedule (or None), from ``cfg``."""
    from omegaconf import OmegaConf

    from continual.config import accepted_options, instantiate_checked
    from continual.runner import check_parts
    from continual.types import ConfigError, strategy_member

    stream = instantiate_checked(cfg.stream, "stream", seed=int(cfg.seed))
    mark("stream_built")
    check_parts(stream, ())  # a continual.types.Stream, before anything reads it
    provided: dict[str, Any] = {}
    if stream.needs_model:  # language models: the stream needs the tokenizer
        model, provided["tokenizer"] = build_lm_from_config(cfg.model, stream, int(cfg.seed))
        model = model.to(device)
        stream.prepare(model, provided["tokenizer"])  # the knowledge stream probes the base model
    else:
        model = build_model_from_config(cfg.model, stream).to(device)
    threads = choose_threads(cfg.threads, sum(p.numel() for p in model.parameters()), in_sweep)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    strategy_cfg = OmegaConf.to_container(cfg.strategy, resolve=True)
    provided["model"] = model
    params, _ = accepted_options(instantiate_target(strategy_cfg))
    if "seed" in params and "seed" not in strategy_cfg:
        provided["seed"] = int(cfg.seed)
    seed_everything(int(cfg.seed))
    strategy = instantiate_checked(strategy_cfg, "strategy", **provided)
    mark("strategy_built")
    schedule = build_schedule_from_config(cfg.get("schedule"), stream)
    if schedule is not None and not schedule.is_identity and not strategy_member(strategy, "takes_gradient_steps"):
        raise ConfigError(
            f"schedule {type(schedule).__name__} drives the learning rate of gradient steps, but strategy "
            f"{type(strategy).__name__} takes none with these options (it only writes and reads its memory); "
            "run it with schedule=constant (the default), or with options that train a model")
    stream.to(device)
    return stream, strategy, schedule


def run_loggers(cfg: Any, config: dict[str, Any], out_dir: str, choices: dict[str, str],
                swept: dict[str, str] | None) -> list[Any]:
    """The console view (``log.console``) and the loggers ``cfg.loggers`` names."""
    from continual.loggers import make_loggers

    loggers: list[Any] = []
    if cfg.log.console:
        from continual.console import ConsoleLogger

        loggers.append(ConsoleLogger())
    return loggers + make_loggers(config.get("loggers"), config, out_dir, choices, swept=swept)


def summary_names(cfg: Any, choices: dict[str, str], schedule: Any) -> dict[str, Any]:
    """What summary.json says the run was: strategy, model and schedule names, threads,
    determinism and amp. The model is its config's name (``tiny_lm``), or ``hf:<name>`` for a
    model loaded by ``name_or_path`` (``continual.models.lm.model_label``)."""
    from continual.models.lm import model_label

    return {
        "strategy": choices.get("strategy", str(cfg.strategy["_target_"]).rsplit(".", 1)[-1]),
        "model": model_label(cfg.get("model"), choices.get("model")),
        "schedule": choices.get("schedule", type(schedule).__name__ if schedule is not None else None),
        "threads": _torch_threads(),
        "deterministic": bool(cfg.get("deterministic", False)),
        "amp": str(cfg.get("amp", False)).lower(),
    }


def start_over(folder: RunFolder, resume: str) -> None:
    """``resume=false``: move an earlier run's results aside (``previous/<time>/``) so that no
    old summary or checkpoint sits beside the new records; any start: remove what a killed
    write left."""
    if resume == "false":
        moved = folder.move_aside()
        if moved is not None:
            print(f"continual: resume=false: the earlier results of {folder.path} moved to {moved}",
                  file=sys.stderr)
    folder.clean_temporaries()


def resume_if_possible(runner: Any, resume: str) -> None:
    """Continue from the folder's newest valid checkpoint (``resume=true`` says so when there
    is none)."""
    if runner.resume():
        print(f"continual: resumed from {runner.last_checkpoint} at step {runner.state.step}", file=sys.stderr)
    elif resume == "true":
        print("continual: resume=true but no valid checkpoint was found; starting from the beginning",
              file=sys.stderr)


def check_top_level(cfg: Any) -> None:
    """Keys added with ``+key=...`` bypass Hydra's struct check: refuse unknown ones."""
    from dataclasses import fields

    from continual.config import CheckpointConfig, EvalConfig, LogConfig, ReportConfig, RunConfig
    from continual.types import ConfigError

    sections = ((cfg, RunConfig), (cfg.eval, EvalConfig), (cfg.log, LogConfig),
                (cfg.checkpoint, CheckpointConfig), (cfg.report, ReportConfig))
    for section, schema in sections:
        valid = {f.name for f in fields(schema)}
        unknown = sorted(set(section.keys()) - valid)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; valid keys here: {sorted(valid)}")


def instantiate_target(cfg: dict[str, Any]):
    from continual.config import locate_target
    from continual.types import ConfigError

    if "_target_" not in cfg:
        raise ConfigError("strategy config has no _target_; choose a strategy from conf/strategy/")
    return locate_target(cfg["_target_"])
