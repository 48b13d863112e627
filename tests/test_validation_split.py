"""stream.val_fraction: a validation set held out of each task's training data, the same for
every run of a seed, never trained on, scored like the test set, and what sweeps optimise."""

import json

import pytest
import torch

from continual import streams
from continual.config import EvalConfig
from continual.models import build_model
from continual.runner import Runner
from continual.strategies.naive import Naive
from continual.types import ConfigError


def _split_digits(seed=0, val_fraction=0.2, **kw):
    return streams.class_incremental("digits", n_tasks=5, batch_size=10, seed=seed, val_fraction=val_fraction, **kw)


def test_the_split_is_the_same_for_a_seed_and_differs_between_seeds():
    a, b, c = _split_digits(0), _split_digits(0), _split_digits(1)
    for ta, tb, tc in zip(a.tasks, b.tasks, c.tasks):
        assert torch.equal(ta.val_idx, tb.val_idx) and torch.equal(ta.train_idx, tb.train_idx)
        assert not torch.equal(ta.val_idx, tc.val_idx)


def test_each_task_holds_out_its_share_and_keeps_the_rest():
    full, held = _split_digits(val_fraction=0.0), _split_digits(val_fraction=0.2)
    for whole, t in zip(full.tasks, held.tasks):
        n = whole.train_idx.numel()
        assert t.val_idx.numel() == round(0.2 * n)
        assert sorted(t.val_idx.tolist() + t.train_idx.tolist()) == sorted(whole.train_idx.tolist())
        assert set(t.val_idx.tolist()).isdisjoint(t.train_idx.tolist())
    assert len(held) == len(full) - sum(t.val_idx.numel() for t in held.tasks)


def test_the_schedule_never_holds_a_validation_sample():
    for stream in (_split_digits(passes=2, blurry=0.2),
                   streams.domain_incremental("digits", n_tasks=3, kind="permuted", batch_size=10,
                                              val_fraction=0.1)):
        held = set(torch.cat([t.val_idx for t in stream.tasks]).tolist())
        assert held and held.isdisjoint(stream.order.tolist())


def test_tasks_over_one_pool_share_one_split():
    stream = streams.domain_incremental("digits", n_tasks=3, kind="permuted", batch_size=10, val_fraction=0.1)
    assert all(torch.equal(t.val_idx, stream.tasks[0].val_idx) for t in stream.tasks)


def test_the_validation_set_comes_from_the_training_pool():
    stream = _split_digits()
    x, y = stream.eval_set(2, split="val")
    idx = stream.tasks[2].val_idx
    assert torch.equal(x, stream.dataset.x_train[idx]) and torch.equal(y, stream.dataset.y_train[idx])
    assert set(y.tolist()) <= set(stream.tasks[2].classes)


@pytest.mark.parametrize("bad", [-0.1, 1.0])
def test_a_fraction_outside_0_1_is_refused(bad):
    with pytest.raises(ConfigError, match="val_fraction"):
        _split_digits(val_fraction=bad)


def test_asking_for_a_validation_set_without_a_split_says_how_to_get_one():
    with pytest.raises(ConfigError, match="val_fraction > 0"):
        _split_digits(val_fraction=0.0).eval_set(0, split="val")


class _Recording(Naive):
    """Naive that remembers every training index it was given."""

    seen: list

    def observe(self, batch):
        self.seen.append(batch.index.clone())
        return super().observe(batch)


def _run(tmp_path, val_fraction):
    torch.manual_seed(0)
    stream = _split_digits(val_fraction=val_fraction)
    strategy = _Recording(build_model("mlp", stream.input_shape, stream.n_classes, hidden=16), lr=0.1)
    strategy.seen = []
    summary = Runner(stream, strategy, out_dir=str(tmp_path), seed=0, eval=EvalConfig(every=20)).run()
    return stream, strategy, summary


def test_a_run_never_trains_on_validation_samples_and_reports_val_metrics(tmp_path):
    stream, strategy, summary = _run(tmp_path, 0.2)
    trained = set(torch.cat(strategy.seen).tolist())
    held = set(torch.cat([t.val_idx for t in stream.tasks]).tolist())
    assert trained.isdisjoint(held) and len(trained) == len(stream)
    assert 0.0 <= summary["val_acc"] <= 1.0 and summary["val_forgetting"] is not None
    assert summary["objective"] == "val_acc"
    evals = [json.loads(line) for line in open(tmp_path / "metrics.jsonl") if '"eval"' in line]
    assert all("val_acc" in e and "val_acc_task_4" in e for e in evals)
    # the last eval point is the end of the stream: its val_acc is the summary's
    assert evals[-1]["val_acc"] == pytest.approx(summary["val_acc"])


def test_without_a_split_the_objective_stays_the_test_score(tmp_path):
    _, _, summary = _run(tmp_path, 0.0)
    assert "val_acc" not in summary and summary["objective"] == "score"


def test_the_optuna_example_optimises_validation_accuracy():
    from omegaconf import OmegaConf

    from continual.conf import __file__ as conf_init

    conf = OmegaConf.load(conf_init.replace("__init__.py", "experiment/optuna_example.yaml"))
    assert conf.stream.val_fraction > 0 and conf.hydra.sweeper.direction == "maximize"
