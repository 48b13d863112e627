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
