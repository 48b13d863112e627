"""Store files: those written before issue 21's refactor (format version 1) still load
unchanged, and damaged or unsaveable stores are refused.

``data/store_v1_<kind>.cvs`` were written by the code of commit 0e008eb: dim 4, l2, capacity
24, lru, seed 7; five adds of 6 vectors (labels, task = add number, 2-value inputs 12 a + 0..11),
a recalling search after each (lru evictions at capacity), then three ids removed.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from continual.memory.eviction import FifoEviction, LruEviction
from continual.memory.store_file import FORMAT_VERSION, StoreFileError, decode, encode
from continual.memory.vector_store import VectorStore
from continual.types import ConfigError

DATA = Path(__file__).parent / "data"
KINDS = ("flat", "ivf", "hnsw")


@pytest.mark.parametrize("kind", KINDS)
def test_a_version_1_store_file_loads_with_its_memories_and_settings(kind):
    s = VectorStore.load(DATA / f"store_v1_{kind}.cvs", device="cpu")
    assert (s.kind, s.policy.name, s.capacity, s.is_trained, len(s)) == (kind, "lru", 24, True, 21)
    assert sorted(s.ids().tolist()) == [4, 6, *range(8, 24), 27, 28, 29]
    m = s.get([21, 22])
    assert m.payload.label.tolist() == [0, 2] and m.payload.task.tolist() == [3, 3]
    assert m.payload.last_recall.tolist() == [4, 4] and m.payload.recalls.tolist() == [0, 0]
    assert m.payload.inputs.tolist() == [[42.0, 43.0], [44.0, 45.0]]
    assert m.vectors[0].tolist() == pytest.approx([-0.73548329, 0.24978538, 1.03145313, 0.16100958])


@pytest.mark.parametrize("kind", KINDS)
def test_a_version_1_store_file_searches_as_it_did_when_saved(kind):
    s = VectorStore.load(DATA / f"store_v1_{kind}.cvs", device="cpu")
    q = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    assert s.search(q, 3, recall=False).ids.tolist() == [[21, 16, 8], [21, 4, 12], [29, 22, 28]]


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_a_version_1_store_file_saves_back_to_the_same_bytes(kind):
    path = DATA / f"store_v1_{kind}.cvs"
    assert VectorStore.load(path, device="cpu").to_bytes() == path.read_bytes()


def _rewritten(data: bytes, change) -> bytes:
    """The store bytes with their record and arrays changed by ``change`` (checksum renewed)."""
    meta, arrays = decode(data, "test")
    change(meta, arrays)
    return encode(meta, arrays)


def test_a_file_whose_columns_disagree_with_its_count_is_refused_as_inconsistent():
    s = VectorStore(4, device="cpu")
    s.add(np.ones((5, 4), dtype=np.float32))

    def drop_a_label(meta, arrays):
        arrays["col_label"] = arrays["col_label"][:4]

    with pytest.raises(StoreFileError, match="column lengths disagree with n=5"):
        VectorStore.from_bytes(_rewritten(s.to_bytes(), drop_a_label), device="cpu")


def test_a_file_whose_ivf_index_disagrees_with_its_vectors_is_refused():
    s = VectorStore(4, kind="ivf", nlist=2, train_size=20, device="cpu")
    s.add(np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32))

    def forget_one_row(meta, arrays):
        meta["n"] = 29
        for name in [k for k in arrays if k == "vectors" or k.startswith("col_")]:
            arrays[name] = arrays[name][:29]

    with pytest.raises(StoreFileError, match="the IVF index holds 30 vectors, expected 29"):
        VectorStore.from_bytes(_rewritten(s.to_bytes(), forget_one_row), device="cpu")


def test_a_file_missing_a_record_field_is_refused_as_inconsistent():
    s = VectorStore(4, device="cpu")
    with pytest.raises(StoreFileError, match="inconsistent VectorStore contents"):
        VectorStore.from_bytes(_rewritten(s.to_bytes(), lambda meta, _: meta.pop("seen")), device="cpu")


def test_a_store_with_a_custom_eviction_policy_refuses_to_save():
    class Oldest(FifoEviction):  # a user's own policy: the file could not name it
        name = "fifo"

    s = VectorStore(4, capacity=3, eviction=Oldest(), device="cpu")
    with pytest.raises(ConfigError, match="cannot save a store with a custom eviction policy"):
        s.to_bytes()


def test_a_file_whose_checksummed_payload_is_no_npz_is_refused_as_inconsistent():
    # header as the format says: magic, version (uint32), payload length (uint64), sha256
    payload = b"not an npz archive at all"
    header = struct.pack("<8sIQ32s", b"CVSTORE\x00", FORMAT_VERSION, len(payload), hashlib.sha256(payload).digest())
    with pytest.raises(StoreFileError, match="test.cvs: inconsistent VectorStore contents"):
        VectorStore.from_bytes(header + payload, device="cpu", source="test.cvs")


def test_a_file_whose_vectors_have_another_dimension_is_refused():
    s = VectorStore(4, device="cpu")
    s.add(np.ones((5, 4), dtype=np.float32))

    def widen(meta, arrays):
        arrays["vectors"] = np.ones((5, 5), dtype=np.float32)

    with pytest.raises(StoreFileError, match="column lengths disagree with n=5"):
        VectorStore.from_bytes(_rewritten(s.to_bytes(), widen), device="cpu")


def test_a_file_whose_raw_inputs_are_shorter_than_their_shape_is_refused_as_inconsistent():
    s = VectorStore(4, device="cpu")
    s.add(np.ones((5, 4), dtype=np.float32), inputs=torch.arange(10.0).view(5, 2))

    def drop_a_byte(meta, arrays):
        arrays["inputs"] = arrays["inputs"][:-1]

    with pytest.raises(StoreFileError, match="inconsistent VectorStore contents"):
        VectorStore.from_bytes(_rewritten(s.to_bytes(), drop_a_byte), device="cpu")


def test_a_file_whose_hnsw_node_map_disagrees_with_its_count_is_refused_as_inconsistent():
    s = VectorStore(4, kind="hnsw", device="cpu")
    s.add(np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32))

    def forget_a_node(meta, arrays):
        arrays["slot_node"] = arrays["slot_node"][:5]

    with pytest.raises(StoreFileError, match="inconsistent VectorStore contents"):
        VectorStore.from_bytes(_rewritten(s.to_bytes(), forget_a_node), device="cpu")


class _Oldest(FifoEviction):
    name = "oldest"  # a user's own policy under its own name: no file could name it


@pytest.mark.parametrize("policy", [_Oldest, type("Impostor", (FifoEviction,), {"name": "fifo"})])
def test_saving_a_store_with_a_custom_policy_writes_nothing_and_keeps_the_earlier_file(tmp_path, policy):
    path = tmp_path / "store.cvs"
    VectorStore(4, capacity=3, device="cpu").save(path)
    before = path.read_bytes()
    custom = VectorStore(4, capacity=3, eviction=policy(), device="cpu")
    custom.add(np.ones((2, 4), dtype=np.float32))
    with pytest.raises(ConfigError, match="cannot save a store with a custom eviction policy"):
        custom.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["store.cvs"]  # no temporary file left behind


def test_a_named_policy_passed_as_an_instance_saves_and_loads_back(tmp_path):
    s = VectorStore(4, capacity=3, eviction=LruEviction(), device="cpu")
    for row in np.eye(4, dtype=np.float32)[:3]:  # ids 0, 1, 2 written at times 1, 2, 3
        s.add(row[None])
    s.search(np.eye(4, dtype=np.float32)[:1], 1)  # id 0 recalled at time 3: id 1 is now the LRU
    s.save(tmp_path / "store.cvs")
    loaded = VectorStore.load(tmp_path / "store.cvs", device="cpu")
    assert type(loaded.policy) is LruEviction
    loaded.add(np.ones((1, 4), dtype=np.float32))  # full: evicts the least recently used
    assert sorted(loaded.ids().tolist()) == [0, 2, 3]
