"""`stream=avalanche`: an Avalanche benchmark from its factory's dotted path and arguments, on the
command line (issue 19), tested on an in-memory benchmark written to a module of its own."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from continual.config import instantiate_checked, register_configs
from continual.types import ConfigError

FACTORY = textwrap.dedent('''
    import torch
    from avalanche.benchmarks import benchmark_from_datasets
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as make

    CALLS = []

    def tiny(n_experiences=3, per_experience=40, seed=None):
        """n_experiences of 2 classes each, 4x4 one-channel inputs; records its arguments."""
        CALLS.append({"n_experiences": n_experiences, "seed": seed})
        g = torch.Generator().manual_seed(0 if seed is None else seed)

        def experience(i, n):
            y = torch.randint(2 * i, 2 * i + 2, (n,), generator=g)
            x = torch.randn(n, 1, 4, 4, generator=g) + 3 * y.view(-1, 1, 1, 1).float()
            return make(x, y, targets=y.tolist(), task_labels=0)

        return benchmark_from_datasets(
            train=[experience(i, per_experience) for i in range(n_experiences)],
            test=[experience(i, per_experience // 4) for i in range(n_experiences)])
''')


@pytest.fixture
def tiny_bench(tmp_path, monkeypatch):
    """A module `tiny_bench` on the path (this process and children) with the factory `tiny`."""
    (tmp_path / "tiny_bench.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    yield tmp_path
    sys.modules.pop("tiny_bench", None)


def _stream(*overrides, seed=7):
    from hydra import compose, initialize_config_module

    register_configs()
    with initialize_config_module(config_module="continual.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["stream=avalanche", *overrides])
    return instantiate_checked(cfg.stream, "stream", seed=seed)


def test_the_factory_builds_the_stream_with_its_arguments_and_the_run_seed(tiny_bench):
    import tiny_bench as module

    s = _stream("stream.factory=tiny_bench.tiny", "stream.args={n_experiences: 4}", "stream.batch_size=8")
    assert module.CALLS[-1] == {"n_experiences": 4, "seed": 7}  # the run's seed reached seed_arg
    assert s.name == "tiny" and s.n_tasks == 4 and s.batch_size == 8
    assert [t.classes for t in s.tasks] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert len(s) == 160 and s.n_classes == 8


def test_a_seed_in_args_wins_and_seed_arg_null_passes_none(tiny_bench):
    import tiny_bench as module

    _stream("stream.factory=tiny_bench.tiny", "stream.args={seed: 3}")
    assert module.CALLS[-1]["seed"] == 3
    _stream("stream.factory=tiny_bench.tiny", "stream.seed_arg=null")
    assert module.CALLS[-1]["seed"] is None


@pytest.mark.parametrize("overrides, message", [
    (["stream.factory=tiny_bench.nothing"], "cannot be imported"),
    (["stream.factory=tiny_bench.tiny", "stream.args={colour: red}"], "refused its arguments"),
    (["stream.factory=tiny_bench.CALLS"], "is not callable"),
])
def test_bad_factories_are_config_errors_that_say_what_to_give(tiny_bench, overrides, message):
    with pytest.raises(ConfigError, match=message):
        _stream(*overrides)


@pytest.mark.slow
def test_a_run_on_an_avalanche_benchmark_from_the_command_line(tiny_bench, tmp_path):
    from _cli import run_continual

    out = tmp_path / "run"
    proc = run_continual("stream=avalanche", "stream.factory=tiny_bench.tiny", "strategy=naive",
                         f"hydra.run.dir={out}", "report.per_run=false")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stream"] == "tiny" and summary["n_tasks"] == 3
    assert summary["samples_seen"] == 120 and summary["steps"] == 12  # 3 experiences x 40, batch 10
    assert len(summary["final_task_acc"]) == 3 and 0.0 <= summary["acc"] <= 1.0


def test_a_missing_factory_says_which_option_to_give():
    with pytest.raises(ConfigError, match=r"stream.factory has no default and must be given"):
        _stream()
