"""Avalanche interop: the strategy adapter under our Runner, and streams to/from Avalanche."""

import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from continual import metrics as M
from continual import streams
from continual.models import build_model
from continual.runner import Runner
from continual.strategies.avalanche import AvalancheStrategy, SCRAugment
from continual.streams.avalanche import from_avalanche, to_avalanche
from continual.testing import check_strategy
from continual.types import ConfigError

REPO = Path(__file__).resolve().parents[1]
FAST = ["stream=split_digits", "model.hidden=32", "log.console=false"]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def _digits(**presentation):
    return streams.class_incremental("digits", n_tasks=5, batch_size=10, **presentation)


def _model(stream, hidden=32):
    torch.manual_seed(0)
    return build_model("mlp", stream.input_shape, stream.n_classes, hidden=hidden)


# ---------------------------------------------------------------------- the strategy adapter
def test_avalanche_naive_through_the_adapter_scores_exactly_as_our_naive(tmp_path):
    from continual.strategies.naive import Naive

    s = _digits()
    ours = Runner(s, Naive(_model(s), lr=0.05), out_dir=str(tmp_path / "ours")).run()
    avl = AvalancheStrategy(_model(s), strategy="naive", protocol="online", lr=0.05)
    theirs = Runner(s, avl, out_dir=str(tmp_path / "avl")).run()
    assert theirs["final_task_acc"] == ours["final_task_acc"]
    assert theirs["online_acc"] == ours["online_acc"]


def test_the_adapter_meets_the_strategy_contract_and_never_reads_hidden_tasks():
    results = check_strategy(AvalancheStrategy, {"strategy": "naive", "protocol": "online"})
    assert set(results.values()) == {"passed"}


@pytest.mark.slow
def test_an_avalanche_strategy_runs_end_to_end_through_the_cli(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "continual", *FAST, "strategy=avl_er_ace",
         f"hydra.run.dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "No loggers specified" not in r.stderr  # Avalanche's chatter is not the user's business
    assert "Call to deprecated function update" not in r.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["strategy"] == "avl_er_ace" and summary["avalanche_strategy"] == "er_ace"
    assert summary["steps"] == streams.class_incremental("digits", n_tasks=5).n_steps()
    assert 0.0 <= summary["acc"] <= 1.0 and len(summary["final_task_acc"]) == 5


def test_a_per_task_avalanche_strategy_runs_from_its_config(tmp_path):
    from hydra import compose, initialize_config_module

    from continual.config import register_configs
    from continual.experiment import run_experiment

    register_configs()
    with initialize_config_module(config_module="continual.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*FAST, "strategy=avl_lwf"])
    summary = run_experiment(cfg, out_dir=str(tmp_path))
    assert summary["avalanche_protocol"] == "experience" and summary["steps"] > 0
    assert summary["online_acc"] < 0.2  # nothing is learnt inside a task under this protocol
    assert summary["plasticity"] > 0.5  # but each task is learnt by its end


@pytest.mark.parametrize("name", ["naive", "er_ace"])
def test_a_short_run_emits_neither_of_avalanches_own_warnings(tmp_path, name):
    s = _digits()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        avl = AvalancheStrategy(_model(s), strategy=name, protocol="online", lr=0.05)
        Runner(s, avl, out_dir=str(tmp_path)).run()
    chatter = [str(w.message) for w in caught if "No loggers specified" in str(w.message)
               or "Call to deprecated function update" in str(w.message)]
    assert chatter == []


def test_other_warnings_raised_inside_avalanche_still_reach_the_user():
    class WarnsOnce:
        def after_training_iteration(self, strategy, **kwargs):
            warnings.warn("a plugin's own warning", RuntimeWarning, stacklevel=1)

    s = _digits()
    avl = AvalancheStrategy(_model(s), strategy="naive", protocol="online", lr=0.05)
    avl.avl.plugins.append(WarnsOnce())
    with pytest.warns(RuntimeWarning, match="a plugin's own warning"):
        avl.observe(s.batch(0, 10))


def _nan_task_end(check_each_step: bool):
    from continual.types import TaskInfo

    s = _digits()
    avl = AvalancheStrategy(_model(s), strategy="naive", protocol="experience", lr=0.05)
    avl.check_each_step = check_each_step  # the runner sets False under on_nan=stop
    seg = s.segments[0]
    info = TaskInfo(seg.task, s.tasks[seg.task].classes, s.n_classes, 0)
    avl.on_task_start(info)
    for i, b in enumerate(s.batches(seg)):
        avl.observe(b if i != 3 else dataclasses.replace(b, x=torch.full_like(b.x, float("nan"))))
    return avl, info


def test_experience_protocol_skips_and_counts_nan_minibatches_of_its_task_end_training():
    avl, info = _nan_task_end(check_each_step=True)
    before = [p.detach().clone() for p in avl.model.parameters()]
    avl.on_task_end(info)
    assert avl.summary()["skipped_nonfinite_hook_steps"] >= 1
    assert all(torch.isfinite(p).all() for p in avl.model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, avl.model.parameters()))  # it trained


def test_experience_protocol_under_on_nan_stop_raises_on_a_nan_minibatch():
    from continual.types import NonFiniteLoss

    avl, info = _nan_task_end(check_each_step=False)
    with pytest.raises(NonFiniteLoss, match="avalanche naive"):
        avl.on_task_end(info)


def test_online_protocol_refuses_strategies_whose_state_grows_per_experience():
    s = _digits()
    with pytest.raises(ConfigError, match="protocol=experience"):
        AvalancheStrategy(_model(s), strategy="agem", protocol="online",
                          options={"patterns_per_exp": 8})


def test_experience_protocol_on_a_task_free_stream_is_a_config_error(tmp_path):
    s = _digits(boundaries="hidden")
    avl = AvalancheStrategy(_model(s), strategy="lwf", protocol="experience",
                            options={"alpha": 1.0, "temperature": 2.0})
    with pytest.raises(ConfigError, match="visible task boundaries"):
        Runner(s, avl, out_dir=str(tmp_path)).run()


def test_unknown_avalanche_options_name_the_valid_ones():
    s = _digits()
    with pytest.raises(ConfigError, match="no option.*ewc_lamda.*ewc_lambda"):
        AvalancheStrategy(_model(s), strategy="ewc", protocol="experience",
                          options={"ewc_lamda": 1.0})


ONLINE_OPTIONS = {"naive": {}, "ewc": {"mode": "online", "decay_factor": 0.9, "ewc_lambda": 1.0},
                  "lwf": {"alpha": 1.0, "temperature": 2.0}, "si": {"si_lambda": 1e-4}, "mas": {},
                  "der": {"mem_size": 20, "batch_size_mem": 10}, "er_ace": {"mem_size": 20, "batch_size_mem": 10}}


@pytest.mark.parametrize("name", sorted(ONLINE_OPTIONS))
def test_online_strategies_count_their_pre_step_predictions_as_online_correct(name):
    """Their training forward ends with the batch's rows: the runner needs no second pass.
    The last batch, of unseen classes, meets a buffer of seen ones (DER, ER-ACE) that the model
    gets right, and the earlier batches' penalties."""
    s = _digits()
    avl = AvalancheStrategy(_model(s), strategy=name, protocol="online", lr=0.05,
                            options=ONLINE_OPTIONS[name])
    new_task = s.segments[1].start
    for batch in (s.batch(0, 10), s.batch(0, 10), s.batch(0, 10), s.batch(new_task, new_task + 10)):
        with torch.no_grad():
            expected = int((avl.model(batch.x).argmax(1) == batch.y).sum())
        assert int(avl.observe(batch)["online_correct"]) == expected


def test_other_online_strategies_leave_online_accuracy_to_the_runner():
    """Replay's forward mixes replayed and new rows: its outputs are not the batch's predictions."""
    s = _digits()
    avl = AvalancheStrategy(_model(s), strategy="replay", protocol="online", lr=0.05,
                            options={"mem_size": 20})
    assert "online_correct" not in avl.observe(s.batch(0, 10))


def test_online_batches_read_back_exactly_from_shared_chunks():
    """Each batch's dataset holds its own rows, also across a chunk's end and after later writes."""
    from avalanche.benchmarks.utils.utils import concat_datasets

    from continual.strategies.avalanche import OnlineData

    data, g = OnlineData(chunk=8), torch.Generator().manual_seed(0)
    batches = [(torch.rand(3, 1, 2, 2, generator=g), torch.tensor([i, i + 1, i + 2]),
                None if i % 2 else torch.full((3,), i)) for i in range(4)]
    slices = [data.slice(*b) for b in batches]  # rows 0-2, 3-5 of one chunk; the third needs a new one
    for (x, y, task), d in zip(batches, slices):
        assert torch.equal(torch.stack([d[i][0] for i in range(3)]), x)
        assert [int(d[i][1]) for i in range(3)] == y.tolist() == list(d.targets)
        assert list(d.targets_task_labels) == ([0] * 3 if task is None else task.tolist())
    assert len(concat_datasets(slices[:2])._flat_data._datasets) == 1  # one chunk: one dataset


def test_every_task_starts_a_new_online_chunk():
    from avalanche.benchmarks.utils.utils import concat_datasets

    from continual.strategies.avalanche import OnlineData

    data, x, y = OnlineData(chunk=100), torch.zeros(2, 1, 2, 2), torch.tensor([0, 1])
    same_task = [data.slice(x, y, None) for _ in range(2)]
    data.start_task()
    next_task = data.slice(x, y + 2, None)
    assert len(concat_datasets(same_task)._flat_data._datasets) == 1
    assert len(concat_datasets([same_task[0], next_task])._flat_data._datasets) == 2


def test_the_online_chunk_changes_speed_only():
    s = streams.class_incremental("digits", n_tasks=5, batch_size=10, train_per_class=12)
    options = {"mem_size": 30, "batch_size_mem": 10, "alpha": 0.1, "beta": 0.5}
    scores = []
    for chunk in (1, 256):
        avl = AvalancheStrategy(_model(s), strategy="der", protocol="online", lr=0.05,
                                options=options, online_chunk=chunk)
        torch.manual_seed(1)
        for segment in s.segments:
            for batch in s.batches(segment):
                avl.observe(batch)
        scores.append(avl.predict(s.eval_set(0)[0]))
    assert torch.equal(scores[0], scores[1])


def test_online_chunk_must_be_a_positive_number_of_samples():
    with pytest.raises(ConfigError, match="online_chunk"):
        AvalancheStrategy(_model(_digits()), strategy="naive", online_chunk=0)


def test_observe_reports_the_training_loss_of_its_batch():
    """Avalanche zeroes ``strategy.loss`` when train() returns; the adapter reports the step's own."""
    s = _digits()
    batch = s.batch(0, 10)
    avl = AvalancheStrategy(_model(s), strategy="naive", protocol="online", lr=0.05)
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(avl.model(batch.x), batch.y)
    out = avl.observe(batch)
    assert float(out["loss"]) == pytest.approx(float(expected), rel=1e-5)


def test_scr_views_are_drawn_per_sample_and_stay_images_in_range():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 16).repeat(8, 1, 1, 1)  # one image, eight times
    views = SCRAugment()(x)
    assert views.shape == x.shape
    assert 0.0 <= views.min() and views.max() <= 1.0
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8  # eight different views
    flat = torch.randn(8, 5)
    assert torch.equal(SCRAugment()(flat), flat)  # non-image inputs pass through


def test_scr_color_jitter_keeps_gray_images_gray_and_skips_unjittered_samples():
    torch.manual_seed(0)
    gray = torch.rand(16, 1, 1, 1).expand(16, 3, 8, 8).contiguous()
    out = SCRAugment().color_jitter(gray)
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])
    assert torch.equal(SCRAugment(jitter_p=0.0).color_jitter(gray), gray)
    assert not torch.equal(SCRAugment(jitter_p=1.0).color_jitter(gray), gray)


def test_scr_trains_on_unit_length_projections_and_tests_with_class_means(tmp_path):
    s = _digits()
    avl = AvalancheStrategy(_model(s), strategy="scr", protocol="online", lr=0.1,
                            options={"mem_size": 50, "batch_size_mem": 20, "temperature": 0.1})
    x = s.batch(0, 10).x
    avl.model.train()
    z = avl.model(x)
    assert z.shape == (10, 128)
    assert torch.allclose(z.norm(dim=1), torch.ones(10), atol=1e-5)
    # as in the official code, the projection sees the raw features (Avalanche's SCRModel feeds
    # it normalised ones, which with a normalised output collapsed the projection at lr 0.1)
    raw = avl.model.train_classifier(avl.model.feature_extractor(x))
    assert torch.allclose(z, torch.nn.functional.normalize(raw, dim=1), atol=1e-6)
    summary = Runner(s, avl, out_dir=str(tmp_path)).run()
    assert set(avl.model.eval_classifier.class_means_dict) == set(range(s.n_classes))
    assert summary["acc"] > 0.5  # NCM on the learnt features, far above chance (0.1)


# ---------------------------------------------------------------------- streams
def test_to_avalanche_then_from_avalanche_gives_back_the_tasks():
    s = _digits()
    back = from_avalanche(to_avalanche(s), batch_size=10)
    assert back.n_tasks == s.n_tasks and back.n_classes == s.n_classes
    for t in range(s.n_tasks):
        assert back.tasks[t].classes == s.tasks[t].classes
        x, y = s.eval_set(t)
        bx, by = back.eval_set(t)
        assert torch.equal(x, bx) and torch.equal(y, by)
        seg = s.segments[t]
        train_x = back.dataset.x_train[back.tasks[t].train_idx]
        assert torch.equal(train_x, s.batch(seg.start, seg.end).x)


def test_a_native_avalanche_benchmark_becomes_a_stream():
    from avalanche.benchmarks import benchmark_from_datasets
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as make

    g = torch.Generator().manual_seed(0)

    def experience(i, n):
        y = torch.randint(2 * i, 2 * i + 2, (n,), generator=g)
        return make(torch.randn(n, 1, 4, 4, generator=g), y, targets=y.tolist(), task_labels=i)

    bench = benchmark_from_datasets(train=[experience(i, 40) for i in range(3)],
                                    test=[experience(i, 12) for i in range(3)])
    s = from_avalanche(bench, batch_size=8)
    assert [t.classes for t in s.tasks] == [[0, 1], [2, 3], [4, 5]]
    assert s.task_labels  # the experiences carry different task labels: task-incremental
    assert len(s) == 120 and s.eval_set(2)[0].shape == (12, 1, 4, 4)


def test_a_task_free_stream_becomes_batch_sized_online_experiences():
    from avalanche.benchmarks import OnlineCLExperience

    s = _digits(boundaries="hidden", blurry=0.2)
    exps = list(to_avalanche(s).train_stream)
    assert len(exps) == s.n_steps()
    assert all(isinstance(e, OnlineCLExperience) and len(e.dataset) <= 10 for e in exps)
    assert not exps[0].access_task_boundaries
    # blurry: the first task's stretch also holds the second task's classes
    first_task = [e for e in exps if e.origin_experience.current_experience == 0]
    labels = set().union(*(set(e.classes_in_this_experience) for e in first_task))
    assert labels > set(s.tasks[0].classes)


def test_forgetting_and_bwt_equal_avalanches_own_evaluation():
    """Train Avalanche's Naive on our stream as a 3-experience benchmark; evaluate with Avalanche
    after each experience and, on the same model, with our test sets; compare the metrics."""
    from avalanche.evaluation.metrics import accuracy_metrics, bwt_metrics, forgetting_metrics
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

    digits = streams.load_dataset("digits")
    keep_tr, keep_te = digits.y_train < 9, digits.y_test < 9  # 9 classes: 3 tasks of 3
    data = streams.from_arrays(digits.x_train[keep_tr], digits.y_train[keep_tr],
                               digits.x_test[keep_te], digits.y_test[keep_te], name="digits9")
    s = streams.class_incremental(data, n_tasks=3, batch_size=10)
    bench = to_avalanche(s)
    model = _model(s)
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True),
                                 forgetting_metrics(experience=True, stream=True),
                                 bwt_metrics(experience=True, stream=True), loggers=[])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learner = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                        train_mb_size=10, train_epochs=1, evaluator=evaluator)
        R_avl, R_ours = [], []
        for exp in bench.train_stream:
            learner.train(exp, eval_streams=[])
            res = learner.eval(bench.test_stream)
            R_avl.append([res[f"Top1_Acc_Exp/eval_phase/test_stream/Exp{j:03d}"]
                          for j in range(s.n_tasks)])
            model.eval()
            with torch.no_grad():
                sets = [s.eval_set(j) for j in range(s.n_tasks)]
                R_ours.append([(model(x).argmax(1) == y).float().mean().item() for x, y in sets])
    R = np.array(R_ours)
    rows = list(range(s.n_tasks))
    np.testing.assert_allclose(R, np.array(R_avl), atol=1e-6)  # the same test sets and scores
    # Avalanche: forgetting_j = R[j, j] - R[T-1, j]; ours takes the max over rows j..T-2, which
    # is R[j, j] whenever accuracy on j did not rise after its own task (checked here)
    assert R[1, 0] <= R[0, 0]
    assert M.forgetting(R, rows) == pytest.approx(res["StreamForgetting/eval_phase/test_stream"])
    assert M.backward_transfer(R, rows) == pytest.approx(res["StreamBWT/eval_phase/test_stream"])
    assert M.forgetting(R, rows) > 0.3  # a real amount of forgetting was compared
