"""CI step for examples/plugin: pip install it, run it by name through `continual`, run its tests.

The install goes into the current environment (as a user would do it); it is skipped when
the installed copy already matches the example's source.
"""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "plugin"
DIST = "continual-labels-trick"

pytestmark = pytest.mark.slow  # pip installs the example and runs it in subprocesses


def _installed_matches_source() -> bool:
    try:
        dist = importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        return False
    for name in ("strategy.py", "conf/strategy/labels_trick.yaml"):
        installed = Path(dist.locate_file(f"continual_labels_trick/{name}"))
        source = EXAMPLE / "continual_labels_trick" / name
        if not installed.is_file() or installed.read_bytes() != source.read_bytes():
            return False
    return True


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    if not _installed_matches_source():
        # build from a copy so that build/ and *.egg-info never land in the repository
        copy = tmp_path_factory.mktemp("plugin") / "plugin"
        shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("build", "*.egg-info"))
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
             str(copy)], check=True, timeout=300,
        )
        importlib.invalidate_caches()
    assert _installed_matches_source()
    return DIST


def test_the_installed_plugin_runs_by_name_through_continual(installed_plugin, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "continual", "strategy=labels_trick", "stream=split_digits",
         "log.console=false", f"hydra.run.dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["strategy"] == "labels_trick"
    target = summary["config"]["strategy"]["_target_"]
    assert target == "continual_labels_trick.strategy.LabelsTrick"


def test_the_plugin_shows_in_continual_list(installed_plugin):
    r = subprocess.run([sys.executable, "-m", "continual", "list"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.strip().startswith("labels_trick"))
    assert "Labels trick" in line and f"[{DIST}]" in line


def test_the_plugins_own_tests_pass(installed_plugin):
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(EXAMPLE / "tests")], cwd=EXAMPLE, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
