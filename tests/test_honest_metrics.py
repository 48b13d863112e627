"""Numbers a user can trust: task-end rows defined once, null for what was not measured, each
step evaluated once, the records carrying what the docs promise, timing that counts all training."""

from __future__ import annotations

import json
import time

import pytest

from continual import streams
from continual.config import CheckpointConfig, EvalConfig
from continual.models import build_model
from continual.runner import Runner
from continual.strategies.naive import Naive


def _run(tmp_path, stream, strategy_cls=Naive, **runner_options):
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=16)
    runner = Runner(stream, strategy_cls(model), out_dir=str(tmp_path), **runner_options,
                    checkpoint=CheckpointConfig(enabled=False))
    summary = runner.run()
    evals = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["type"] == "eval"]
    return summary, evals, runner


def test_a_recurring_stream_reports_one_forgetting_everywhere(tmp_path):
    stream = streams.class_incremental("digits", n_tasks=2, repeats=2, batch_size=10, seed=0)
    summary, evals, runner = _run(tmp_path, stream)
    assert evals[-1]["forgetting"] == pytest.approx(summary["forgetting"])
    assert evals[-1]["bwt"] == pytest.approx(summary["bwt"])
    rows = runner.metric_rows()
    assert len(rows) == 2 and rows[-1] == len(runner.state.rows) - 1  # first pass; the end stands for its end


def test_stability_gap_is_null_without_periodic_eval_points(tmp_path):
    stream = streams.class_incremental("digits", n_tasks=5, batch_size=10, seed=0)
    summary, _, _ = _run(tmp_path / "ends", stream)
    assert summary["stability_gap"] is None
    summary, _, _ = _run(tmp_path / "periodic", stream, eval=EvalConfig(every=5))
    assert isinstance(summary["stability_gap"], float)


def test_a_step_is_evaluated_once_when_eval_every_divides_the_task(tmp_path):
    stream = streams.class_incremental("digits", n_tasks=5, batch_size=10, seed=0)
    steps = stream.segment_steps()[0]  # 29: eval.every=29 lands on task 0's last step
    _, evals, _ = _run(tmp_path, stream, eval=EvalConfig(every=steps))
    at = [(e["step"], e["kind"]) for e in evals]
    assert len({s for s, _ in at}) == len(at), at
    assert (steps, "task_end") in at and (steps, "periodic") not in at


def test_eval_records_carry_class_il_and_task_il_accuracy(tmp_path):
    stream = streams.class_incremental("digits", n_tasks=5, batch_size=10, seed=0)
    _, evals, _ = _run(tmp_path, stream)
    assert all({"acc_class_il", "acc_task_il"} <= set(e) for e in evals)
    assert all(e["acc_task_il"] >= e["acc_class_il"] for e in evals[1:])


class _SlowRefit(Naive):
    def on_task_end(self, info):
        time.sleep(0.1)  # stands for training done at a task end (e.g. Avalanche's experience protocol)


def test_train_seconds_count_training_done_in_hooks_and_eval_is_apart(tmp_path):
    stream = streams.class_incremental("digits", n_tasks=5, batch_size=10, seed=0)
    summary, _, _ = _run(tmp_path, stream, strategy_cls=_SlowRefit)
    assert summary["train_seconds"] >= 0.5
    assert summary["eval_seconds"] > 0


def test_peak_rss_is_the_runs_own_where_the_kernel_allows(tmp_path):
    stream = streams.class_incremental("digits", n_tasks=5, batch_size=10, seed=0)
    summary, _, _ = _run(tmp_path, stream)
    assert summary["peak_rss_scope"] in ("run", "process") and summary["peak_rss_mb"] > 0
