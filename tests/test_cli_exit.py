"""The console script leaves without the interpreter's teardown (issue 18): exit handlers run,
buffered output arrives, and it falls back to a normal exit when something is left to finish."""

from __future__ import annotations

import os
import subprocess
import sys

PROGRAM = """
import atexit, sys, threading, time
from continual.cli import _exit_without_teardown
atexit.register(lambda: print("exit handler ran", flush=True))
sys.stdout.write("buffered, not flushed;")
if sys.argv[1] == "thread":
    threading.Thread(target=time.sleep, args=(0.2,)).start()
_exit_without_teardown()
print("returned to the caller")
"""


def run(mode: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def test_the_exit_runs_the_exit_handlers_and_flushes_output_then_ends_the_process():
    done = run("plain")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "buffered, not flushed;exit handler ran\n"


def test_a_running_non_daemon_thread_gets_the_normal_exit():
    done = run("thread")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "buffered, not flushed;returned to the caller\nexit handler ran\n"


def test_continual_full_exit_asks_for_the_normal_exit():
    done = run("plain", CONTINUAL_FULL_EXIT="1")
    assert done.stdout == "buffered, not flushed;returned to the caller\nexit handler ran\n"


SWEEP = """
import sys
from hydra._internal.config_loader_impl import ConfigLoaderImpl
composed = []
compose = ConfigLoaderImpl.load_configuration
def counting(self, *args, **kwargs):
    composed.append(kwargs.get("overrides"))
    return compose(self, *args, **kwargs)
ConfigLoaderImpl.load_configuration = counting
import continual.cli as cli
if sys.argv[1] == "twice":
    cli.compose_each_job_once = lambda: None
sys.argv = ["continual", "-m", "strategy=naive", "seed=0,1,2", "stream=split_digits",
            "log.console=false", "report.sweep=false", "hydra.sweep.dir=" + sys.argv[2]]
cli.main()
print("COMPOSED", len(composed))
"""


def _sweep_composes(tmp_path, mode: str) -> tuple[int, list[str]]:
    done = subprocess.run([sys.executable, "-c", SWEEP, mode, str(tmp_path / mode)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    count = int(done.stdout.split("COMPOSED")[-1])
    configs = sorted(p.read_text().replace(str(tmp_path / mode), "D")
                     for p in (tmp_path / mode).rglob(".hydra/*.yaml"))
    return count, configs


def test_a_sweep_composes_each_job_once_with_the_same_configs(tmp_path):
    """Hydra's sweeper composes a batch to check it, and the launcher composes each job again;
    the check's configs are handed to the launcher (issue 18): three composes fewer for three
    jobs (the rest, the master config and Hydra's own, are the same in both)."""
    once, configs_once = _sweep_composes(tmp_path, "once")
    twice, configs_twice = _sweep_composes(tmp_path, "twice")
    assert twice - once == 3
    assert len(configs_once) == 9 and configs_once == configs_twice  # config, hydra, overrides x 3
