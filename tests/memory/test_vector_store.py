"""Contract of memory.VectorStore and the eviction policies (issue 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from continual.memory import vector_store as vs
from continual.memory.eviction import (
    ClassBalancedEviction,
    EvictionPlan,
    EvictionPolicy,
    EvictionView,
    lowest,
    make_eviction,
)
from continual.memory.vector_store import StoreFileError, TorchMirror, VectorStore, resolve_device
from continual.types import ConfigError

DIM = 8
KINDS = ("flat", "ivf", "hnsw")
POLICIES = ("fifo", "lru", "retention", "reservoir", "gdumb", "class_balanced")
SMALL_IVF = {"nlist": 4, "train_size": 40, "nprobe": 4}  # nprobe == nlist: exact once trained


@pytest.fixture(autouse=True)
def one_faiss_thread():
    """Tiny indexes: OpenMP threads only spin on a shared machine."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def clustered(n: int, seed: int = 0, dim: int = 16, centres: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim)) * 4
    return (c[rng.integers(0, centres, n)] + rng.standard_normal((n, dim))).astype(np.float32)


def store(kind: str = "flat", **kwargs) -> VectorStore:
    extra = dict(SMALL_IVF) if kind == "ivf" else {}
    extra.update(kwargs)
    return VectorStore(DIM, kind=kind, device="cpu", **extra)


def brute_l2(base: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    d = ((q[:, None, :] - base[None, :, :]) ** 2).sum(-1)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def check_consistent(s: VectorStore) -> None:
    """Internal invariants: dense slots, ids unique and findable, index sizes agree."""
    ids = s.ids()
    assert np.unique(ids).shape[0] == len(s)
    if len(s):
        np.testing.assert_array_equal(s.get(ids).ids, ids)
    if s.kind == "ivf" and s.is_trained:
        assert s._index.ann.ntotal == len(s)
    if s.kind == "hnsw":
        assert int((s._index.node_slot[:-1] >= 0).sum()) == len(s)


# ---------------------------------------------------------------- adding and searching
def test_add_returns_new_increasing_ids_and_len_counts_them():
    s = store()
    first = s.add(vectors(5))
    second = s.add(vectors(3, seed=1))
    np.testing.assert_array_equal(first, np.arange(5))
    np.testing.assert_array_equal(second, np.arange(5, 8))
    assert len(s) == 8


def test_flat_l2_search_matches_numpy_brute_force():
    base, q = vectors(200), vectors(7, seed=1)
    s = store()
    ids = s.add(base)
    result = s.search(q, 5)
    np.testing.assert_array_equal(result.ids, ids[brute_l2(base, q, 5)])
    expected = ((q[:, None, :] - base[result.ids]) ** 2).sum(-1)
    np.testing.assert_allclose(result.distances, expected, rtol=1e-4, atol=1e-4)


def test_ip_search_returns_largest_inner_products():
    base, q = vectors(100), vectors(4, seed=1)
    s = store(metric="ip")
    s.add(base)
    result = s.search(q, 3)
    np.testing.assert_array_equal(result.ids, np.argsort(-(q @ base.T), axis=1)[:, :3])


def test_cosine_search_returns_cosine_similarities_of_normalised_vectors():
    base, q = vectors(100), vectors(4, seed=1)
    s = store(metric="cosine")
    s.add(base * 10.0)  # scale must not matter
    result = s.search(q, 3)
    bn = base / np.linalg.norm(base, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_array_equal(result.ids, np.argsort(-(qn @ bn.T), axis=1)[:, :3])
    np.testing.assert_allclose(
        result.distances, np.sort(-(qn @ bn.T), axis=1)[:, :3] * -1, rtol=1e-5
    )


def test_search_accepts_torch_tensors():
    base = vectors(50)
    s = store()
    s.add(torch.from_numpy(base), labels=torch.arange(50))
    result = s.search(torch.from_numpy(base[:2]), 1)
    np.testing.assert_array_equal(result.ids[:, 0], [0, 1])


def test_search_returns_payload_of_each_hit():
    base = vectors(30)
    s = store()
    s.add(base, labels=np.arange(30) % 4, tasks=np.arange(30) // 10)
    result = s.search(base[[3, 17]], 1)
    np.testing.assert_array_equal(result.payload.label[:, 0], [3 % 4, 17 % 4])
    np.testing.assert_array_equal(result.payload.task[:, 0], [0, 1])


def test_recalling_search_updates_recall_columns_once_per_search():
    base = vectors(20)
    s = store()
    s.add(base)
    s.add(vectors(1, seed=5), time=7)
    s.search(np.repeat(base[:1], 3, axis=0), 1)  # three queries hit memory 0
    got = s.get([0, 1]).payload
    assert got.recalls.tolist() == [1, 0]
    assert got.strength.tolist() == [2.0, 1.0]
    assert got.last_recall.tolist() == [7, 1]


def test_search_without_recall_leaves_recall_columns_alone():
    base = vectors(20)
    s = store()
    s.add(base)
    s.search(base[:5], 2, recall=False)
    assert s.get(s.ids()).payload.recalls.sum() == 0


def test_mark_recalled_strengthens_the_given_memories():
    s = store()
    s.add(vectors(4))
    s.mark_recalled([2, 2, 3], time=5)
    got = s.get([1, 2, 3]).payload
    assert got.strength.tolist() == [1.0, 2.0, 2.0]
    assert got.last_recall.tolist() == [1, 5, 5]


def test_ivf_searches_exactly_before_it_is_trained():
    base, q = vectors(30), vectors(5, seed=1)
    s = store("ivf")
    s.add(base)
    assert not s.is_trained
    np.testing.assert_array_equal(s.search(q, 4).ids, brute_l2(base, q, 4))


def test_ivf_trains_itself_once_train_size_vectors_arrived():
    base, q = vectors(60), vectors(5, seed=1)
    s = store("ivf")
    s.add(base[:30])
    s.add(base[30:])
    assert s.is_trained and s._index.ann.ntotal == 60
    np.testing.assert_array_equal(s.search(q, 4).ids, brute_l2(base, q, 4))  # nprobe == nlist


def test_hnsw_finds_nearly_all_exact_neighbours_on_small_data():
    base, q = vectors(500), vectors(20, seed=1)
    s = store("hnsw")
    s.add(base)
    found = s.search(q, 5).ids
    exact = brute_l2(base, q, 5)
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(found, exact, strict=True)])
    assert recall >= 0.95


def test_missing_ivf_hits_read_minus_one_and_are_not_recalled():
    s = store("ivf", nprobe=1)
    base = vectors(60)
    s.add(base, labels=np.arange(60))
    for _ in range(2):  # the second search must not see the first one's recall counts
        result = s.search(base[:5], 60)
        missing = result.ids == -1
        assert missing.any()
        assert (result.payload.label[missing] == -1).all()
        assert (result.payload.recalls[missing] == 0).all()
    assert (result.payload.label[~missing] == result.ids[~missing]).all()


def test_to_bytes_and_from_bytes_round_trip_without_a_file():
    s = store("hnsw")
    s.add(vectors(40), labels=np.arange(40))
    copy = VectorStore.from_bytes(s.to_bytes(), device="cpu")
    q = vectors(5, seed=2)
    np.testing.assert_array_equal(copy.search(q, 3).ids, s.search(q, 3).ids)


def test_get_returns_vectors_and_payload_in_the_order_asked():
    base = vectors(10)
    s = store()
    s.add(base, labels=np.arange(10))
    got = s.get([7, 2, 7])
    np.testing.assert_array_equal(got.ids, [7, 2, 7])
    np.testing.assert_array_equal(got.vectors, base[[7, 2, 7]])
    np.testing.assert_array_equal(got.payload.label, [7, 2, 7])


@pytest.mark.parametrize("kind", KINDS)
def test_removed_memories_are_never_found_again(kind):
    base = vectors(120)
    s = store(kind)
    s.add(base)
    gone = np.arange(0, 120, 3)
    s.remove(gone)
    assert len(s) == 80
    hits = s.search(base[gone], 3).ids
    assert not np.isin(hits, gone).any()
    check_consistent(s)


@pytest.mark.parametrize("kind", KINDS)
def test_remove_keeps_the_other_memories_under_their_ids(kind):
    base = vectors(120)
    s = store(kind)
    s.add(base, labels=np.arange(120))
    s.remove(np.arange(0, 60, 2))
    kept = np.setdiff1d(np.arange(120), np.arange(0, 60, 2))
    got = s.get(kept)
    np.testing.assert_array_equal(got.vectors, base[kept])
    np.testing.assert_array_equal(got.payload.label, kept)
    np.testing.assert_array_equal(s.search(base[kept[-5:]], 1).ids[:, 0], kept[-5:])


def test_ids_are_never_reused_after_remove():
    s = store()
    s.add(vectors(5))
    s.remove([3, 4])
    np.testing.assert_array_equal(s.add(vectors(2, seed=1)), [5, 6])


def test_sample_draws_distinct_stored_memories_reproducibly():
    s = store()
    s.add(vectors(50))
    a = s.sample(20, generator=3)
    b = s.sample(20, generator=np.random.default_rng(3))
    assert np.unique(a.ids).shape[0] == 20
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.vectors, s.get(a.ids).vectors)


def test_sample_more_than_stored_without_replacement_is_an_error():
    s = store()
    s.add(vectors(5))
    with pytest.raises(ConfigError, match="at most len"):
        s.sample(6)


def test_raw_inputs_are_kept_for_replay():
    images = torch.arange(6 * 2 * 3, dtype=torch.uint8).reshape(6, 2, 3)
    s = store()
    base = vectors(6)
    s.add(base, labels=np.arange(6), inputs=images)
    assert torch.equal(s.get([4, 1]).payload.inputs, images[[4, 1]])
    found = s.search(base[:2], 2, with_inputs=True)
    assert found.payload.inputs.shape == (2, 2, 2, 3)
    assert torch.equal(found.payload.inputs[0, 0], images[0])


# ---------------------------------------------------------------- bad input
def test_wrong_dimension_is_an_error_on_add_and_search():
    s = store()
    with pytest.raises(ConfigError, match=r"shape \(m, 8\)"):
        s.add(vectors(3, dim=5))
    s.add(vectors(3))
    with pytest.raises(ConfigError, match="dim=8"):
        s.search(vectors(1, dim=9), 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_vectors_are_an_error(bad):
    x = vectors(4)
    x[2, 1] = bad
    s = store()
    with pytest.raises(ConfigError, match="NaN or Inf in 1 row"):
        s.add(x)
    assert len(s) == 0


def test_nan_queries_are_an_error():
    s = store()
    s.add(vectors(4))
    q = vectors(1)
    q[0, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN or Inf"):
        s.search(q, 1)


@pytest.mark.parametrize("k", [0, 6])
def test_k_outside_one_to_len_is_an_error(k):
    s = store()
    s.add(vectors(5))
    with pytest.raises(ConfigError, match="between 1 and the number of stored memories"):
        s.search(vectors(1), k)


def test_unknown_ids_are_an_error_in_get_and_remove():
    s = store()
    s.add(vectors(5))
    s.remove([1])
    with pytest.raises(ConfigError, match=r"not in the store \(first: \[1, 9\]\)"):
        s.get([0, 1, 9])
    with pytest.raises(ConfigError, match="not in the store"):
        s.remove([4, 5])
    assert len(s) == 4  # the failed remove removed nothing


@pytest.mark.parametrize("capacity", [0, -3])
def test_capacity_below_one_is_an_error(capacity):
    with pytest.raises(ConfigError, match="capacity must be an int >= 1"):
        VectorStore(DIM, capacity=capacity)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric": "hamming"}, "unknown metric"),
        ({"kind": "pq"}, "unknown index kind"),
        ({"eviction": "random"}, "unknown eviction policy"),
        ({"device": "tpu"}, "unknown device"),
        ({"kind": "ivf", "nlist": 64, "train_size": 10}, "train_size=10 is below nlist"),
    ],
)
def test_unknown_configuration_is_an_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        VectorStore(DIM, **kwargs)


def test_class_balanced_eviction_needs_labels():
    s = store(capacity=4, eviction="class_balanced")
    with pytest.raises(ConfigError, match="needs a label"):
        s.add(vectors(2))


def test_zero_vector_under_cosine_is_an_error():
    x = vectors(3)
    x[1] = 0
    with pytest.raises(ConfigError, match="all-zero"):
        store(metric="cosine").add(x)


def test_time_going_backwards_is_an_error():
    s = store()
    s.add(vectors(2), time=10)
    with pytest.raises(ConfigError, match="backwards"):
        s.add(vectors(2), time=9)


def test_inputs_must_come_with_every_add_once_kept():
    s = store()
    s.add(vectors(2), inputs=torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="pass inputs with every add"):
        s.add(vectors(2))


# ---------------------------------------------------------------- devices
def test_auto_device_is_cpu_when_faiss_sees_no_gpu():
    assert resolve_device("auto", num_gpus=0) == "cpu"


def test_auto_device_is_cuda_when_faiss_sees_a_gpu():
    assert resolve_device("auto", num_gpus=1) == "cuda"


def test_cuda_without_a_gpu_is_an_error():
    with pytest.raises(ConfigError, match="sees no GPU"):
        resolve_device("cuda", num_gpus=0)


def test_hnsw_stays_on_the_cpu_and_refuses_cuda():
    assert resolve_device("auto", num_gpus=1, kind="hnsw") == "cpu"
    with pytest.raises(ConfigError, match="no GPU HNSW"):
        resolve_device("cuda", num_gpus=1, kind="hnsw")


def _torch_knn(q: torch.Tensor, base: torch.Tensor, k: int):
    d = torch.cdist(q.double(), base.double()) ** 2
    dist, pos = torch.topk(d, k, largest=False)
    return dist.float(), pos


def test_gpu_path_keeps_its_vector_copy_in_sync_through_evictions_and_removals(monkeypatch):
    # the GPU code path with its device-side search swapped for a CPU torch search:
    # it checks the store's bookkeeping of the copy, not FAISS's GPU kernel
    monkeypatch.setattr(vs.gpu, "faiss_gpu_count", lambda: 1)
    monkeypatch.setattr(
        vs.gpu,
        "make_gpu_mirror",
        lambda dim, metric, device_index: TorchMirror(dim, torch.device("cpu"), _torch_knn),
    )
    mirrored = VectorStore(DIM, capacity=50, eviction="reservoir", device="auto")
    plain = VectorStore(DIM, capacity=50, eviction="reservoir", device="cpu")
    assert mirrored.device == "cuda"
    for i in range(8):
        batch = vectors(20, seed=i)
        mirrored.add(batch)
        plain.add(batch)
    mirrored.remove(mirrored.ids()[:7])
    plain.remove(plain.ids()[:7])
    q = vectors(10, seed=99)
    np.testing.assert_array_equal(mirrored.search(q, 5).ids, plain.search(q, 5).ids)


def test_gpu_ivf_copy_is_refreshed_after_the_index_changes(monkeypatch):
    import faiss

    copies = []

    def fake_gpu_copy(index, resources, device_index):  # a CPU clone stands in for the GPU copy
        copies.append(index.ntotal)
        return faiss.clone_index(index)

    monkeypatch.setattr(vs.gpu, "faiss_gpu_count", lambda: 1)
    monkeypatch.setattr(vs.gpu, "make_gpu_index", fake_gpu_copy)
    monkeypatch.setattr(vs.gpu, "new_gpu_resources", lambda: object())
    monkeypatch.setattr(vs.gpu, "_GPU_RESOURCES", None)  # the shared resources: a fresh fake
    s = VectorStore(DIM, kind="ivf", device="cuda", **SMALL_IVF)
    base = vectors(60)
    s.add(base)
    s.search(base[:3], 2)
    s.search(base[:3], 2)  # unchanged index: no new copy
    s.remove([0])
    hits = s.search(base[:3], 2).ids
    assert copies == [60, 59]
    assert 0 not in hits


@pytest.mark.skipif(
    __import__("faiss").get_num_gpus() == 0 or not torch.cuda.is_available(),
    reason="needs a GPU that FAISS and torch both see",
)
def test_flat_on_the_gpu_finds_the_same_neighbours_as_on_the_cpu():
    base, q = clustered(20000, dim=32), clustered(100, seed=1, dim=32)
    cpu = VectorStore(32, device="cpu")
    gpu = VectorStore(32, device="cuda")
    cpu.add(base)
    gpu.add(base)
    np.testing.assert_array_equal(gpu.search(q, 10).ids, cpu.search(q, 10).ids)


# ---------------------------------------------------------------- capacity and eviction
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("policy", POLICIES)
def test_capacity_is_never_exceeded_and_survivors_keep_their_ids(kind, policy):
    rng = np.random.default_rng(0)
    s = store(kind, capacity=60, eviction=policy)
    written: dict[int, np.ndarray] = {}
    for step in range(25):
        batch = vectors(int(rng.integers(1, 30)), seed=step)
        ids = s.add(batch, labels=rng.integers(0, 4, batch.shape[0]))
        written.update({int(i): v for i, v in zip(ids, batch, strict=True) if i >= 0})
        if step % 5 == 4:
            s.search(vectors(3, seed=100 + step), 2)
        if step == 12:
            s.remove(s.ids()[:5])
        assert len(s) <= 60
    stored = s.ids()
    np.testing.assert_array_equal(s.get(stored).vectors, np.stack([written[i] for i in stored]))
    np.testing.assert_array_equal(s.search(s.get(stored[-3:]).vectors, 1).ids[:, 0], stored[-3:])
    check_consistent(s)


def test_hnsw_rebuilds_its_graph_once_masked_nodes_outnumber_live_ones():
    s = store("hnsw", capacity=20, eviction="fifo")
    for step in range(60):  # 1200 writes into 20 slots: 1180 graph nodes masked
        s.add(vectors(20, seed=step))
    assert s._index.ann.ntotal < 1200  # rebuilt at least once
    last = vectors(20, seed=59)
    np.testing.assert_array_equal(s.search(last, 1).ids[:, 0], np.arange(1180, 1200))
    check_consistent(s)


def test_a_batch_larger_than_the_capacity_keeps_its_newest_items_under_fifo():
    s = store(capacity=4, eviction="fifo")
    ids = s.add(vectors(6))
    np.testing.assert_array_equal(ids, [-1, -1, 0, 1, 2, 3])
    assert len(s) == 4


def test_fifo_evicts_the_oldest_written():
    s = store(capacity=5, eviction="fifo")
    for i in range(5):
        s.add(vectors(1, seed=i))
    s.search(s.get([0]).vectors, 1)  # a recall does not save it under fifo
    s.add(vectors(2, seed=9))
    assert sorted(s.ids().tolist()) == [2, 3, 4, 5, 6]


def test_lru_evicts_the_least_recently_recalled():
    s = store(capacity=5, eviction="lru")
    for i in range(5):
        s.add(vectors(1, seed=i))
    s.search(s.get([0, 1]).vectors, 1)  # 0 and 1 recalled at time 5
    s.add(vectors(2, seed=9))  # 2 and 3 were last touched longest ago
    assert sorted(s.ids().tolist()) == [0, 1, 4, 5, 6]


def test_retention_evicts_the_lowest_exp_minus_t_over_s():
    s = store(capacity=4, eviction="retention")
    s.add(vectors(4), time=0)  # ids 0..3, strength 1
    for t in (1, 2, 3):
        s.mark_recalled([1], time=t)  # id 1: last recalled at 3, S = 4
    s.mark_recalled([2], time=4)  # id 2: last recalled at 4, S = 2
    s.mark_recalled([3], time=6)  # id 3: last recalled at 6, S = 2
    # at time 8, t / S: id 0 8/1, id 1 5/4, id 2 4/2, id 3 2/2; lowest R = largest t / S.
    # least-recently-recalled order would be 0, 1, 2, 3: strength saves id 1 over id 2
    s.add(vectors(1, seed=5), time=8)
    assert sorted(s.ids().tolist()) == [1, 2, 3, 4]
    s.add(vectors(1, seed=6), time=8)
    assert sorted(s.ids().tolist()) == [1, 3, 4, 5]


def test_reservoir_keeps_each_offered_item_with_equal_probability():
    stream, capacity, runs = 40, 8, 600
    kept = np.zeros(stream)
    for run in range(runs):
        s = VectorStore(2, capacity=capacity, eviction="reservoir", device="cpu", seed=run)
        x = np.zeros((stream, 2), dtype=np.float32)
        x[:, 0] = np.arange(stream)  # each vector names its position in the stream
        for start in range(0, stream, 5):
            s.add(x[start : start + 5])
        kept[s.get(s.ids()).vectors[:, 0].astype(int)] += 1
    frequency = kept / runs
    # each item is kept with probability 8 / 40 = 0.2 (binomial sd over 600 runs: 0.016)
    assert np.abs(frequency - capacity / stream).max() < 0.07
    assert abs(frequency[:20].mean() - frequency[20:].mean()) < 0.03


def test_reservoir_reports_refused_items_with_minus_one():
    s = store(capacity=3, eviction="reservoir", seed=1)
    ids = np.concatenate([s.add(vectors(1, seed=i)) for i in range(40)])
    refused = ids == -1
    assert refused.any() and len(s) == 3
    assert set(s.ids().tolist()) <= set(ids[~refused].tolist())


def test_class_balanced_evicts_from_the_largest_class():
    s = store(capacity=8, eviction="class_balanced")
    s.add(vectors(8), labels=[0, 0, 0, 0, 0, 0, 1, 1])
    s.add(vectors(3, seed=1), labels=[1, 2, 2])
    labels = s.get(s.ids()).payload.label
    assert np.bincount(labels).tolist() == [3, 3, 2]


def test_class_balanced_keeps_classes_within_one_of_each_other():
    rng = np.random.default_rng(0)
    s = store(capacity=30, eviction="class_balanced")
    for step in range(20):
        s.add(vectors(10, seed=step), labels=rng.integers(0, 3, 10) if step < 10 else 2)
    counts = np.bincount(s.get(s.ids()).payload.label)
    assert counts.max() - counts.min() <= 1


def test_removals_per_class_levels_the_largest_classes_first():
    take = ClassBalancedEviction.removals_per_class(
        np.array([9, 3, 7, 1]), 6, np.random.default_rng(0)
    )
    assert take.tolist() == [4, 0, 2, 0]


def test_lowest_breaks_ties_by_the_secondary_key():
    primary = np.array([5, 1, 3, 1, 3, 9])
    secondary = np.array([0, 10, 7, 11, 2, 1])
    assert sorted(lowest(primary, secondary, 3).tolist()) == [1, 3, 4]


def test_a_custom_policy_that_overfills_the_store_is_rejected():
    class KeepEverything(EvictionPolicy):
        name = "keep"

        def plan(self, view: EvictionView, rng: np.random.Generator) -> EvictionPlan:
            return EvictionPlan(np.ones(view.new_ids.shape[0], bool), np.empty(0, np.int64))

    s = VectorStore(DIM, capacity=3, eviction=KeepEverything(), device="cpu")
    s.add(vectors(3))
    with pytest.raises(ConfigError, match="would exceed capacity=3"):
        s.add(vectors(1))


def test_make_eviction_passes_policy_instances_through():
    policy = ClassBalancedEviction()
    assert make_eviction(policy) is policy


# ---------------------------------------------------------------- persistence
@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_is_exact(tmp_path, kind):
    s = store(kind, capacity=70, eviction="reservoir", metric="cosine", seed=4)
    for i in range(6):
        s.add(
            vectors(25, seed=i),
            labels=np.arange(25) % 5,
            tasks=i,
            inputs=torch.full((25, 2), float(i), dtype=torch.bfloat16),
        )
        s.search(vectors(2, seed=50 + i), 3)
    s.remove(s.ids()[:3])
    s.save(tmp_path / "store.bin")
    loaded = VectorStore.load(tmp_path / "store.bin", device="cpu")

    a, b = s.get(s.ids()), loaded.get(loaded.ids())
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.vectors, b.vectors)
    for name in ("label", "task", "time", "last_recall", "recalls", "strength"):
        np.testing.assert_array_equal(getattr(a.payload, name), getattr(b.payload, name))
    assert torch.equal(a.payload.inputs, b.payload.inputs)
    q = vectors(9, seed=77)
    ra, rb = s.search(q, 4), loaded.search(q, 4)
    np.testing.assert_array_equal(ra.ids, rb.ids)
    np.testing.assert_array_equal(ra.distances, rb.distances)
    # the generator state travels too: both evict the same way afterwards
    more = vectors(30, seed=123)
    inputs = torch.zeros((30, 2), dtype=torch.bfloat16)
    np.testing.assert_array_equal(
        s.add(more, labels=0, inputs=inputs), loaded.add(more, labels=0, inputs=inputs)
    )
    np.testing.assert_array_equal(np.sort(s.ids()), np.sort(loaded.ids()))


def test_save_replaces_the_file_atomically_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "store.bin"
    s = store()
    s.add(vectors(3))
    s.save(path)
    s.add(vectors(2, seed=1))
    s.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["store.bin"]
    assert len(VectorStore.load(path)) == 5


def test_a_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "store.bin"
    s = store()
    s.add(vectors(50))
    s.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(StoreFileError, match="truncated"):
        VectorStore.load(path)
    path.write_bytes(data[:20])
    with pytest.raises(StoreFileError, match="too short"):
        VectorStore.load(path)


def test_an_altered_file_fails_its_checksum(tmp_path):
    path = tmp_path / "store.bin"
    s = store()
    s.add(vectors(50))
    s.save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(StoreFileError, match="sha256"):
        VectorStore.load(path)


def test_a_file_of_another_kind_or_version_is_refused(tmp_path):
    path = tmp_path / "store.bin"
    s = store()
    s.add(vectors(5))
    s.save(path)
    data = bytearray(path.read_bytes())
    data[8] = 99  # format version field
    path.write_bytes(bytes(data))
    with pytest.raises(StoreFileError, match="format version 99"):
        VectorStore.load(path)
    path.write_bytes(b"PK\x03\x04" + bytes(60))
    with pytest.raises(StoreFileError, match="not a VectorStore file"):
        VectorStore.load(path)


def test_a_saved_store_file_follows_the_umask(tmp_path):
    import os

    from continual.memory.vector_store import VectorStore

    store = VectorStore(4, kind="flat", device="cpu")
    old = os.umask(0o022)
    try:
        store.save(tmp_path / "store.bin")
    finally:
        os.umask(old)
    assert (tmp_path / "store.bin").stat().st_mode & 0o777 == 0o644
