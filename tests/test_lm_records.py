"""Language-model runs as LM researchers read them: tokens as the x-axis, the infinite
schedule's two task-end rows told apart (records, loggers, figures), the console's label."""

from __future__ import annotations

import json

import pytest
from _scripted import Idle, Linear, ScriptedLossStream

from continual.config import CheckpointConfig, LogConfig
from continual.loggers import scalars, sweep_job_suffix
from continual.runner import Runner
from continual.strategies.schedules import InfiniteSchedule

NO_CHECKPOINTS = CheckpointConfig(enabled=False)


def _records(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_records_and_summary_count_the_tokens_trained(tmp_path):
    # 2 tasks x 2 steps x (2 rows x 3 tokens, none of them padding): 6 tokens a step
    summary = Runner(ScriptedLossStream(), Idle(), str(tmp_path), checkpoint=NO_CHECKPOINTS,
                     log=LogConfig(every=1)).run()
    assert summary["tokens_seen"] == 24
    assert summary["tokens_per_second"] == pytest.approx(24 / summary["train_seconds"])
    records = _records(tmp_path)
    assert [r["tokens_seen"] for r in records if r["type"] == "step"] == [6, 12, 18, 24]
    assert [(r["kind"], r["tokens_seen"]) for r in records if r["type"] == "eval"] == [
        ("init", 0), ("task_end", 12), ("task_end", 24)]


def test_padding_tokens_are_not_counted(tmp_path):
    stream = ScriptedLossStream()
    batch = next(stream.batches(stream.segments[0]))
    batch.y[0, 1:] = -100  # two of the six labels are padding
    assert int(stream.batch_tokens(batch)) == 4


def test_a_classification_run_records_no_tokens(tmp_path):
    from continual import streams
    from continual.models import build_model
    from continual.strategies.naive import Naive

    stream = streams.class_incremental("digits", n_tasks=5, batch_size=10, train_per_class=10, test_per_class=5)
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=8)
    summary = Runner(stream, Naive(model), str(tmp_path), checkpoint=NO_CHECKPOINTS).run()
    assert "tokens_seen" not in summary and all("tokens_seen" not in r for r in _records(tmp_path))


def _infinite_run(tmp_path, losses):
    # anneal_fraction 0.5 of 2-step tasks: the second step of each task trains the annealed copy too
    schedule = InfiniteSchedule(eta_max=1.0, eta_const=0.5, eta_min=0.1, anneal_fraction=0.5, task_steps=[2, 2])
    return Runner(ScriptedLossStream(losses), Linear(lr=0.1), str(tmp_path), checkpoint=NO_CHECKPOINTS,
                  log=LogConfig(every=1), schedule=schedule).run()


def test_the_annealed_copys_lr_is_logged_beside_the_main_lr(tmp_path):
    _infinite_run(tmp_path, [(5.0, 5.0)] * 5)
    steps = [r for r in _records(tmp_path) if r["type"] == "step"]
    # a 1-step branch anneals straight to eta_min: 0.1 x 0.1
    assert [r.get("lr_anneal") for r in steps] == [None, pytest.approx(0.01), None, pytest.approx(0.01)]
    # the main trajectory: warm-up is step 0 (1 step), cool-down step 1 starts at eta_max (x = 0),
    # then eta_const: 0.1 x (1.0, 1.0, 0.5, 0.5)
    assert [r["lr"] for r in steps] == pytest.approx([0.1, 0.1, 0.05, 0.05])


def test_the_main_trajectorys_task_end_rows_are_a_line_of_their_own(tmp_path):
    assert scalars({"type": "eval", "kind": "task_end_main", "score": 2.0}) == {"eval_main/score": 2.0}
    assert scalars({"type": "eval", "kind": "task_end", "score": 2.0}) == {"eval/score": 2.0}
    # init, then per task: the main trajectory's row and the annealed copy's
    _infinite_run(tmp_path, [(5.0, 5.0), (4.0, 4.5), (3.0, 4.4), (3.5, 2.0), (3.2, 1.5)])
    from continual.report.figures import _curves
    from continual.report.runs import find_runs, group_runs

    group = group_runs(find_runs(tmp_path))[0]
    x, deployed, _ = _curves(group, "score")
    _, main, _ = _curves(group, "score", main=True)
    assert x.tolist() == [0, 12, 24]  # tokens seen
    assert deployed.tolist() == pytest.approx([5.0, 3.0, (3.2 + 1.5) / 2])  # the annealed copy's rows
    assert main.tolist() == pytest.approx([5.0, 4.0, (3.5 + 2.0) / 2])  # score: tasks started so far


def test_the_console_labels_the_eval_score_by_its_kind(tmp_path):
    from continual.console import ConsoleLogger

    console = ConsoleLogger()
    console.start(Runner(ScriptedLossStream(), Idle(), str(tmp_path), checkpoint=NO_CHECKPOINTS))
    texts = [getattr(c, "text_format", "") for c in console.progress_bar.columns]
    console.progress_bar.stop()
    assert any(t.startswith("eval loss") for t in texts) and not any(t.startswith("eval acc") for t in texts)
    assert any(t.startswith("train loss") for t in texts)


def test_sweep_job_folders_name_the_other_keys_the_sweep_varies(tmp_path):
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - stream=corpora\n    - schedule=constant,infinite\n    - seed=0,1\n")
    job = ["stream=corpora", "schedule=infinite", "seed=1"]
    assert sweep_job_suffix(str(tmp_path), job) == "_schedule=infinite"
    (tmp_path / "multirun.yaml").write_text("hydra:\n  overrides:\n    task:\n    - seed=0,1\n")
    assert sweep_job_suffix(str(tmp_path), ["seed=1", "strategy.lr=0.1"]) == ""
    assert sweep_job_suffix(str(tmp_path / "nowhere"), job) == ""  # not a basic sweeper's sweep


def test_the_report_labels_a_language_streams_score_by_its_kind(tmp_path):
    from continual.report import write_report

    Runner(ScriptedLossStream([(5.0, 5.0), (2.0, 4.0), (3.0, 1.0)]), Idle(), str(tmp_path / "run"),
           checkpoint=NO_CHECKPOINTS).run()
    markdown = write_report(tmp_path / "run", out=tmp_path / "report", plots=False)["markdown"]
    header = next(line for line in markdown.splitlines() if line.startswith("| stream |"))
    assert "| score (loss) |" in header and "| acc |" not in header
    runs_header = next(line for line in markdown.splitlines() if line.startswith("| run |"))
    assert "| score (loss) |" in runs_header
