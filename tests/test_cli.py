"""The `continual` command: runs, overrides, sweeps and clear configuration errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FAST = ["stream=split_digits", "model.hidden=32", "log.console=false"]


def _continual(*args, cwd):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "continual", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.mark.slow
def test_a_run_writes_its_folder(tmp_path):
    r = _continual(*FAST, "strategy=er", "seed=1", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["seed"] == 1 and summary["strategy"] == "er"
    assert summary["config"]["stream"]["dataset"] == "digits"
    assert (tmp_path / "run" / ".hydra" / "config.yaml").exists()


@pytest.mark.slow
def test_multirun_with_the_basic_launcher(tmp_path):
    r = _continual("-m", *FAST, "strategy=naive,er", "seed=0,1", f"hydra.sweep.dir={tmp_path}/sweep",
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(list(Path(tmp_path / "sweep").glob("*/summary.json"))) == 4


@pytest.mark.slow
def test_unknown_top_level_key_fails_at_start(tmp_path):
    r = _continual(*FAST, "+evall.every=3", cwd=tmp_path)
    assert r.returncode != 0 and "evall" in r.stderr


def test_wrong_type_fails_naming_the_key(tmp_path):
    r = _continual(*FAST, "seed=abc", cwd=tmp_path)
    assert r.returncode != 0 and "seed" in r.stderr


@pytest.mark.slow
def test_unknown_strategy_option_lists_valid_ones(tmp_path):
    r = _continual(*FAST, "+strategy.bufer_size=10", cwd=tmp_path)
    assert r.returncode == 2
    assert "has no option 'bufer_size'" in r.stderr and "buffer_size" in r.stderr


@pytest.mark.slow
def test_wrongly_typed_strategy_option(tmp_path):
    r = _continual(*FAST, "strategy.buffer_size=lots", cwd=tmp_path)
    assert r.returncode == 2 and "strategy.buffer_size='lots'" in r.stderr


def test_unknown_group_choice_says_did_you_mean_and_where_to_look(tmp_path):
    r = _continual(*FAST, "strategy=err", cwd=tmp_path)
    assert r.returncode == 2 and "there is no strategy 'err' (did you mean er?)" in r.stderr
    assert "continual list" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_model_whose_output_does_not_match_the_classes(tmp_path):
    r = _continual(*FAST, "model=mlp", "~model.name", "~model.hidden", "~model.depth",
                   "+model._target_=torch.nn.Sequential", cwd=tmp_path)
    assert r.returncode == 2 and "classes" in r.stderr


def test_help_answers(tmp_path):
    r = _continual("--help", cwd=tmp_path)
    assert r.returncode == 0 and "stream" in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("args", "message"), [
    (["+strategy.buffersize=5", "--cfg", "job"], "strategy (ER) has no option 'buffersize'"),
    (["-m", "strategy=naive,er", "--cfg", "job"], "cannot be combined with -m"),
    (["eval.every=-1", "--cfg", "job"], "eval.every must be >= 0"),
])
def test_cfg_job_refuses_what_a_run_refuses(tmp_path, args, message):
    r = _continual(*args, cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_cfg_job_prints_a_valid_config(tmp_path):
    r = _continual("strategy=naive", "--cfg", "job", cwd=tmp_path)
    assert r.returncode == 0 and "_target_: continual.strategies.naive.Naive" in r.stdout


def test_a_choice_or_setting_that_does_not_exist_gets_a_did_you_mean():
    from continual.cli import unknown_choices

    (message,) = unknown_choices(["strategy=err"])
    assert "there is no strategy 'err' (did you mean er?); `continual list` shows" in message
    (message,) = unknown_choices(["-m", "strategy=naive,erx", "seed=0,1"])
    assert "there is no strategy 'erx'" in message
    (message,) = unknown_choices(["seeed=1"])
    assert message.startswith("seeed is not a setting; did you mean seed?")
    assert unknown_choices(["hydra.searchpath=[pkg://theirs.conf]", "stream=theirs"]) == []  # Hydra decides
    assert unknown_choices(["strategy=er", "+experiment=quick_sweep", "stream.n_tasks=2", "hydra/launcher=joblib",
                            "loggers=[wandb]", "strategy=choice(naive,er)", "+strategy.seed=1"]) == []
