"""Sweeps on Hydra's launchers: basic (sequential), joblib (local processes) and
submitit_local (submitit's local executor) each run every job into its own run folder;
the project's Slurm launcher config composes; the Optuna example runs where the plugin is
installed."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

FAST = ["stream=split_digits", "model.hidden=16", "log.console=false", "strategy=naive", "seed=0,1"]
JOBS = ["split_digits_naive_s0_0", "split_digits_naive_s1_1"]


def _continual(*args, cwd, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-m", "continual", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=timeout)


def _sweep(root, *launcher):
    r = _continual("-m", *FAST, *launcher, f"hydra.sweep.dir={root}/sweep", cwd=root)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return root / "sweep", r


def _check_jobs(sweep):
    summaries = sorted(sweep.glob("*/summary.json"))
    assert [p.parent.name for p in summaries] == JOBS
    assert [json.loads(p.read_text())["seed"] for p in summaries] == [0, 1]
    for p in summaries:
        assert (p.parent / ".hydra" / "overrides.yaml").exists()
        assert (p.parent / "metrics.jsonl").stat().st_size > 0


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory):
    return _sweep(tmp_path_factory.mktemp("basic"))[0]


@pytest.mark.slow
def test_basic_launcher_runs_every_job(basic_sweep):
    _check_jobs(basic_sweep)


@pytest.mark.slow
def test_report_of_a_real_sweep_counts_its_seeds(basic_sweep, tmp_path):
    from continual.report import write_report

    result = write_report(basic_sweep, out=tmp_path, plots=False)
    groups = [(g.stream, g.strategy, len(g.runs)) for g in result["groups"]]
    assert groups == [("split_digits", "naive", 2)]
    assert not result["failed"]


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_worker_processes(tmp_path):
    sweep, r = _sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    _check_jobs(sweep)
    assert "Joblib.Parallel(n_jobs=2" in r.stdout + r.stderr


@pytest.mark.slow
def test_submitit_local_launcher_runs_every_job(tmp_path):
    sweep, _ = _sweep(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10")
    _check_jobs(sweep)
    assert list((sweep / ".submitit").glob("*/*_log.out"))  # submitit's own job logs


def test_slurm_launcher_config_composes_with_project_defaults(tmp_path):
    r = _continual("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra", "-p",
                   "hydra.launcher", "--resolve", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in out
    assert "partition: gpu" in out and "gpus_per_node: 1" in out
    assert "export OMP_NUM_THREADS=4" in out


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None,
                    reason="hydra-optuna-sweeper is not installed (optional)")
def test_optuna_example_searches_and_records_the_best_trial(tmp_path):
    r = _continual("-m", "+experiment=optuna_example", "hydra.sweeper.n_trials=2",
                   "model.hidden=16", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    assert len(list((tmp_path / "sweep").glob("*/summary.json"))) == 2
    best = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    assert "best_params" in best and "strategy.lr" in best
