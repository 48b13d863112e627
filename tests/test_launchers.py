"""Sweeps on Hydra's launchers: basic (sequential), joblib (local processes) and
submitit_local (submitit's local executor) each run every job into its own run folder; the
project's `local` preset caps how many run at once; Ray (where the `ray` extra is installed)
and Slurm (where `sbatch` reaches a cluster, e.g. scripts/slurm_local.sh) give the basic
launcher's results exactly, and a Slurm job signalled to stop is requeued and resumes from its
checkpoint; the Optuna example runs where the plugin is installed."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

FAST = ["stream=split_digits", "model.hidden=16", "log.console=false", "strategy=naive", "seed=0,1"]
JOBS = ["split_digits_naive_s0_0", "split_digits_naive_s1_1"]


#: Ray single-machine mode: every Ray process listens on 127.0.0.1 only (without it Ray's
#: servers listen on all interfaces, whatever ray.init's _node_ip_address says)
RAY_LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
#: the submitit Slurm launcher sized for one small CPU job (scripts/slurm_local.sh's cluster)
SLURM_SMALL = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
               "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]
#: summary keys that measure the machine or the run's history, not what it learned
NOT_RESULTS = {"train_seconds", "eval_seconds", "samples_per_second", "peak_rss_mb", "peak_rss_scope",
               "versions", "resumed_from", "corrupt_checkpoints_skipped"}


def _env(extra=None):
    return {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "offline",
            **(extra or {})}


def _continual(*args, cwd, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "continual", *args], cwd=cwd, capture_output=True,
                          text=True, env=_env(env), timeout=timeout)


def _sweep(root, *launcher, env=None, timeout=300):
    r = _continual("-m", *FAST, *launcher, f"hydra.sweep.dir={root}/sweep", cwd=root, env=env, timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return root / "sweep", r


def _results(sweep):
    """Per job folder: its summary without timings, its scores.csv, its metrics.jsonl rows
    without wall-clock times; equal for two sweeps that learned exactly the same."""
    out = {}
    for summary in sorted(Path(sweep).glob("*/summary.json")):
        job = summary.parent
        rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
        out[job.name] = ({k: v for k, v in json.loads(summary.read_text()).items() if k not in NOT_RESULTS},
                         (job / "scores.csv").read_text(), [{k: v for k, v in r.items() if k != "time"} for r in rows])
    return out


def _job_spans(log_dir):
    """(start, end) of each submitit job, from the first start and last exit of its *_log.out."""
    spans = []
    for log in sorted(Path(log_dir).glob("*_log.out")):
        stamps = re.findall(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+)\) - (Starting|Exiting)", log.read_text())
        when = {event: datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f") for stamp, event in stamps}
        spans.append((when["Starting"], when["Exiting"]))
    return spans


def _slurm_cluster_answers():
    if shutil.which("sbatch") is None:
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


needs_slurm = pytest.mark.skipif(
    not _slurm_cluster_answers(),
    reason="no Slurm cluster (sbatch missing or sinfo fails); bash scripts/slurm_local.sh starts one on this machine")


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


@pytest.mark.slow
def test_local_launcher_gives_the_basic_results_and_keeps_logs_by_job_id(tmp_path, basic_sweep):
    sweep, _ = _sweep(tmp_path, "hydra/launcher=local")
    _check_jobs(sweep)
    assert _results(sweep) == _results(basic_sweep)
    logs = sweep / ".submitit"
    assert len(list(logs.glob("*_0_log.out"))) == 2  # <job id>_<task>_log.out, one per job
    assert not (logs / "%j").exists()  # what submitit_local's .submitit/%j leaves behind


@pytest.mark.slow
def test_local_launcher_runs_at_most_cores_over_cpus_per_task_jobs_at_once(tmp_path):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    sweep, _ = _sweep(tmp_path, "hydra/launcher=local", f"hydra.launcher.cpus_per_task={cores}")  # one slot
    _check_jobs(sweep)
    (a_start, a_end), (b_start, b_end) = sorted(_job_spans(sweep / ".submitit"))
    assert a_end <= b_start, f"the jobs overlapped: {a_start}-{a_end} and {b_start}-{b_end}"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None
                    or importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None,
                    reason="the ray extra is not installed (pip install -e '.[ray]', in its own environment: "
                           "it pins cloudpickle<3)")
def test_ray_launcher_gives_the_basic_launchers_results(tmp_path, basic_sweep):
    sweep, r = _sweep(tmp_path, "hydra/launcher=ray_local", "hydra.launcher.ray.init.num_cpus=2",
                      env=RAY_LOOPBACK, timeout=600)
    assert "Ray Launcher is launching 2 jobs" in r.stdout + r.stderr
    _check_jobs(sweep)
    assert _results(sweep) == _results(basic_sweep)


@pytest.mark.slow
@needs_slurm
def test_slurm_launcher_gives_the_basic_launchers_results(tmp_path, basic_sweep):
    sweep, _ = _sweep(tmp_path, *SLURM_SMALL, timeout=600)
    _check_jobs(sweep)
    assert _results(sweep) == _results(basic_sweep)
    assert list((sweep / ".submitit").glob("*/*_log.out"))  # Slurm expands %j: one folder per array task


@pytest.mark.slow
@needs_slurm
def test_slurm_job_stopped_by_its_timeout_signal_is_requeued_and_resumes_from_its_checkpoint(tmp_path):
    run = ["stream=split_digits", "model.hidden=16", "log.console=false", "strategy=naive", "seed=0",
           "stream.passes=40", "checkpoint.every=10"]
    sweep = tmp_path / "sweep"
    # timeout_min=5 < 10: submitit counts any stop signal as the time limit's, so the requeue
    # spends one of max_num_timeout's requeues
    sweeping = subprocess.Popen(
        [sys.executable, "-m", "continual", "-m", *run, *SLURM_SMALL, "hydra.launcher.timeout_min=5",
         "hydra.launcher.max_num_timeout=1", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    job_id = None
    try:
        deadline = time.monotonic() + 300
        while not list(sweep.glob("*/checkpoints/*.pt")):  # the job trains and has saved a checkpoint
            assert sweeping.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
            time.sleep(0.1)
        (submitted,) = sweep.glob(".submitit/*/*_submitted.pkl")
        job_id = submitted.name.removesuffix("_submitted.pkl")
        # what Slurm sends signal_delay_s before the time limit (submitit's own job._interrupt())
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
        out, _ = sweeping.communicate(timeout=600)
    finally:
        if sweeping.poll() is None:  # without accounting (sacct) the launcher cannot see a lost job
            sweeping.kill()
            if job_id:
                subprocess.run(["scancel", job_id], timeout=30)
    assert sweeping.returncode == 0, out[-4000:]
    (summary,) = sweep.glob("*/summary.json")
    assert json.loads(summary.read_text())["resumed_from"], "the requeued job started over"
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.out"))
    assert "Requeued job" in logs and logs.count("Starting with JobEnvironment") == 2
    uninterrupted = _continual("-m", *run, f"hydra.sweep.dir={tmp_path}/uninterrupted", cwd=tmp_path)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-4000:]
    assert list(_results(sweep).values()) == list(_results(tmp_path / "uninterrupted").values())


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
