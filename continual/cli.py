"""The ``continual`` command: a Hydra app that runs one stream x strategy x seed
(or a sweep with ``-m``), plus the ``list`` and ``report`` subcommands.

Each job runs ``continual.experiment.run_experiment``; that module, like the heavy imports
(torch, strategies, avalanche, wandb), is imported inside the job, so ``continual --help``
answers quickly.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from continual.config import register_configs
from continual.timeline import mark

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
    # (id of the master config, overrides) -> (that master config, the job's config); holding
    # the master config keeps its id from being reused by another while the entry waits
    kept: dict[tuple[int, tuple[str, ...]], tuple[Any, Any]] = {}

    def load_sweep_config(self: Any, master_config: Any, sweep_overrides: list[str]) -> Any:
        key = (id(master_config), tuple(sweep_overrides))
        if key in kept:
            return kept.pop(key)[1]
        config = compose(self, master_config, sweep_overrides)
        if _checking_a_batch() and len(kept) < SWEEP_CONFIGS_KEPT:
            kept[key] = (master_config, config)
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
    from continual.loggers import register_folder_resolver

    register_folder_resolver()  # sweep job folders name the keys the sweep varies

    @hydra.main(version_base="1.3", config_path="pkg://continual.conf", config_name="config")
    def job(cfg) -> float:
        mark("job_entry")
        from hydra.types import RunMode

        from continual.experiment import run_experiment
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
            from continual.run_folder import ERROR_FILE, RunFolder

            folder = RunFolder(out_dir)
            kind = "configuration error" if isinstance(e, ConfigError) else "run failed"
            if isinstance(e, ConfigError) and hc.mode != RunMode.MULTIRUN and folder.holds_only_hydra_files():
                folder.remove()  # a refused config leaves no run folder behind (nothing ran)
                print(f"continual: {kind}: {e}", file=sys.stderr)
            else:  # a sweep lists its failed jobs by their error.txt
                folder.record_error(e)
                print(f"continual: {kind}: {e}\n(recorded in {out_dir}/{ERROR_FILE})", file=sys.stderr)
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

    from continual.registry import config_file, read_config

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
        target, _ = read_config(path)
        extra = ""
        if target:
            try:
                from continual.config import accepted_options, locate_target

                params, _ = accepted_options(locate_target(target))
                more = sorted(set(params) - set(keys) - {"model", "tokenizer", "seed", "task_steps"})
                if key in more:
                    continue  # the class takes it: Hydra needs the +, say so below
                extra = f"; {target} also takes {', '.join(more)} (add them with +{group}.<name>=...)" if more else ""
            except Exception:
                pass
        messages.append(f"{group}.{key} is not an option of {group} {name!r} ({path.name}); its options: "
                        f"{', '.join(keys) or '(none)'}{extra}")
    return messages


CHOICE_GROUPS = ("stream", "strategy", "model", "schedule", "experiment")


def unknown_choices(args: list[str]) -> list[str]:
    """Messages for a config-group choice that does not exist (``strategy=err``) and a top-level
    key that is not one (``seeed=1``), each with the closest names ("did you mean") and where to
    see them all, instead of Hydra's list of every file or its "+seeed" suggestion."""
    import difflib
    from dataclasses import fields

    from continual.config import RunConfig
    from continual.registry import config_file, module_path

    conf = module_path("continual.conf")
    own_dirs = user_config_dirs(args)
    if own_dirs is None:  # another primary config or a package search path: Hydra decides
        return []
    messages = []
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        group = key.lstrip("+")
        if group in CHOICE_GROUPS:
            if any(c in value for c in "()[]{}$*"):  # choice(...), glob(...), interpolations: Hydra's
                continue
            names = [v for v in value.split(",") if v]  # a sweep lists several
            for name in names:
                in_own = any((d / group / f"{name}.yaml").is_file() for d in own_dirs)
                if config_file(group, name) is None and not in_own and conf is not None:
                    known = sorted({p.stem for d in (conf, *own_dirs) for p in (d / group).glob("*.yaml")})
                    close = difflib.get_close_matches(name, known, n=3)
                    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
                    messages.append(f"there is no {group} {name!r}{hint}; `continual list` shows every "
                                    f"stream, strategy, model and schedule (conf/{group}/)")
        elif not key.startswith("+") and "." not in key and not key.startswith("hydra"):
            valid = [f.name for f in fields(RunConfig)]
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=2)
                hint = f"did you mean {' or '.join(close)}? " if close else ""
                messages.append(f"{key} is not a setting; {hint}the settings: {', '.join(valid)} "
                                "(docs/configuration.md)")
    return messages


def user_config_dirs(args: list[str]) -> list[Path] | None:
    """The user's config folders a command adds (``'hydra.searchpath=[file://my_conf]'``,
    ``--config-dir my_conf``), or None when it changes what we cannot follow (another
    primary config, a ``pkg://`` search path)."""
    import re

    found: list[Path] = []
    for i, arg in enumerate(args):
        if arg.lstrip("+").startswith("hydra.searchpath="):
            for scheme, where in re.findall(r"(\w+)://([^,\]\s'\"]+)", arg):
                if scheme != "file":
                    return None
                found.append(Path(where))
        elif arg in ("--config-dir", "-cd") and i + 1 < len(args):
            found.append(Path(args[i + 1]))
        elif arg.startswith("--config-dir="):
            found.append(Path(arg.split("=", 1)[1]))
        elif arg in ("--config-path", "-cp", "--config-name", "-cn") or arg.startswith(("--config-path=",
                                                                                     "--config-name=")):
            return None
    return found


def _default_choice(group: str) -> str | None:
    import yaml

    from continual.registry import module_path

    conf = module_path("continual.conf")
    data = yaml.safe_load((conf / "config.yaml").read_text()) if conf else {}
    for entry in data.get("defaults", []):
        if isinstance(entry, dict) and group in entry:
            return str(entry[group])
    return None


def main() -> None:
    """Entry point of the ``continual`` console script."""
    mark("main")
    args = sys.argv[1:]
    problems = (unknown_choices(args) or unknown_group_options(args)) if args and args[0] not in ("list", "report") \
        else []
    if problems:
        print("continual: configuration error: " + "\n".join(problems), file=sys.stderr)
        raise SystemExit(2)
    if args and args[0] not in ("list", "report") and ("--cfg" in args or "-c" in args):
        check_printed_config(args)  # --cfg job validates as a run does, or says why it cannot
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


def check_printed_config(args: list[str]) -> None:
    """``--cfg job``: refuse what a run would refuse (exit 2, with the run's message) before Hydra
    prints the config; ``-m ... --cfg`` (which Hydra refuses with a traceback) is explained."""
    if "-m" in args or "--multirun" in args:
        print("continual: configuration error: --cfg prints one job's config and cannot be combined with "
              "-m; drop -m and give one value for each swept key (e.g. strategy=naive instead of "
              "strategy=naive,er)", file=sys.stderr)
        raise SystemExit(2)
    flag = "--cfg" if "--cfg" in args else "-c"
    at = args.index(flag)
    overrides = [a for i, a in enumerate(args) if i not in (at, at + 1) and not a.startswith("-")]
    from hydra import compose, initialize_config_module

    from continual.config import register_configs
    from continual.experiment import check_config
    from continual.types import ConfigError

    register_configs()
    try:
        with initialize_config_module(config_module="continual.conf", version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        check_config(cfg)
    except ConfigError as e:
        print(f"continual: configuration error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception:
        return  # Hydra's own refusal (a typo in a key or group) is said by Hydra itself, next

