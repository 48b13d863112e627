"""Run `python -m continual ...` (or any Python command) in a fresh interpreter, as a user would.

The child finds this checkout first on its path (whatever was pip-installed), inherits the
parent's environment (one thread: tests/conftest.py) and never a leftover CONTINUAL_FAULT.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300


def _env(fault: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CONTINUAL_FAULT"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if fault:
        env["CONTINUAL_FAULT"] = fault  # the runner SIGKILLs itself at the n-th <point>
    return env


def start_python(*args: str, cwd: str | Path | None = None, fault: str | None = None) -> subprocess.Popen:
    """Start ``python <args>`` without waiting; ``fault``: ``<step|task_end|eval>:<n>``."""
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=_env(fault), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """Wait for ``proc``; its exit code (-9 after a SIGKILL) and output."""
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_python(*args: str, cwd: str | Path | None = None, fault: str | None = None,
               timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run ``python <args>`` to the end."""
    return finish(start_python(*args, cwd=cwd, fault=fault), timeout)


def start_continual(*args: str, cwd: str | Path | None = None, fault: str | None = None) -> subprocess.Popen:
    """Start the ``continual`` command with these Hydra overrides (or subcommand) without waiting."""
    return start_python("-m", "continual", *args, cwd=cwd, fault=fault)


def run_continual(*args: str, cwd: str | Path | None = None, fault: str | None = None,
                  timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run the ``continual`` command to the end."""
    return finish(start_continual(*args, cwd=cwd, fault=fault), timeout)


def run_records(run: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A finished run's summary.json and metrics.jsonl without the timing fields: what an
    interrupted and resumed run must reproduce exactly."""
    from continual.runner import TIMING_KEYS

    run = Path(run)
    summary = json.loads((run / "summary.json").read_text())
    summary = {k: v for k, v in summary.items() if k not in TIMING_KEYS}
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for rec in lines:
        rec.pop("time", None)
    return summary, lines
