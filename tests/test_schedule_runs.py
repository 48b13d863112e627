"""Learning-rate schedules in runs: any gradient strategy takes one, driven by the runner.

The schedule group's values are multiples of the strategy's lr; ``constant`` (the default)
leaves results bit-identical; task-free streams refuse schedules that restart at every task;
the infinite schedule's anneal branch is the model scored at task ends and survives a SIGKILL.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _cli import run_continual, run_records

from continual import streams
from continual.config import CheckpointConfig, LogConfig
from continual.experiment import build_schedule_from_config
from continual.models import build_model
from continual.runner import Runner
from continual.strategies.base import SupervisedStrategy
from continual.strategies.er import ER
from continual.strategies.naive import Naive
from continual.types import ConfigError

SCHEDULES = {
    "constant": {"_target_": "continual.strategies.schedules.ConstantSchedule", "eta": 1.0},
    "cosine": {"_target_": "continual.strategies.schedules.CosineSchedule", "eta_max": 1.0, "eta_min": 0.1},
    "repeated_cosine": {"_target_": "continual.strategies.schedules.RepeatedCosineSchedule",
                        "eta_max": 1.0, "eta_min": 0.1},
    "wsd": {"_target_": "continual.strategies.schedules.WSDSchedule", "eta_max": 1.0, "eta_min": 0.1},
    "infinite": {"_target_": "continual.strategies.schedules.InfiniteSchedule", "eta_max": 1.0,
                 "eta_min": 0.1, "eta_const": 0.55},
}
LR = 0.05


def _stream(**presentation):
    return streams.class_incremental("digits", n_tasks=5, batch_size=10, seed=0, **presentation)


def _run(tmp_path, schedule_cfg, strategy_cls=ER, stream=None, **strategy_options):
    stream = stream or _stream()
    torch.manual_seed(0)
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=32)
    strategy = strategy_cls(model, lr=LR, **strategy_options)
    schedule = build_schedule_from_config(schedule_cfg, stream) if schedule_cfg else None
    runner = Runner(stream, strategy, out_dir=str(tmp_path), schedule=schedule,
                    checkpoint=CheckpointConfig(enabled=False), log=LogConfig(every=1))
    summary = runner.run()
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return summary, records, runner


def _lrs(records):
    return [r["lr"] for r in records if r["type"] == "step"]


def _matrix(runner, kind="task_end"):
    return np.array([r.scores for r in runner.state.rows if r.kind in ("init", kind)])


def test_constant_is_bit_identical_to_no_schedule(tmp_path):
    _, rec_none, a = _run(tmp_path / "none", None)
    _, rec_const, b = _run(tmp_path / "constant", SCHEDULES["constant"])
    assert np.array_equal(_matrix(a), _matrix(b))
    assert [r.get("loss") for r in rec_none] == [r.get("loss") for r in rec_const]
    assert set(_lrs(rec_const)) == {LR}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_er_follows_each_schedule_in_multiples_of_its_lr(tmp_path, name):
    stream = _stream()
    schedule = build_schedule_from_config(SCHEDULES[name], stream)
    _, records, _ = _run(tmp_path, SCHEDULES[name], stream=stream)
    lrs = _lrs(records)  # log_every=1: the lr of every step
    assert len(lrs) == stream.n_steps()
    assert lrs == pytest.approx([LR * schedule.lr(s) for s in range(stream.n_steps())])
    if name != "constant":
        assert min(lrs) < LR * 0.6 and max(lrs) <= LR * 1.0000001


def test_repeated_cosine_restarts_at_every_task(tmp_path):
    stream = _stream()
    _, records, _ = _run(tmp_path, SCHEDULES["repeated_cosine"], stream=stream)
    lrs = _lrs(records)
    starts = np.cumsum([0, *stream.segment_steps()[:-1]])
    for s in starts[1:]:
        assert lrs[s] > lrs[s - 1]  # re-warmed after the previous task's decay


def test_a_plugin_subclass_is_scheduled_without_code_of_its_own(tmp_path):
    class Theirs(SupervisedStrategy):  # what a plugin writes: its own observe, no lr code
        def observe(self, batch):
            loss = torch.nn.functional.cross_entropy(self.model(batch.x), batch.y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            return {"loss": loss.detach()}

    _, records, _ = _run(tmp_path, SCHEDULES["cosine"], strategy_cls=Theirs)
    lrs = _lrs(records)
    assert lrs[-1] == pytest.approx(LR * 0.1) and max(lrs) == pytest.approx(LR, rel=1e-3)


def test_a_strategy_without_optimiser_refuses_a_schedule(tmp_path):
    class NoOptimiser(Naive):
        def optimizers(self):
            return []

    with pytest.raises(ConfigError, match="no optimiser to drive"):
        _run(tmp_path, SCHEDULES["cosine"], strategy_cls=NoOptimiser)


@pytest.mark.parametrize("name", ["repeated_cosine", "wsd"])
def test_task_free_streams_refuse_schedules_that_restart_at_every_task(name):
    stream = _stream(boundaries="hidden")
    with pytest.raises(ConfigError, match="hides its task boundaries"):
        build_schedule_from_config(SCHEDULES[name], stream)


@pytest.mark.parametrize("name", ["constant", "cosine", "infinite"])
def test_task_free_streams_take_schedules_over_the_whole_stream(tmp_path, name):
    stream = _stream(boundaries="hidden")
    schedule = build_schedule_from_config(SCHEDULES[name], stream)
    assert schedule.task_steps in (None, [stream.n_steps()])
    _run(tmp_path, SCHEDULES[name], stream=stream)


def test_wsd_once_over_the_stream_runs_task_free(tmp_path):
    stream = _stream(boundaries="hidden")
    _run(tmp_path, {**SCHEDULES["wsd"], "per_task": False}, stream=stream)


def test_infinite_scores_the_annealed_copy_at_task_ends_and_keeps_the_main_trajectory(tmp_path):
    _, rec, with_branch = _run(tmp_path / "branch", SCHEDULES["infinite"])
    _, _, without = _run(tmp_path / "none", {**SCHEDULES["infinite"], "anneal_fraction": 0.0})
    kinds = [r.kind for r in with_branch.state.rows]
    assert kinds.count("task_end") == kinds.count("task_end_main") == 5
    # the main trajectory is the same with or without the branch beside it (ER draws from its
    # buffer's own generator, which the copy does not share)
    main = np.array([r.scores for r in with_branch.state.rows if r.kind == "task_end_main"])
    plain = np.array([r.scores for r in without.state.rows if r.kind == "task_end"])
    assert np.array_equal(main, plain)
    deployed = np.array([r.scores for r in with_branch.state.rows if r.kind == "task_end"])
    assert not np.array_equal(deployed, main)  # the anneal changed the scored model
    assert _lrs(rec)[-1] == pytest.approx(LR * 0.55)  # the main trajectory's lr is never annealed


@pytest.mark.slow
def test_schedule_from_the_cli_on_every_gradient_strategy(tmp_path):
    for strategy in ("naive", "er", "joint", "ltm_replay"):
        out = tmp_path / strategy
        r = run_continual("stream=split_digits", f"strategy={strategy}", "schedule=cosine", "log.console=false",
                          "++stream.train_per_class=10", "++stream.test_per_class=5", f"hydra.run.dir={out}",
                          cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["schedule"] == "cosine"
        lrs = [json.loads(x)["lr"] for x in (out / "metrics.jsonl").read_text().splitlines()
               if json.loads(x)["type"] == "step"]
        assert lrs[-1] < lrs[0]


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "options"), [
    ("onpro", ["strategy.rotations=4", "strategy.proj_dim=32", "model.hidden=32"]),
    ("tame", ["strategy.window=10", "strategy.selector_epochs=2", "strategy.prune_epochs=1"]),
])
def test_onpro_and_tames_experts_follow_the_schedule(tmp_path, strategy, options):
    r = run_continual("stream=split_digits", f"strategy={strategy}", *options, "schedule=cosine", "log.console=false",
                      "++stream.train_per_class=20", "++stream.test_per_class=5", f"hydra.run.dir={tmp_path}",
                      cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    lrs = [json.loads(x)["lr"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
           if json.loads(x)["type"] == "step"]
    assert lrs[-1] < 0.2 * lrs[0]  # cosine: from the peak to a tenth of it


@pytest.mark.slow
def test_cli_refuses_repeated_cosine_on_a_task_free_stream(tmp_path):
    r = run_continual("stream=taskfree_split_fashion_mnist", "schedule=repeated_cosine", "log.console=false",
                      "++stream.train_per_class=5", "++stream.test_per_class=5", f"hydra.run.dir={tmp_path}",
                      cwd=tmp_path)
    assert r.returncode == 2
    assert "hides its task boundaries" in r.stderr


@pytest.mark.slow
def test_sigkill_inside_an_anneal_branch_resumes_exactly(tmp_path):
    # split_digits: tasks of [29, 29, 30, 29, 29] steps; the infinite schedule's branch trains
    # over the last 3 steps of each (task 1: steps 56-58). A checkpoint at step 57 holds the
    # branch half-way; the process is killed after step 58, before the task-end evaluation.
    args = ["stream=split_digits", "strategy=er", "schedule=infinite", "model.hidden=32", "log.console=false",
            "log.every=1", "checkpoint.every=57", "checkpoint.min_interval_s=0"]
    ref = run_continual(*args, f"hydra.run.dir={tmp_path / 'ref'}", cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = run_continual(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, fault="step:58")
    assert killed.returncode == -9
    newest = max((tmp_path / "run" / "checkpoints").iterdir(), key=lambda p: p.stat().st_mtime)
    assert "57" in newest.name
    resumed = run_continual(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr
    assert run_records(tmp_path / "run") == run_records(tmp_path / "ref")
