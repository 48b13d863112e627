"""Exact resume after SIGKILL, corrupt checkpoints, safe loading, NaN losses, failing sweep jobs."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from continual.checkpoint import CorruptCheckpoint, list_checkpoints, load_checkpoint, save_checkpoint
from continual.runner import TIMING_KEYS

STRATEGIES = ["naive", "er"]
ARGS = ["stream=split_digits", "model.hidden=32", "log.console=false", "checkpoint.every=20",
        "eval.every=10", "eval.max_per_task=60"]


def _continual(*args, cwd, fault=None):
    env = {k: v for k, v in os.environ.items() if k != "CONTINUAL_FAULT"}
    if fault:
        env["CONTINUAL_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "continual", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=300)


def _records(run: Path):
    summary = json.loads((run / "summary.json").read_text())
    summary = {k: v for k, v in summary.items() if k not in TIMING_KEYS}
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for rec in lines:
        rec.pop("time", None)
    return summary, lines


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    for strategy in STRATEGIES:
        r = _continual(*ARGS, f"strategy={strategy}", f"hydra.run.dir={root / strategy}", cwd=root)
        assert r.returncode == 0, r.stderr
    return root


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("point", ["step", "task_end", "eval"])
def test_resume_after_sigkill_is_identical(reference_runs, tmp_path, strategy, point):
    # split_digits: 146 steps, 5 task ends, 14 periodic + 6 other evals
    n = {"step": random.Random(strategy).randint(25, 130), "task_end": 2,
         "eval": random.Random(strategy).randint(3, 18)}[point]
    run = tmp_path / "run"
    killed = _continual(*ARGS, f"strategy={strategy}", f"hydra.run.dir={run}", cwd=tmp_path,
                        fault=f"{point}:{n}")
    assert killed.returncode == -9, f"expected SIGKILL at {point}:{n}, got {killed.returncode}"
    assert not (run / "summary.json").exists()
    resumed = _continual(*ARGS, f"strategy={strategy}", f"hydra.run.dir={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    assert _records(run) == _records(reference_runs / strategy)
    print(f"{strategy}: killed at {point}:{n}, resumed, identical")


def test_corrupt_newest_checkpoint_is_skipped(reference_runs, tmp_path):
    run = tmp_path / "run"
    killed = _continual(*ARGS, "strategy=er", f"hydra.run.dir={run}", cwd=tmp_path, fault="step:100")
    assert killed.returncode == -9
    newest = list_checkpoints(run / "checkpoints")[-1]
    newest.write_bytes(newest.read_bytes()[:-100])  # truncated by a crash mid-copy
    resumed = _continual(*ARGS, "strategy=er", f"hydra.run.dir={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "skipping corrupt checkpoint" in resumed.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["corrupt_checkpoints_skipped"] == 1
    assert _records(run) == _records(reference_runs / "er")


def test_altered_checkpoint_fails_its_checksum(tmp_path):
    path = save_checkpoint(tmp_path, 1, {"w": torch.ones(3)})
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint, match="checksum"):
        load_checkpoint(path)


def test_checkpoints_cannot_run_code(tmp_path):
    import hashlib
    import io

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    buf = io.BytesIO()
    torch.save({"x": Evil()}, buf)
    data = buf.getvalue()
    (tmp_path / "ckpt-000000001.pt").write_bytes(b"CLCKPT01" + hashlib.sha256(data).digest() + data)
    with pytest.raises(CorruptCheckpoint, match="safely"):
        load_checkpoint(tmp_path / "ckpt-000000001.pt")
    assert not (tmp_path / "pwned").exists()


def test_only_the_newest_k_checkpoints_are_kept(tmp_path):
    for step in range(5):
        save_checkpoint(tmp_path, step, {"step": step}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-000000003.pt", "ckpt-000000004.pt"]


def test_nan_loss_stops_naming_step_strategy_and_checkpoint(tmp_path):
    r = _continual(*ARGS, "strategy=naive", "strategy.lr=1e12", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert r.returncode == 2
    assert "non-finite loss" in r.stderr and "step" in r.stderr and "Naive" in r.stderr
    assert "last good checkpoint" in r.stderr
    assert (tmp_path / "run" / "error.txt").exists()


def test_nan_loss_skip_counts_skipped_batches(tmp_path):
    r = _continual(*ARGS, "strategy=naive", "strategy.lr=1e12", "on_nan=skip", f"hydra.run.dir={tmp_path}/run",
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["skipped_nonfinite_batches"] > 0


def test_a_failing_sweep_job_does_not_lose_the_others(tmp_path):
    r = _continual("-m", *ARGS, "strategy=naive", "strategy.lr=0.05,1e12", f"hydra.sweep.dir={tmp_path}/sweep",
                   cwd=tmp_path)
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert len(jobs) == 2
    assert (jobs[0] / "summary.json").exists()
    assert (jobs[1] / "error.txt").exists() and "non-finite" in (jobs[1] / "error.txt").read_text()
    assert r.returncode == 0
