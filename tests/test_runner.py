"""The runner: records, metrics wiring, test-then-train, determinism."""

import json

import pytest
import torch

from continual import streams
from continual.config import CheckpointConfig, EvalConfig, LogConfig
from continual.models import build_model
from continual.runner import TIMING_KEYS, Runner
from continual.strategies.er import ER
from continual.strategies.joint import Joint
from continual.strategies.naive import Naive
from continual.types import Batch, Strategy


def _run(tmp_path, strategy_cls=Naive, seed=0, stream=None, **runner_kw):
    torch.manual_seed(seed)
    stream = stream or streams.class_incremental("digits", n_tasks=5, batch_size=10, seed=seed)
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=32)
    strategy = strategy_cls(model, lr=0.1)
    out = tmp_path / f"{strategy_cls.__name__}_{seed}"
    return Runner(stream, strategy, out_dir=str(out), seed=seed, **runner_kw).run(), out


def test_run_folder_holds_the_records(tmp_path):
    summary, out = _run(tmp_path)
    for key in ("acc", "aia", "forgetting", "bwt", "fwt", "online_acc", "stability_gap", "train_seconds",
                "samples_per_second", "peak_rss_mb", "params"):
        assert key in summary
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["kind"] for r in evals] == ["init"] + ["task_end"] * 5
    assert all(f"acc_task_{t}" in evals[-1] for t in range(5))
    steps = [r for r in records if r["type"] == "step"]
    assert steps and {"loss", "online_acc", "samples_seen", "true_task"} <= set(steps[0])
    rows = (out / "scores.csv").read_text().splitlines()
    assert rows[0].startswith("step,samples_seen,kind,task_0") and len(rows) == 7
    assert json.loads((out / "summary.json").read_text())["acc"] == summary["acc"]


def test_naive_forgets_and_replay_forgets_less(tmp_path):
    naive, _ = _run(tmp_path, Naive)
    er, _ = _run(tmp_path, ER)
    assert naive["forgetting"] > 0.5
    assert er["forgetting"] < naive["forgetting"] and er["acc"] > naive["acc"]


def test_joint_is_an_upper_bound_on_naive(tmp_path):
    joint, _ = _run(tmp_path, Joint)
    naive, _ = _run(tmp_path, Naive)
    assert joint["acc"] > naive["acc"] + 0.2


def test_periodic_evaluation_and_stability_gap(tmp_path):
    summary, out = _run(tmp_path, eval=EvalConfig(every=5))
    kinds = [json.loads(line)["kind"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in line]
    assert kinds.count("periodic") == summary["steps"] // 5
    assert summary["stability_gap"] > 0  # naive drops old tasks right after each boundary


class _CountsCalls(Strategy):
    """Predicts class 0 always and records what it was shown."""

    def __init__(self, n_classes):
        self.n_classes, self.seen_tasks, self.calls = n_classes, [], []

    def observe(self, batch: Batch):
        self.calls.append("observe")
        self.seen_tasks.append(batch.task)
        return {}

    def predict(self, x, task=None):
        self.calls.append("predict")
        out = torch.zeros(x.shape[0], self.n_classes)
        out[:, 0] = 1
        return out


@pytest.mark.parametrize(("min_interval_s", "expected"), [(0.0, 4), (3600.0, 0)])
def test_task_end_checkpoints_wait_for_the_minimum_interval(tmp_path, min_interval_s, expected):
    # 5 tasks: a checkpoint after each of the first 4 task ends, unless the newest is too young
    _, out = _run(tmp_path, checkpoint=CheckpointConfig(keep=10, min_interval_s=min_interval_s))
    assert len(list((out / "checkpoints").glob("ckpt-*.pt"))) == expected


def test_online_accuracy_scores_each_batch_before_training(tmp_path):
    s = streams.class_incremental("digits", n_tasks=5, batch_size=10)
    strat = _CountsCalls(s.n_classes)
    summary = Runner(s, strat, out_dir=str(tmp_path)).run()
    first_observe = strat.calls.index("observe")
    assert strat.calls[first_observe - 1] == "predict"
    share_of_zeros = (s.dataset.y_train == 0).float().sum().item() / len(s)
    assert summary["online_acc"] == pytest.approx(share_of_zeros)


def test_hidden_boundaries_hide_task_ids_and_hooks(tmp_path):
    s = streams.class_incremental("digits", n_tasks=5, batch_size=10, boundaries="hidden")

    class NoHooks(_CountsCalls):
        def on_task_start(self, info):
            raise AssertionError("on_task_start called on a task-free stream")

    strat = NoHooks(s.n_classes)
    Runner(s, strat, out_dir=str(tmp_path)).run()
    assert all(t is None for t in strat.seen_tasks)


def test_task_incremental_protocol_masks_logits_to_the_task(tmp_path):
    s = streams.task_incremental(dataset="digits", n_tasks=5, batch_size=10)
    summary = Runner(s, _CountsCalls(s.n_classes), out_dir=str(tmp_path)).run()
    # always class 0: class-IL accuracy ~ 0.1 * task 0; task-IL: first class of each task ~ 0.5
    assert summary["protocol"] == "task_il"
    assert summary["acc_task_il"] == pytest.approx(0.5, abs=0.05)
    assert summary["acc_class_il"] < 0.15


def _strip(summary):
    return {k: v for k, v in summary.items() if k not in TIMING_KEYS}


def test_same_seed_gives_identical_summary(tmp_path):
    a, _ = _run(tmp_path / "a", ER, seed=3)
    b, _ = _run(tmp_path / "b", ER, seed=3)
    assert _strip(a) == _strip(b)


def test_different_seeds_differ(tmp_path):
    a, _ = _run(tmp_path, ER, seed=1)
    b, _ = _run(tmp_path, ER, seed=2)
    assert a["acc"] != b["acc"]


def test_periodic_evaluation_skips_unseen_tasks_unless_asked(tmp_path):
    full, full_out = _run(tmp_path / "full", eval=EvalConfig(every=5, unseen=True))
    seen_only, out = _run(tmp_path / "seen", eval=EvalConfig(every=5))
    assert ",periodic," in (full_out / "scores.csv").read_text()
    assert "nan" not in (full_out / "scores.csv").read_text()
    assert seen_only["acc"] == full["acc"] and seen_only["stability_gap"] == full["stability_gap"]
    rows = (out / "scores.csv").read_text().splitlines()
    first_periodic = next(r for r in rows if ",periodic," in r)
    assert first_periodic.endswith("nan,nan,nan,nan")


@pytest.mark.parametrize(("on_nan", "checked_each_step"), [("stop", False), ("skip", True)])
def test_nan_checks_sync_per_step_only_when_a_batch_must_be_skipped(tmp_path, on_nan, checked_each_step):
    from continual.runner import RunStopped

    torch.manual_seed(0)
    stream = streams.class_incremental("digits", n_tasks=5, batch_size=10, seed=0)
    strategy = Naive(build_model("mlp", stream.input_shape, stream.n_classes, hidden=32), lr=1e12)
    runner = Runner(stream, strategy, out_dir=str(tmp_path), on_nan=on_nan, log=LogConfig(every=10),
                    eval=EvalConfig(every=3))
    assert strategy.check_each_step is checked_each_step
    if on_nan == "skip":
        assert runner.run()["skipped_nonfinite_batches"] > 0
        return
    # unchecked steps: the NaN is caught at the next eval point (step 3), before the log window ends
    with pytest.raises(RunStopped, match=r"loss was nan in the steps up to 3 \(strategy Naive\)"):
        runner.run()
    evals = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in evals if r["type"] == "eval"] == ["init"]


def test_a_nan_in_training_done_at_a_task_end_stops_the_run_with_the_usual_message(tmp_path):
    from continual.runner import RunStopped
    from continual.strategies.naive import Naive
    from continual.types import NonFiniteLoss

    class NaNAtTaskEnd(Naive):
        def on_task_end(self, info):
            raise NonFiniteLoss("loss is nan in a refit")

    stream = streams.class_incremental("digits", n_tasks=5, batch_size=10)
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=16)
    with pytest.raises(RunStopped, match="non-finite loss: loss is nan in a refit in the end of task 0"):
        Runner(stream, NaNAtTaskEnd(model), out_dir=str(tmp_path), checkpoint=CheckpointConfig(enabled=False)).run()


def test_task_il_and_class_il_accuracy_are_each_their_own(tmp_path):
    # a learner that always says class 0: class-IL, only task 0's class 0 is right (half of task 0,
    # balanced test sets): mean over 5 tasks 0.5 / 5 = 0.1; task-IL, argmax over each task's two
    # classes picks one of them: half of every task, 0.5
    s = streams.class_incremental("digits", n_tasks=5, batch_size=10, train_per_class=10, test_per_class=5)
    summary = Runner(s, _CountsCalls(s.n_classes), out_dir=str(tmp_path)).run()
    assert summary["acc_class_il"] == pytest.approx(0.1)
    assert summary["acc_task_il"] == pytest.approx(0.5)
    assert summary["acc"] == pytest.approx(0.1)  # no task labels: the headline is class-IL
