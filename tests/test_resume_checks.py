"""Resume never continues from the wrong state: the documented spellings, a fingerprint of the
training options in every checkpoint, strategies without state, corrupt checkpoints, and
plain strategy classes without the optional hooks."""

from __future__ import annotations

import json

import pytest
import torch
from _cli import run_continual

from continual import streams
from continual.checkpoint import list_checkpoints
from continual.config import CheckpointConfig, LogConfig
from continual.models import build_model
from continual.runner import Runner
from continual.types import ConfigError

ARGS = ["stream=split_digits", "model.hidden=32", "log.console=false", "checkpoint.every=20",
        "checkpoint.min_interval_s=0"]


def _killed_run(tmp_path, *extra):
    r = run_continual(*ARGS, *extra, f"hydra.run.dir={tmp_path}", cwd=tmp_path, fault="step:25")
    assert r.returncode == -9, r.stderr[-2000:]
    assert list_checkpoints(tmp_path / "checkpoints")


@pytest.mark.slow
@pytest.mark.parametrize("spelling", ["true", "false", "auto", "True", "False"])
def test_resume_accepts_the_documented_spellings(tmp_path, spelling):
    r = run_continual(*ARGS, f"resume={spelling}", "++stream.train_per_class=5", "++stream.test_per_class=5",
                      f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]


def test_resume_refuses_a_misspelled_mode(tmp_path):
    r = run_continual(*ARGS, "resume=maybe", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert r.returncode == 2 and "resume must be one of ['auto', 'true', 'false']" in r.stderr


@pytest.mark.slow
def test_resume_false_starts_over_and_resume_true_continues(tmp_path):
    _killed_run(tmp_path)
    again = run_continual(*ARGS, "resume=true", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert again.returncode == 0 and "resumed from" in again.stderr
    fresh = run_continual(*ARGS, "resume=false", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert fresh.returncode == 0 and "resumed from" not in fresh.stderr
    assert json.loads((tmp_path / "summary.json").read_text()).get("resumed_from") is None


@pytest.mark.slow
def test_a_changed_training_option_is_refused_with_the_changed_key(tmp_path):
    _killed_run(tmp_path, "strategy.lr=0.05")
    r = run_continual(*ARGS, "strategy.lr=0.2", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert r.returncode == 2
    assert "strategy.lr: 0.05 in the checkpoint, 0.2 now" in r.stderr
    assert "resume=false" in r.stderr and "hydra.run.dir" in r.stderr
    # an option that only changes evaluation or logging may differ
    ok = run_continual(*ARGS, "strategy.lr=0.05", "eval.every=10", "log.every=5", f"hydra.run.dir={tmp_path}",
                       cwd=tmp_path)
    assert ok.returncode == 0 and "resumed from" in ok.stderr


@pytest.mark.slow
def test_another_strategys_checkpoint_is_refused_not_a_keyerror(tmp_path):
    _killed_run(tmp_path, "strategy=er")
    r = run_continual(*ARGS, "strategy=naive", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert r.returncode == 2
    assert "strategy_class: 'continual.strategies.er.ER' in the checkpoint" in r.stderr


def _stream():
    return streams.class_incremental("digits", n_tasks=5, batch_size=10, train_per_class=10, test_per_class=5)


class _Stateless:
    """What the contract requires and nothing more: observe and predict (no hooks, no state)."""

    def __init__(self, model):
        self.model = model
        self.opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def observe(self, batch):
        loss = torch.nn.functional.cross_entropy(self.model(batch.x), batch.y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach()}

    def predict(self, x, task=None):
        return self.model(x)


def test_a_plain_class_runs_and_a_stateless_strategy_writes_no_checkpoint(tmp_path, capsys):
    stream = _stream()
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=16)
    runner = Runner(stream, _Stateless(model), out_dir=str(tmp_path),
                    checkpoint=CheckpointConfig(every=10, min_interval_s=0), log=LogConfig(every=10))
    summary = runner.run()
    assert summary["steps"] == stream.n_steps()
    assert not list_checkpoints(tmp_path / "checkpoints")
    assert "writes no checkpoints, and a killed run starts over" in capsys.readouterr().err


def test_a_checkpoint_without_strategy_state_is_refused(tmp_path):
    from continual import checkpoint as C

    stream = _stream()
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=16)
    runner = Runner(stream, _Stateless(model), out_dir=str(tmp_path))
    C.save_checkpoint(tmp_path / "checkpoints", 10, {"format": "continual-run", "version": 1,
                                                     "fingerprint": runner.fingerprint(),
                                                     "state": runner.state.to_dict(), "strategy": {},
                                                     "rng": C.rng_state()})
    with pytest.raises(ConfigError, match="holds no strategy state"):
        runner.resume()


def test_every_checkpoint_corrupt_says_it_starts_over(tmp_path, capsys):
    from continual.strategies.naive import Naive

    (tmp_path / "checkpoints").mkdir()
    for step in (10, 20):
        (tmp_path / "checkpoints" / f"ckpt-{step:09d}.pt").write_bytes(b"not a checkpoint")
    stream = _stream()
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=16)
    runner = Runner(stream, Naive(model), out_dir=str(tmp_path))
    assert runner.resume() is False
    assert "is corrupt; starting over from the beginning" in capsys.readouterr().err


@pytest.mark.parametrize(("override", "message"), [
    ("eval.max_per_task=0", "eval.max_per_task must be >= 1"),
    ("eval.max_per_task=-3", "eval.max_per_task must be >= 1"),
    ("eval.batch_size=0", "eval.batch_size must be >= 1"),
    ("seed=-1", "seed must be in 0..4294967295"),
    ("eval.every=-5", "eval.every must be >= 0"),
    ("log.every=0", "log.every must be >= 1"),
    ("checkpoint.keep=0", "checkpoint.keep must be >= 1"),
])
@pytest.mark.slow
def test_bad_run_options_are_refused_with_what_is_expected(tmp_path, override, message):
    r = run_continual("stream=split_digits", override, "log.console=false", f"hydra.run.dir={tmp_path}",
                      cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert message in r.stderr and "Traceback" not in r.stderr


def test_a_predict_of_the_wrong_width_is_named_at_the_first_eval(tmp_path):
    from continual.strategies.naive import Naive

    class NineColumns(Naive):
        def predict(self, x, task=None):
            return super().predict(x, task)[:, :9]

    stream = _stream()
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=16)
    with pytest.raises(ConfigError, match=r"NineColumns.predict returned shape \(10, 9\) .* expected \(B, n_classes\)"):
        Runner(stream, NineColumns(model), out_dir=str(tmp_path), checkpoint=CheckpointConfig(enabled=False)).run()


def test_a_typo_in_a_group_option_lists_the_valid_ones_without_a_plus(tmp_path):
    r = run_continual("strategy.lrr=0.1", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert r.returncode == 2
    assert "strategy.lrr is not an option of strategy 'er' (er.yaml); its options: lr, optimizer" in r.stderr
    r = run_continual("stream=split_digits", "stream.batchsize=3", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert r.returncode == 2 and "stream.batchsize is not an option of stream 'split_digits'" in r.stderr


def test_threads_auto_picks_one_for_small_models_and_sweeps_and_respects_the_env(monkeypatch):
    from continual.threads import choose_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert choose_threads("auto", 270_000, in_sweep=False) == 1
    assert choose_threads("auto", 11_000_000, in_sweep=True) == 1
    assert 1 <= choose_threads("auto", 11_000_000, in_sweep=False) <= (__import__("os").cpu_count() or 1)
    assert choose_threads(3, 270_000, in_sweep=True) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_threads("auto", 11_000_000, in_sweep=False) is None  # the user's setting stands
    with pytest.raises(ConfigError, match="threads must be auto or a number >= 1"):
        choose_threads(0, 1, in_sweep=False)


def test_threads_auto_counts_the_cores_idle_now_not_the_lagging_load_average(monkeypatch):
    import os

    from continual import threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.9, 3.9, 3.9))  # a minute of finished runs
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: None)  # whatever limit this machine has
    samples = iter([(1000, 4000), (1075, 4100)])  # 75 of 100 jiffies idle: 3 of 4 cores
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(samples))
    assert threads.idle_cores(interval=0) == 3.0
    samples = iter([(1000, 4000), (1075, 4100)])
    assert threads.choose_threads("auto", 11_000_000, in_sweep=False) == 3
    samples = iter([(1000, 4000), (1000, 4100)])  # every core busy: still one thread
    assert threads.choose_threads("auto", 11_000_000, in_sweep=False) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    samples = iter([(1000, 4000), (1100, 4100)])  # all idle, but this process may use two
    assert threads.choose_threads("auto", 11_000_000, in_sweep=False) == 2
    monkeypatch.setattr(threads, "_cpu_times", lambda: None)  # not Linux: the load average
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 1.0, 1.0))
    assert threads.idle_cores() is None
    assert threads.choose_threads("auto", 11_000_000, in_sweep=False) == 3


def test_threads_auto_stays_within_a_cgroup_cpu_quota(tmp_path, monkeypatch):
    import os

    from continual import threads

    # cgroup v2: the job's own cgroup allows 1.5 CPUs, its parent 4, the root no limit
    (tmp_path / "v2" / "slurm" / "job_1").mkdir(parents=True)
    (tmp_path / "v2" / "cpu.max").write_text("max 100000\n")
    (tmp_path / "v2" / "slurm" / "cpu.max").write_text("400000 100000\n")
    (tmp_path / "v2" / "slurm" / "job_1" / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "self_v2").write_text("0::/slurm/job_1\n")
    assert threads.cgroup_cpu_quota(str(tmp_path / "v2"), str(tmp_path / "self_v2")) == 1.5
    # cgroup v1 inside a container's namespace: the listed path does not exist there, its root holds the limit
    (tmp_path / "v1" / "cpu").mkdir(parents=True)
    (tmp_path / "v1" / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "v1" / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "self_v1").write_text("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    assert threads.cgroup_cpu_quota(str(tmp_path / "v1"), str(tmp_path / "self_v1")) == 2.0
    (tmp_path / "v1" / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # no limit
    assert threads.cgroup_cpu_quota(str(tmp_path / "v1"), str(tmp_path / "self_v1")) is None
    assert threads.cgroup_cpu_quota(str(tmp_path / "missing"), str(tmp_path / "missing")) is None

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(threads, "idle_cores", lambda interval=0.1: 60.0)  # a quiet 64-core node
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: 1.5)  # ... of which this job may use 1.5
    assert threads.usable_cores() == 1
    assert threads.choose_threads("auto", 11_000_000, in_sweep=False) == 1
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: 8.0)
    assert threads.choose_threads("auto", 11_000_000, in_sweep=False) == 8
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: None)
    assert threads.choose_threads("auto", 11_000_000, in_sweep=False) == 60


def test_the_run_records_the_thread_count_it_used(tmp_path):
    r = run_continual("stream=split_digits", "threads=2", "++stream.train_per_class=5", "++stream.test_per_class=5",
                      "log.console=false", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "summary.json").read_text())["threads"] == 2


def test_the_cuda_generator_is_restored_for_the_run_device_only():
    from continual.checkpoint import cuda_state_to_restore, rng_state

    one, two = torch.ones(4, dtype=torch.uint8), torch.zeros(4, dtype=torch.uint8)
    assert cuda_state_to_restore(None, 0) is None and cuda_state_to_restore([], 0) is None
    assert cuda_state_to_restore(one, 3) is one  # this format: the run device's state
    assert cuda_state_to_restore([one, two], 1) is two  # an older checkpoint from a 2-GPU process
    assert cuda_state_to_restore([one, two], 5) is one  # restored where fewer GPUs are seen: no IndexError
    if not torch.cuda.is_available():
        assert rng_state()["cuda"] is None
