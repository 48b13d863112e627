"""Exact resume after SIGKILL, corrupt checkpoints, safe loading, NaN losses, failing sweep jobs."""

import json
import os
import random

import pytest
import torch
from _cli import finish, run_continual, run_records, start_continual

from continual.checkpoint import CorruptCheckpoint, list_checkpoints, load_checkpoint, load_latest, save_checkpoint

ARGS = ["stream=split_digits", "model.hidden=32", "log.console=false", "checkpoint.every=20",
        "checkpoint.min_interval_s=0",
        "eval.every=10", "eval.max_per_task=60"]
# Every built-in strategy, with options that keep a run short and still exercise its state:
# buffers, OnPro's prototypes and Adam moments, TAME's experts, selector and deployed copies
# (train_at=eval: they are trained before each eval; window 10: 3 experts on split_digits),
# LTM's FAISS store (ltm_replay: evictions at capacity 184).
STRATEGIES = {
    "naive": [],
    "er": [],
    "onpro": ["strategy.rotations=4", "strategy.proj_dim=32"],
    "tame": ["strategy.window=10", "strategy.train_at=eval", "strategy.selector_epochs=5",
             "strategy.prune_epochs=2", "strategy.selector_capacity=200", "strategy.prune_capacity=50"],
    "ltm_knn": [],
    "ltm_replay": [],
}
# What the checkpoint the first resume starts from must hold: the state really is saved.
HOLDS_STATE = {
    "er": lambda s: s["buffer"]["size"] > 0,
    "onpro": lambda s: s["buffer"]["size"] > 0 and bool(s["class_means"].abs().sum() > 0),
    "tame": lambda s: len(s["pool"]["experts"]) > 1 and s["deployed"] is not None,
    "ltm_knn": lambda s: s["store"] is not None,
    "ltm_replay": lambda s: s["store"] is not None,
}


def _args(strategy: str) -> list[str]:
    return [*ARGS, f"strategy={strategy}", *STRATEGIES[strategy]]


class _References:
    """Uninterrupted runs, one per strategy, started on demand (alongside a test's first killed
    run) and shared by the tests."""

    def __init__(self, root):
        self.root, self.procs, self.results = root, {}, {}

    def start(self, strategy: str) -> None:
        if strategy not in self.procs:
            self.procs[strategy] = start_continual(*_args(strategy), f"hydra.run.dir={self.root / strategy}",
                                                   cwd=self.root)

    def run(self, strategy: str):
        self.start(strategy)
        if strategy not in self.results:
            self.results[strategy] = finish(self.procs[strategy])
        done = self.results[strategy]
        assert done.returncode == 0, done.stderr
        return self.root / strategy

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    refs = _References(tmp_path_factory.mktemp("reference"))
    yield refs
    refs.close()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_resume_after_sigkill_at_three_points_is_identical(references, tmp_path, strategy):
    """One run killed mid-task, then (resumed) at a task end, then (resumed) during an eval,
    then resumed to the end: summary.json and metrics.jsonl equal an uninterrupted run's.

    split_digits: 146 steps, task ends near steps 29, 58, 88, 117; a checkpoint every 20 steps
    and at each task end. A step kill in 41..80 resumes from a checkpoint at step >= 40; the
    1st or 2nd task end after it is at most step 117, which leaves >= 3 evals for the last kill.
    """
    rng = random.Random(strategy)
    kills = [("step", rng.randint(41, 80)), ("task_end", rng.randint(1, 2)), ("eval", rng.randint(1, 3))]
    references.start(strategy)
    run = tmp_path / "run"
    for i, (point, n) in enumerate(kills):
        killed = run_continual(*_args(strategy), f"hydra.run.dir={run}", cwd=tmp_path, fault=f"{point}:{n}")
        assert killed.returncode == -9, f"expected SIGKILL at {point}:{n}, got {killed.returncode}: {killed.stderr}"
        assert ("resumed from" in killed.stderr) == (i > 0)
        assert not (run / "summary.json").exists()
        if i == 0 and strategy in HOLDS_STATE:
            payload, _, _ = load_latest(run / "checkpoints")
            assert HOLDS_STATE[strategy](payload["strategy"]), f"{strategy}'s checkpoint lacks its state"
    resumed = run_continual(*_args(strategy), f"hydra.run.dir={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    reference = run_records(references.run(strategy))
    assert run_records(run) == reference
    if strategy == "tame":
        assert reference[0]["n_experts"] > 1
    print(f"{strategy}: killed at " + ", ".join(f"{p}:{n}" for p, n in kills) + "; resumed, identical")


@pytest.mark.slow
def test_corrupt_newest_checkpoint_is_skipped(references, tmp_path):
    run = tmp_path / "run"
    killed = run_continual(*_args("er"), f"hydra.run.dir={run}", cwd=tmp_path, fault="step:100")
    assert killed.returncode == -9
    newest = list_checkpoints(run / "checkpoints")[-1]
    newest.write_bytes(newest.read_bytes()[:-100])  # truncated by a crash mid-copy
    resumed = run_continual(*_args("er"), f"hydra.run.dir={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "skipping corrupt checkpoint" in resumed.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["corrupt_checkpoints_skipped"] == 1
    assert run_records(run) == run_records(references.run("er"))


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


@pytest.mark.slow
def test_nan_loss_stops_naming_step_strategy_and_checkpoint(tmp_path):
    r = run_continual(*ARGS, "strategy=naive", "strategy.lr=1e12", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert r.returncode == 2
    assert "non-finite loss" in r.stderr and "step" in r.stderr and "Naive" in r.stderr
    assert "last good checkpoint" in r.stderr
    assert (tmp_path / "run" / "error.txt").exists()


@pytest.mark.slow
def test_nan_loss_skip_counts_skipped_batches(tmp_path):
    r = run_continual(*ARGS, "strategy=naive", "strategy.lr=1e12", "on_nan=skip", f"hydra.run.dir={tmp_path}/run",
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["skipped_nonfinite_batches"] > 0


@pytest.mark.slow
def test_a_failing_sweep_job_does_not_lose_the_others(tmp_path):
    r = run_continual("-m", *ARGS, "strategy=naive", "strategy.lr=0.05,1e12", f"hydra.sweep.dir={tmp_path}/sweep",
                   cwd=tmp_path)
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert len(jobs) == 2
    assert (jobs[0] / "summary.json").exists()
    assert (jobs[1] / "error.txt").exists() and "non-finite" in (jobs[1] / "error.txt").read_text()
    assert r.returncode == 1 and "1 job(s) of the sweep failed" in r.stderr  # after the other job ran
