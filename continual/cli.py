"""The ``continual`` command: a Hydra app that runs one stream x strategy x seed
(or a sweep with ``-m``), plus the ``list`` and ``report`` subcommands.

Heavy imports (torch, strategies, avalanche, wandb) happen inside the job, so
``continual --help`` answers quickly.
"""

from __future__ import annotations

import os
import random
import sys
from typing import Any

from continual.config import register_configs


def mark(phase: str) -> None:
    """Append ``<phase> <unix time>`` to the file named by ``$CONTINUAL_TIMELINE`` (unset: nothing).

    benchmarks/first_result.py reads these marks to split a run's wall time into phases."""
    path = os.environ.get("CONTINUAL_TIMELINE")
    if path:
        import time

        with open(path, "a") as f:
            f.write(f"{phase} {time.time():.6f}\n")


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


#: below this many parameters a model trains as fast on one thread as on two (FINDINGS: the
#: default MLP, 0.27M), and a second thread only adds contention
SMALL_MODEL_PARAMS = 1_000_000


def choose_threads(setting: Any, n_params: int, in_sweep: bool) -> int | None:
    """The torch thread count of a run (None: leave torch's, as ``OMP_NUM_THREADS`` asked).

    ``threads=N`` uses N. ``auto``: what the user's ``OMP_NUM_THREADS`` says when it is set;
    else one thread for a job of a sweep (jobs run side by side) and for a small model; else
    the cores that are idle now (cores minus the 1-minute load average, at least 1). Measured
    on 2 cores (benchmarks/RESULTS.md): with other processes running, a second thread makes a
    step 8-90x slower (ResNet-18 on 32x32 inputs: 0.38 s vs 3.1-3.7 s; the MLP: 0.7 ms vs 64 ms).
    """
    from continual.types import ConfigError

    if setting != "auto":
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
            raise ConfigError(f"threads must be auto or a number >= 1, got {setting!r}")
        return int(setting)
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    if in_sweep or n_params < SMALL_MODEL_PARAMS:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, round(cores - os.getloadavg()[0])))


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

    from continual.config import accepted_options, instantiate_checked, resume_mode
    from continual.runner import Runner

    mark("job_start")
    check_top_level(cfg)
    resume_mode(cfg.resume)  # a typo fails before any work
    per_run = str(cfg.report.per_run).lower()  # Hydra turns true/false into booleans
    if per_run not in ("auto", "true", "false"):
        from continual.types import ConfigError

        raise ConfigError(f"report.per_run must be auto, true or false, got {cfg.report.per_run!r}")
    from continual.runner import check_run_options

    check_run_options(eval_every=cfg.eval.every, eval_max_per_task=cfg.eval.max_per_task,
                      eval_batch_size=cfg.eval.batch_size, log_every=cfg.log.every, seed=cfg.seed,
                      checkpoint_every=cfg.checkpoint.every, checkpoint_keep=cfg.checkpoint.keep)
    set_determinism(cfg.get("deterministic", False))  # before any CUDA work (cuBLAS reads its env once)
    seed_everything(int(cfg.seed))
    device = resolve_device(cfg.device, job_num)
    use_device(device)
    stream = instantiate_checked(cfg.stream, "stream", seed=int(cfg.seed))
    mark("stream_built")
    provided: dict[str, Any] = {}
    if getattr(stream, "needs_model", False):  # language models: the stream needs the tokenizer
        model, provided["tokenizer"] = build_lm_from_config(cfg.model, stream, int(cfg.seed))
        model = model.to(device)
        stream.prepare(model, provided["tokenizer"])  # the knowledge stream probes the base model
    else:
        model = build_model_from_config(cfg.model, stream).to(device)
    threads = choose_threads(cfg.threads, sum(p.numel() for p in model.parameters()), sweep_dir is not None)
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
    stream.to(device)
    loggers = []
    if cfg.log.console:
        from continual.console import ConsoleLogger

        loggers.append(ConsoleLogger())
    choices = choices or {}
    config = OmegaConf.to_container(cfg, resolve=True)
    config["device"] = device
    from continual.loggers import abort_loggers, make_loggers

    loggers += make_loggers(config.get("loggers"), config, out_dir or os.getcwd(), choices, swept=swept)
    runner = Runner(
        stream, strategy, out_dir=out_dir or os.getcwd(),
        eval_every=cfg.eval.every, eval_max_per_task=cfg.eval.max_per_task,
        eval_batch_size=cfg.eval.batch_size, log_every=cfg.log.every,
        stability_window=cfg.eval.stability_window, switch_tolerance=cfg.eval.switch_tolerance,
        loggers=loggers, config=config, seed=int(cfg.seed), device=device,
        extra_summary={
            "strategy": choices.get("strategy", strategy_cfg["_target_"].rsplit(".", 1)[-1]),
            "model": choices.get("model", ""),
            "schedule": choices.get("schedule", type(schedule).__name__ if schedule is not None else None),
            "threads": _torch_threads(),
            "deterministic": bool(cfg.get("deterministic", False)),
            "amp": str(cfg.get("amp", False)).lower(),
        },
        checkpoint_every=cfg.checkpoint.every, checkpoint_keep=cfg.checkpoint.keep,
        checkpoints=cfg.checkpoint.enabled, checkpoint_min_interval_s=cfg.checkpoint.min_interval_s,
        on_nan=cfg.on_nan, eval_unseen=cfg.eval.unseen, schedule=schedule,
        amp=cfg.get("amp", False),
    )
    resume = resume_mode(cfg.resume)
    if resume == "false":
        from continual.checkpoint import list_checkpoints

        for old in list_checkpoints(runner.checkpoint_dir or "/nonexistent"):
            old.unlink()
    elif runner.resume():
        print(f"continual: resumed from {runner.last_checkpoint} at step {runner.state.step}", file=sys.stderr)
    elif resume == "true":
        print("continual: resume=true but no valid checkpoint was found; starting from the beginning",
              file=sys.stderr)
    try:
        mark("run_start")
        summary = runner.run()
        mark("run_end")
    except BaseException as e:
        abort_loggers(loggers, e)  # wandb marks the run failed; never raises
        raise
    if report and (per_run == "true" or (per_run == "auto" and sweep_dir is None)):
        from continual.report import write_run_report

        write_run_report(runner.out_dir)  # never raises; warns on failure
    mark("job_end")
    return summary


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
    from continual.config import _locate
    from continual.types import ConfigError

    if "_target_" not in cfg:
        raise ConfigError("strategy config has no _target_; choose a strategy from conf/strategy/")
    return _locate(cfg["_target_"])


def _write_error(out_dir: str, error: BaseException) -> None:
    import traceback
    from pathlib import Path

    from continual.records import write_atomic

    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    write_atomic(Path(out_dir) / "error.txt", f"{type(error).__name__}: {error}\n\n{text}".encode())


#: job folders of the current multirun that failed (filled by FailedJobsCallback in the
#: launching process, whichever launcher ran the jobs)
FAILED_JOBS: list[str] = []


class FailedJobsCallback:
    """Hydra callback: after a multirun, find the jobs that wrote ``error.txt`` during it, so
    the command exits non-zero and says which (the other jobs of the sweep still ran)."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        import time

        self.started = time.time()

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from pathlib import Path

        sweep = Path(config.hydra.sweep.dir)
        started = getattr(self, "started", 0.0)
        FAILED_JOBS.extend(str(e.parent) for e in sorted(sweep.rglob("error.txt"))
                           if e.stat().st_mtime >= started)
        if config.get("report", {}).get("sweep", True) and sweep.is_dir():
            from continual.report import write_report
            from continual.types import ConfigError

            try:  # one report for the whole sweep (the jobs write none by default)
                write_report(sweep)
                print(f"continual: sweep report: {sweep / 'report.md'}", file=sys.stderr)
            except ConfigError:
                pass  # no finished run to report on

    # the rest of Hydra's callback interface: nothing to do
    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        pass

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        pass

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        pass

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        pass


#: sweep configs composed to check a batch, kept for the launcher to use once (at most this many)
SWEEP_CONFIGS_KEPT = 256


def compose_each_job_once() -> None:
    """Hydra composes every job's config twice in a multirun: the sweeper composes the whole
    batch to check it (``Sweeper.validate_batch_is_legal``) and throws the configs away, then
    the launcher composes each job again. Keep what the check composed and hand it to the
    launcher's call for the same job, once (about 0.1 s a job on 2 cores: 0.9 s of the README's
    9-job sweep; issue 18). Same master config and overrides, so the same config; a job the
    check did not compose, or beyond ``SWEEP_CONFIGS_KEPT``, is composed as before. Hydra
    1.3's ``ConfigLoaderImpl.load_sweep_config``; another Hydra leaves this undone."""
    try:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
    except ImportError:
        return
    compose = getattr(ConfigLoaderImpl, "load_sweep_config", None)
    if compose is None or getattr(compose, "composes_once", False):
        return
    kept: dict[tuple[int, tuple[str, ...]], Any] = {}

    def load_sweep_config(self: Any, master_config: Any, sweep_overrides: list[str]) -> Any:
        key = (id(master_config), tuple(sweep_overrides))
        if key in kept:
            return kept.pop(key)
        config = compose(self, master_config, sweep_overrides)
        if _checking_a_batch() and len(kept) < SWEEP_CONFIGS_KEPT:
            kept[key] = config
        return config

    load_sweep_config.composes_once = True  # type: ignore[attr-defined]
    ConfigLoaderImpl.load_sweep_config = load_sweep_config  # type: ignore[method-assign]


def _checking_a_batch() -> bool:
    """Whether the caller is a sweeper's batch check (its configs are otherwise thrown away)."""
    frame = sys._getframe(2)
    return frame is not None and frame.f_code.co_name == "validate_batch_is_legal"


def _hydra_main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    register_configs()
    compose_each_job_once()

    @hydra.main(version_base="1.3", config_path="pkg://continual.conf", config_name="config")
    def job(cfg) -> float:
        mark("job_entry")
        from hydra.types import RunMode

        from continual.runner import RunStopped
        from continual.types import ConfigError

        hc = HydraConfig.get()
        out_dir = hc.runtime.output_dir
        try:
            from continual.loggers import swept_overrides

            sweep_dir = hc.sweep.dir if hc.mode == RunMode.MULTIRUN else None
            swept = swept_overrides(hc.overrides.task, sweep_dir, hc.sweeper.get("params"))
            summary = run_experiment(cfg, out_dir=out_dir, choices=dict(hc.runtime.choices), sweep_dir=sweep_dir,
                                     job_num=hc.job.num if sweep_dir is not None else None, swept=swept)
        except (ConfigError, RunStopped, Exception) as e:
            _write_error(out_dir, e)
            kind = "configuration error" if isinstance(e, ConfigError) else "run failed"
            print(f"continual: {kind}: {e}\n(recorded in {out_dir}/error.txt)", file=sys.stderr)
            if hc.mode == RunMode.MULTIRUN:
                return float("nan")  # the other jobs of the sweep go on
            if isinstance(e, (ConfigError, RunStopped)):
                raise SystemExit(2) from None
            raise
        return float(summary[summary.get("objective", "score")])  # val_acc when the stream holds one out

    job()


GROUPS_WITH_OPTIONS = ("stream", "strategy", "model", "schedule")


def unknown_group_options(args: list[str]) -> list[str]:
    """Messages for ``group.key=value`` overrides (no ``+``) whose key the chosen config file
    does not have: Hydra would refuse them with "not in struct"; we say which options exist.

    The choice is the one on the command line or the default of conf/config.yaml; with an
    ``+experiment=`` (which may change choices) nothing is checked here and Hydra decides.
    """
    import re

    from continual.registry import _read_config, config_file

    if any(a.split("=", 1)[0].lstrip("+") == "experiment" for a in args) or "-m" in args or "--multirun" in args:
        return []
    chosen = dict(a.split("=", 1) for a in args if "=" in a and a.split("=", 1)[0] in GROUPS_WITH_OPTIONS)
    messages = []
    for a in args:
        m = re.match(r"^(stream|strategy|model|schedule)\.([A-Za-z_][\w]*)=", a)
        if not m:
            continue
        group, key = m.groups()
        if key.startswith("_"):  # _target_, _partial_: Hydra's own keys
            continue
        name = chosen.get(group) or _default_choice(group)
        path = config_file(group, name) if name else None
        if path is None:
            continue
        import yaml

        keys = [k for k in (yaml.safe_load(path.read_text()) or {}) if k != "_target_"]
        if key in keys:
            continue
        target, _ = _read_config(path)
        extra = ""
        if target:
            try:
                from continual.config import _locate, accepted_options

                params, _ = accepted_options(_locate(target))
                more = sorted(set(params) - set(keys) - {"model", "tokenizer", "seed", "task_steps"})
                if key in more:
                    continue  # the class takes it: Hydra needs the +, say so below
                extra = f"; {target} also takes {', '.join(more)} (add them with +{group}.<name>=...)" if more else ""
            except Exception:
                pass
        messages.append(f"{group}.{key} is not an option of {group} {name!r} ({path.name}); its options: "
                        f"{', '.join(keys) or '(none)'}{extra}")
    return messages


def _default_choice(group: str) -> str | None:
    import yaml

    from continual.registry import _module_path

    conf = _module_path("continual.conf")
    data = yaml.safe_load((conf / "config.yaml").read_text()) if conf else {}
    for entry in data.get("defaults", []):
        if isinstance(entry, dict) and group in entry:
            return str(entry[group])
    return None


def main() -> None:
    """Entry point of the ``continual`` console script."""
    mark("main")
    args = sys.argv[1:]
    problems = unknown_group_options(args) if args and args[0] not in ("list", "report") else []
    if problems:
        print("continual: configuration error: " + "\n".join(problems), file=sys.stderr)
        raise SystemExit(2)
    if args and args[0] == "list":
        from continual.registry import print_list

        print_list()
        return
    if args and args[0] == "report":
        from continual.report import main as report_main

        report_main(args[1:])
        return
    if any(a.endswith("hydra/launcher=ray_local") for a in args):
        # Ray 2.x swaps a loopback node address for the machine's own unless this is set, and
        # reads it at import: the local cluster then listens on 127.0.0.1 only (docs/scaling.md)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    _hydra_main()
    mark("main_end")
    if FAILED_JOBS:
        listing = "\n  ".join(FAILED_JOBS)
        print(f"continual: {len(FAILED_JOBS)} job(s) of the sweep failed (each folder's error.txt says why):\n"
              f"  {listing}", file=sys.stderr)
        raise SystemExit(1)


def entry() -> None:
    """The ``continual`` console script and ``python -m continual``: ``main()``, then leave
    without the interpreter's teardown when nothing is left to finish.

    Finalising torch's modules at exit costs 1.4-2.4 s on a 2-core machine (issue 18;
    benchmarks/RESULTS.md), longer than the default run trains. Everything a run writes is
    flushed or closed as it goes (records, summary, loggers' ``finish``), so after ``main``
    returns the exit handlers run (``atexit``: logging, joblib/loky, wandb), the standard streams
    are flushed and the process ends with ``os._exit``. It exits the normal way (teardown
    included) on an error, while another non-daemon thread runs (the interpreter would wait for
    it), or with ``CONTINUAL_FULL_EXIT=1`` (for tools that read the interpreter's exit).
    ``main()`` itself returns as before, for callers in the same process."""
    main()
    _exit_without_teardown()


def _exit_without_teardown() -> None:
    import atexit
    import threading

    if os.environ.get("CONTINUAL_FULL_EXIT", "") not in ("", "0"):
        return
    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and t.is_alive() and not t.daemon]
    if others:
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more to say on it
            pass
    os._exit(0)


if __name__ == "__main__":
    entry()
