"""LTM (strategies/ltm.py): kNN reading, adaptive k, consolidation, forgetting, bad input,
state round trips, where the store lives (store_device), and the GPU check: its no-GPU path and
self-check here, the GPU against the CPU where torch and FAISS see a GPU (exact resume after SIGKILL:
tests/test_reliability.py)."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
import yaml

from continual.models.backbones import build_model
from continual.strategies.ltm import AdaptiveK, LongTermMemory, knn_distribution, vote_scores
from continual.testing import check_strategy
from continual.types import Batch, ConfigError

ROOT = Path(__file__).resolve().parents[1]
KNN = {"encoder": "random_projection", "embed_dim": 2, "capacity": None}
REPLAY = {"train_on_stream": True, "consolidate_every": 1, "replay": "confusable",
          "head_weight": 0.5, "lr": 0.05, "embed_dim": 8}


@pytest.fixture(autouse=True)
def _one_thread():
    import faiss

    threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(faiss_threads)


def mlp(input_shape=(2,), n_classes=3, seed=0):
    torch.manual_seed(seed)
    return build_model("mlp", input_shape, n_classes, hidden=16)


def ltm(model=None, **options) -> LongTermMemory:
    return LongTermMemory(model if model is not None else mlp(), **{**KNN, **options})


def identity_projection(s: LongTermMemory, dim: int = 2) -> None:
    """Keys = the raw 2-D points, so tests can place memories by hand."""
    s.projection = torch.eye(dim)


def blobs(n_per_class=20, n_classes=3, noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])[:n_classes]
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    x = centres[y] + noise * torch.randn(y.numel(), 2, generator=g)
    perm = torch.randperm(y.numel(), generator=g)
    return x[perm], y[perm]


def feed(s: LongTermMemory, x, y, batch_size=10) -> list[dict]:
    return [s.observe(Batch(x[i : i + batch_size], y[i : i + batch_size]))
            for i in range(0, y.numel(), batch_size)]


# --------------------------------------------------------------------------- read: kNN votes


def test_vote_scores_take_the_majority_and_break_ties_toward_the_nearer_neighbour():
    labels = torch.tensor([[2, 1, 1, 0],    # majority 1
                           [2, 1, 1, 2],    # 2 and 1 tie twice each: 2 holds the nearest
                           [0, -1, -1, -1]])  # missing hits (-1) do not vote
    assert vote_scores(labels, 3).argmax(1).tolist() == [1, 2, 0]
    assert vote_scores(labels, 3)[2].tolist() == [5.0 * 1 + 4, 0.0, 0.0]


def test_knn_distribution_is_a_distribution_and_uniform_without_hits():
    p = knn_distribution(torch.tensor([[1, 1, 0], [-1, -1, -1]]), 4)
    assert torch.allclose(p.sum(1), torch.ones(2))
    assert p[0].argmax() == 1 and p[0, 3] == 0
    assert torch.allclose(p[1], torch.full((4,), 0.25))


def test_knn_predicts_the_labels_of_a_toy_set():
    s = ltm(k_choices=[1])
    identity_projection(s)
    x, y = blobs()
    s.write(x, y, None)
    queries = torch.tensor([[0.2, -0.1], [4.8, 0.3], [0.1, 5.2]])
    logp = s.predict(queries)
    assert logp.shape == (3, 3)
    assert torch.allclose(logp.exp().sum(1), torch.ones(3))
    assert logp.argmax(1).tolist() == [0, 1, 2]


def test_predict_with_an_empty_memory_is_uniform():
    logp = ltm().predict(torch.randn(4, 2))
    assert torch.allclose(logp, torch.full((4, 3), -np.log(3.0)))


def test_predict_does_not_mark_memories_as_recalled():
    s = ltm()
    x, y = blobs()
    s.write(x, y, None)
    before = s.store.get(s.store.ids()).payload.recalls.copy()
    s.predict(x)
    assert (s.store.get(s.store.ids()).payload.recalls == before).all()


def test_observe_reports_online_correct_as_predict_would_score_before_writing():
    s = ltm()
    x, y = blobs()
    feed(s, x[:30], y[:30])
    expected = (s.predict(x[30:40]).argmax(1) == y[30:40]).sum().item()
    out = s.observe(Batch(x[30:40], y[30:40]))
    assert out["online_correct"].item() == expected
    assert len(s.store) == 40


def test_observe_writes_label_task_minus_one_when_hidden_and_step_time():
    s = ltm()
    x, y = blobs()
    feed(s, x[:20], y[:20])
    mem = s.store.get(s.store.ids())
    assert (mem.payload.task == -1).all()
    assert mem.payload.label.tolist() == y[:20].tolist()
    assert sorted(set(mem.payload.time.tolist())) == [1, 2]


# --------------------------------------------------------------------------- adaptive k


def test_adaptive_k_moves_to_the_k_with_more_recent_hits_and_keeps_it_on_ties():
    a = AdaptiveK([1, 2, 4], window=4)
    assert a.k == 1
    a.update(torch.tensor([[False, False, True]] * 2))
    assert a.k == 4
    a.update(torch.tensor([[True, True, False]] * 2))  # now 2 hits each: a tie keeps 4
    assert a.k == 4
    a.update(torch.tensor([[True, True, False]] * 2))  # the window forgets the old hits
    assert a.k == 1


def test_adaptive_k_picks_a_large_k_on_noisy_labels_and_k1_on_exact_revisits():
    # noisy: 40% of labels flipped inside well separated blobs -> voting over many helps
    x, y = blobs(n_per_class=100, noise=1.0)
    noisy = y.clone()
    flip = torch.rand(y.numel(), generator=torch.Generator().manual_seed(1)) < 0.4
    noisy[flip] = (y[flip] + 1) % 3
    s = ltm(k_window=100)
    identity_projection(s)
    feed(s, x, noisy)
    assert s.adaptive.k >= 8
    # clean, random labels on random points, each point seen twice: on the second visit only
    # the memory of the same point (distance 0) knows its label -> k = 1 (k = 2 ties with it)
    g = torch.Generator().manual_seed(2)
    points, labels = torch.rand(150, 2, generator=g), torch.randint(0, 3, (150,), generator=g)
    again = torch.randperm(150, generator=g)
    c = ltm(k_window=100)
    identity_projection(c)
    feed(c, torch.cat([points, points[again]]), torch.cat([labels, labels[again]]))
    assert c.adaptive.k == 1


# --------------------------------------------------------------------------- consolidate


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()]).clone()


def test_consolidation_takes_gradient_steps_only_when_due():
    s = ltm(train_on_stream=False, consolidate_every=3, replay="sample", lr=0.1)
    x, y = blobs()
    start = _params(s.model)
    feed(s, x[:20], y[:20])  # steps 1, 2: no consolidation yet
    assert torch.equal(_params(s.model), start)
    out = s.observe(Batch(x[20:30], y[20:30]))  # step 3: replay from the memory
    assert "loss" in out
    assert not torch.equal(_params(s.model), start)


def test_knn_only_learner_never_changes_the_model():
    s = ltm()
    start = _params(s.model)
    x, y = blobs()
    feed(s, x, y)
    assert torch.equal(_params(s.model), start)


def test_confusable_retrieval_returns_nearest_memories_of_other_classes_first():
    s = ltm(train_on_stream=True, consolidate_every=1, replay="confusable", retrieve_k=3)
    identity_projection(s)
    mem_x = torch.tensor([[0.0, 0.1], [0.0, 0.2], [0.0, 3.0], [0.0, 9.0]])
    s.write(mem_x, torch.tensor([0, 1, 2, 1]), None)
    ids = s._retrieve(s.encode(torch.tensor([[0.0, 0.0]])), torch.tensor([0]))
    assert s.store.get(ids).payload.label.tolist() == [1, 2]  # not the own-class nearest


def test_replay_learner_learns_the_blobs():
    s = ltm(**{**REPLAY, "embed_dim": 2})
    x, y = blobs(n_per_class=60, noise=0.5)
    feed(s, x, y)
    assert (s.predict(x).argmax(1) == y).float().mean() > 0.9
    head = s.model(x).argmax(1)
    assert (head == y).float().mean() > 0.9


def test_backbone_encoder_reembeds_the_memory_at_consolidation():
    s = ltm(encoder="backbone", embed_dim=None, train_on_stream=True, consolidate_every=2,
            eviction="fifo", capacity=30, lr=0.2)
    x, y = blobs()
    feed(s, x[:40], y[:40])  # steps 1..4: consolidations (and re-embedding) at 2 and 4
    mem = s.store.get(s.store.ids())
    assert torch.allclose(torch.from_numpy(mem.vectors), s.encode(mem.payload.inputs), atol=1e-5)
    assert sorted(set(mem.payload.time.tolist())) == [2, 3, 4]  # write times survive
    assert len(s.store) == 30


# --------------------------------------------------------------------------- forget


@pytest.mark.parametrize("eviction", ["reservoir", "fifo", "class_balanced"])
def test_eviction_keeps_the_memory_at_capacity(eviction):
    s = ltm(capacity=25, eviction=eviction)
    x, y = blobs()
    for i in range(0, 60, 10):
        s.observe(Batch(x[i : i + 10], y[i : i + 10]))
        assert len(s.store) == min(i + 10, 25)
    assert s.summary()["memory_bytes"] == 25 * 4 * 2


def test_fifo_forgets_the_oldest_and_forget_removes_by_id():
    s = ltm(capacity=20, eviction="fifo")
    x, y = blobs()
    feed(s, x[:40], y[:40])
    assert sorted(set(s.store.get(s.store.ids()).payload.time.tolist())) == [3, 4]
    victim = s.store.ids()[:5]
    s.forget(victim)
    assert len(s.store) == 15 and not any(i in s.store for i in victim)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("options, match", [
    ({"encoder": "pixels"}, "unknown encoder"),
    ({"embed_dim": None}, "needs embed_dim"),
    ({"head_weight": 0.5}, "never trained"),
    ({"head_weight": 1.5, "train_on_stream": True}, r"\[0, 1\]"),
    ({"k_choices": [4, 2]}, "increasing"),
    ({"k_choices": []}, "positive ints"),
    ({"capacity": 0}, "capacity"),
    ({"replay": "random"}, "unknown replay"),
    ({"encoder": "backbone", "train_on_stream": True}, "go stale"),
    ({"encoder": "backbone", "consolidate_every": 1, "capacity": 10, "eviction": "reservoir"},
     "re-embed"),
])
def test_bad_configuration_is_a_config_error(options, match):
    with pytest.raises(ConfigError, match=match):
        ltm(**options)


def test_bad_batches_are_config_errors():
    s = ltm()
    x, y = blobs()
    with pytest.raises(ConfigError, match="NaN"):
        s.observe(Batch(torch.full((2, 2), float("nan")), torch.tensor([0, 1])))
    with pytest.raises(ConfigError, match="labels must lie"):
        s.observe(Batch(x[:2], torch.tensor([0, 3])))
    s.observe(Batch(x[:2], y[:2]))
    with pytest.raises(ConfigError, match="one input shape"):
        s.observe(Batch(torch.zeros(2, 3), y[:2]))
    with pytest.raises(ConfigError, match="not in the store"):
        s.forget([12345])


# --------------------------------------------------------------------------- state


@pytest.mark.parametrize("options", [KNN, {**KNN, **REPLAY},
                                     {"encoder": "frozen_backbone", "embed_dim": None},
                                     {"encoder": "backbone", "embed_dim": 4, "eviction": "fifo",
                                      "capacity": 12, "consolidate_every": 2,
                                      "train_on_stream": True, "head_weight": 0.3}])
def test_strategy_contract_including_state_round_trip(options):
    results = check_strategy(LongTermMemory, options)
    assert set(results.values()) == {"passed"}


def test_state_dict_loads_with_weights_only_and_continues_identically():
    x, y = blobs(n_per_class=40)
    a = ltm(**REPLAY, capacity=30, eviction="retention")
    feed(a, x[:60], y[:60])
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    b = ltm(model=mlp(seed=1), **REPLAY, capacity=30, eviction="retention")
    b.load_state_dict(state)
    assert torch.equal(a.predict(x), b.predict(x))
    outs_a, outs_b = feed(a, x[60:], y[60:]), feed(b, x[60:], y[60:])
    assert [float(o["loss"]) for o in outs_a] == [float(o["loss"]) for o in outs_b]
    assert (a.store.ids() == b.store.ids()).all()
    assert torch.equal(a.predict(x), b.predict(x))


# --------------------------------------------------------------------------- configs


def _yaml(path: str) -> dict:
    return yaml.safe_load((ROOT / "conf" / path).read_text())


@pytest.mark.parametrize("name, key_bytes, input_bytes", [("ltm_knn", 4 * 64, 0),
                                                          ("ltm_replay", 4 * 64, 4 * 28 * 28)])
def test_shipped_capacities_spend_ers_byte_budget_on_28x28_images(name, key_bytes, input_bytes):
    budget = _yaml("strategy/er.yaml")["buffer_size"] * 4 * 28 * 28
    cfg = _yaml(f"strategy/{name}.yaml")
    per_memory = 4 * cfg["embed_dim"] + (input_bytes if cfg.get("consolidate_every") else 0)
    assert per_memory == key_bytes + input_bytes
    assert cfg["capacity"] == budget // per_memory


# --------------------------------------------------------------------------- GPU check script


NEEDS_GPU = pytest.mark.skipif(
    not torch.cuda.is_available() or faiss.get_num_gpus() == 0,
    reason="needs a CUDA GPU that torch and FAISS (faiss-gpu) both see; the CPU-only checks are the tests below",
)


def _gpu_check():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_memory_check
    finally:
        sys.path.pop(0)
    return gpu_memory_check


def test_gpu_check_exits_cleanly_without_a_gpu(tmp_path, capsys, monkeypatch):
    import faiss

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)  # also on a GPU machine
    assert _gpu_check().main(["--out", str(tmp_path / "gpu.json")]) == 0
    assert "no GPU" in capsys.readouterr().out
    assert json.loads((tmp_path / "gpu.json").read_text())["status"] == "skipped: no GPU"


def test_gpu_check_self_check_puts_both_stores_on_the_cpu_and_finds_the_same_neighbours():
    # the script's --second-device cpu self-check: its plumbing, not the GPU (see below)
    result = _gpu_check().run_check(n=3000, dim=16, queries=50, k=10, repeats=1,
                                    batch_sizes=(50,), second_device="cpu")
    assert result["store_devices"] == {"cpu": "cpu", "second": "cpu"}
    assert result["same_neighbours"] and result["id_match_rate"] == 1.0
    assert result["throughput_ratio"] > 0


@NEEDS_GPU
def test_gpu_check_finds_the_cpu_stores_neighbours_with_the_store_on_the_gpu():
    result = _gpu_check().run_check(n=20_000, dim=32, queries=200, k=10, repeats=1,
                                    batch_sizes=(200,), second_device="cuda")
    assert result["store_devices"] == {"cpu": "cpu", "second": "cuda"}
    assert result["same_neighbours"], result


@NEEDS_GPU
def test_an_ltm_with_its_store_on_the_gpu_answers_as_with_its_store_on_the_cpu():
    x, y = blobs(n_per_class=40, noise=0.5)
    x, y = x.cuda(), y.cuda()
    on_gpu = ltm(mlp().cuda(), k_choices=[1, 4], store_device="auto")  # auto follows the model
    on_cpu = ltm(mlp().cuda(), k_choices=[1, 4], store_device="cpu")
    outs_gpu, outs_cpu = feed(on_gpu, x, y), feed(on_cpu, x, y)
    assert on_gpu.store.device == "cuda" and on_cpu.store.device == "cpu"
    assert [int(o["online_correct"]) for o in outs_gpu] == [int(o["online_correct"]) for o in outs_cpu]
    assert on_gpu.adaptive.k == on_cpu.adaptive.k
    q = x[:30] + 0.05
    torch.testing.assert_close(on_gpu.predict(q), on_cpu.predict(q))


@pytest.mark.parametrize(("store_device", "expected"), [
    ("auto", "cpu"),     # follows the model (on the CPU), even when FAISS sees a GPU
    ("cpu", "cpu"),
    ("cuda", "cuda:0"),  # the model's GPU; GPU 0 for a CPU model
    ("cuda:1", "cuda:1"),  # as given
])
def test_store_device_names_the_stores_device_for_a_cpu_model(monkeypatch, store_device, expected):
    from continual.memory import gpu

    monkeypatch.setattr(gpu, "faiss_gpu_count", lambda: 1)
    assert ltm(store_device=store_device)._store_device_name() == expected


def test_store_device_cuda_is_refused_at_the_first_write_when_faiss_sees_no_gpu(monkeypatch):
    from continual.memory import gpu

    monkeypatch.setattr(gpu, "faiss_gpu_count", lambda: 0)  # also on a GPU machine
    s = ltm(store_device="cuda")
    x, y = blobs(n_per_class=2)
    with pytest.raises(ConfigError, match="device='cuda' but FAISS sees no GPU"):
        s.observe(Batch(x, y))
    assert s.store is None


def test_gpu_check_comparison_accepts_ties_and_rejects_wrong_neighbours():
    base = np.array([[0.0], [1.0], [-1.0], [5.0]], dtype=np.float32)
    q = np.zeros((1, 1), dtype=np.float32)
    compare = _gpu_check().compare
    tie = compare(base, q, np.array([[0, 1, 2]]), np.array([[0, 2, 1]]), rtol=1e-6)
    assert tie["same_neighbours"] and tie["id_match_rate"] < 1
    wrong = compare(base, q, np.array([[0, 1, 2]]), np.array([[0, 1, 3]]), rtol=1e-6)
    assert not wrong["same_neighbours"]


@pytest.mark.parametrize("bad", ["tpu", "cuda:x", "gpu:0"])
def test_a_store_device_the_store_cannot_take_is_refused_when_the_strategy_is_built(bad):
    with pytest.raises(ConfigError, match=rf"unknown device '{re.escape(bad)}'"):
        ltm(store_device=bad)


@pytest.mark.parametrize(("schedule", "refused"), [("cosine", True), ("infinite", True), ("constant", False)])
def test_a_schedule_for_an_ltm_that_takes_no_gradient_steps_is_refused_before_any_work(tmp_path, schedule, refused):
    from hydra import compose, initialize_config_module

    from continual.config import register_configs
    from continual.experiment import run_experiment
    from continual.types import ConfigError

    register_configs()
    with initialize_config_module(config_module="continual.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "stream=split_digits", "strategy=ltm_knn", f"schedule={schedule}", "log.console=false",
            "checkpoint.enabled=false", "++stream.train_per_class=4", "++stream.test_per_class=3"])
    if refused:
        with pytest.raises(ConfigError, match="takes none with these options.*schedule=constant"):
            run_experiment(cfg, out_dir=str(tmp_path), report=False)
        assert not (tmp_path / "metrics.jsonl").exists()  # refused before the first eval point
        return
    run_experiment(cfg, out_dir=str(tmp_path), report=False)
    steps = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"step"' in x]
    assert steps and all("lr" not in r for r in steps if r["type"] == "step")  # no lr that drives nothing
