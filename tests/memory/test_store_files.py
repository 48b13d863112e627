"""Store files written before issue 21's refactor (format version 1) still load, unchanged.

``data/store_v1_<kind>.cvs`` were written by the code of commit 0e008eb: dim 4, l2, capacity
24, lru, seed 7; five adds of 6 vectors (labels, task = add number, 2-value inputs 12 a + 0..11),
a recalling search after each (lru evictions at capacity), then three ids removed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from continual.memory.vector_store import VectorStore

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
