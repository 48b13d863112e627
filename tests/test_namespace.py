"""One import namespace: a user's own ``conf/``, ``strategies/``, ``memory/``, ``streams/`` never break continual.

Our folders install as ``continual.conf``, ``continual.strategies``, ``continual.memory`` and
``continual.streams``; the old top-level names still import, with a FutureWarning, only
where the user has no package of that name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from _cli import ROOT

USER_PACKAGES = ("conf", "strategies", "memory", "streams")


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    """A research project folder with packages of its own under our old top-level names."""
    for name in USER_PACKAGES:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"WHOSE = 'user {name}'\n")
    (tmp_path / "conf" / "config.yaml").write_text("# the user's own Hydra config\nlr: 1.0\n")
    return tmp_path


def _python(*args: str, cwd: Path, pythonpath: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath), "OMP_NUM_THREADS": "1"}
    env.pop("CONTINUAL_FAULT", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_a_run_from_a_folder_holding_the_users_own_packages(user_project: Path):
    # the user's folder is the working directory and on PYTHONPATH, ahead of this checkout
    r = _python("-m", "continual", "stream=split_digits", "strategy=er", "log.console=false",
                "++stream.train_per_class=5", "++stream.test_per_class=5",
                f"hydra.run.dir={user_project / 'run'}", cwd=user_project,
                pythonpath=[str(user_project), str(ROOT)])
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((user_project / "run" / "summary.json").read_text())
    assert summary["strategy"] == "er"
    assert summary["config"]["strategy"]["_target_"] == "continual.strategies.er.ER"


def test_continual_list_from_a_folder_holding_the_users_own_packages(user_project: Path):
    r = _python("-m", "continual", "list", cwd=user_project, pythonpath=[str(user_project), str(ROOT)])
    assert r.returncode == 0, r.stderr
    assert any(line.split()[:1] == ["er"] for line in r.stdout.splitlines())


def test_the_users_packages_keep_their_names_beside_ours(user_project: Path):
    code = ("import continual.streams, continual.strategies, continual.memory, continual.conf\n"
            "import streams, strategies, memory, conf\n"
            "print(conf.WHOSE, strategies.WHOSE, memory.WHOSE, streams.WHOSE)\n"
            "print(continual.streams.__file__)")
    r = _python("-c", code, cwd=user_project, pythonpath=[str(user_project), str(ROOT)])
    assert r.returncode == 0, r.stderr
    users, ours = r.stdout.splitlines()
    assert users == "user conf user strategies user memory user streams"
    assert Path(ours) == ROOT / "streams" / "__init__.py"


def test_old_names_are_deprecated_aliases_of_the_same_modules(tmp_path: Path):
    code = ("import warnings; warnings.simplefilter('always')\n"
            "import continual.strategies.er as new\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    import strategies.er as old\n"
            "    from memory.buffers import ReservoirBuffer\n"
            "import continual.memory.buffers as buffers\n"
            "assert old is new and old.ER is new.ER and ReservoirBuffer is buffers.ReservoirBuffer\n"
            "assert new.__spec__.name == 'continual.strategies.er'\n"
            "print(sorted({str(x.message).split(';')[0] for x in w if x.category is FutureWarning}))")
    r = _python("-c", code, cwd=tmp_path, pythonpath=[str(ROOT)])
    assert r.returncode == 0, r.stderr
    assert "the module name 'strategies' is deprecated" in r.stdout
    assert "the module name 'memory.buffers' is deprecated" in r.stdout


@pytest.mark.slow
def test_a_config_with_an_old_target_still_runs_with_a_warning(tmp_path: Path):
    r = _python("-m", "continual", "stream=split_digits", "strategy=naive", "strategy._target_=strategies.naive.Naive",
                "log.console=false", "++stream.train_per_class=3", "++stream.test_per_class=3",
                f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, pythonpath=[str(ROOT)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "'strategies' is deprecated" in r.stderr


@pytest.mark.slow
def test_the_wheel_installs_everything_under_continual(tmp_path: Path, user_project: Path):
    # build from a copy, so that build/ and *.egg-info never land in the checkout
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "outputs", "multirun", "runs", ".venv", "__pycache__", "tests", "benchmarks"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("continual_sim-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"continual", "hydra_plugins"}
    for needed in ("continual/streams/stream.py", "continual/strategies/ckl/lora.py",
                   "continual/memory/vector_store.py", "continual/conf/config.yaml",
                   "continual/conf/strategy/er.yaml", "hydra_plugins/continual_searchpath/continual_searchpath.py"):
        assert needed in names
    # installed from the wheel (not the checkout), beside the user's own packages
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import continual.streams, continual.conf, importlib.resources, conf\n"
            "print(continual.streams.__file__)\n"
            "print((importlib.resources.files('continual.conf') / 'config.yaml').is_file(), conf.WHOSE)")
    r = _python("-c", code, cwd=user_project, pythonpath=[str(user_project), str(site)])
    assert r.returncode == 0, r.stderr
    where, found = r.stdout.splitlines()
    assert Path(where) == site / "continual" / "streams" / "__init__.py"
    assert found == "True user conf"
