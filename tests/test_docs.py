"""Every `continual` command in README.md and docs/*.md still works, so the docs cannot rot.

Single runs are executed for real on a tiny per-class subset (the overrides shown in
the test id are appended); sweeps are composed (`--cfg job` on their first combination)
because running every documented sweep would take too long; `report` runs on a tiny
sweep made here; `list` runs as written. Launchers that need a cluster (slurm, ray) are
composed only.
"""

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["++stream.train_per_class=3", "++stream.test_per_class=3", "log.console=false"]


def documented_commands() -> list[str]:
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", doc.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                try:
                    words = shlex.split(line, comments=True)
                except ValueError:  # not shell (python code in a bash-less block)
                    continue
                while words and re.match(r"^[A-Z_]+=", words[0]):
                    words = words[1:]
                if words[:3] == ["python3", "-m", "continual"]:
                    words = words[3:]
                elif words[:1] == ["continual"]:
                    words = words[1:]
                else:
                    continue
                found.append(shlex.join(words))
    return sorted(set(found))


COMMANDS = documented_commands()


def _run(args, cwd):
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "continual", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    r = _run(["-m", "stream=split_digits", "strategy=naive,er", *TINY, f"hydra.sweep.dir={root}/multirun/quick"],
             cwd=root)
    assert r.returncode == 0, r.stderr
    return root


def test_the_docs_have_commands():
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize("command", COMMANDS)
def test_documented_command_works(command, tmp_path, tiny_sweep):
    args = shlex.split(command)
    if "labels_trick" in command and importlib.util.find_spec("continual_labels_trick") is None:
        pytest.skip("the example plugin is not installed (tests/test_plugin_example.py installs it)")
    for needle, plugin in (("optuna", "hydra_plugins.hydra_optuna_sweeper"),
                           ("launcher=ray", "hydra_plugins.hydra_ray_launcher")):
        if needle in command and importlib.util.find_spec(plugin) is None:
            pytest.skip(f"{plugin} is an optional extra and not installed here")
    if args[:1] == ["list"]:
        r = _run(args, cwd=tmp_path)
    elif args[:1] == ["report"]:
        r = _run(args, cwd=tiny_sweep)
    elif "-m" in args or any(a.startswith("hydra/launcher=") for a in args):
        first = [a.split(",")[0] if "=" in a and "," in a and not a.startswith("'") else a
                 for a in args if a != "-m"]
        if "--cfg" not in first:
            first += ["--cfg", "job"]
        r = _run(first, cwd=tmp_path)
    else:
        r = _run([*args, *TINY, f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert r.returncode == 0, f"{command}\n{r.stderr[-3000:]}"
