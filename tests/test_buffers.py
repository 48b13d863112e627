import numpy as np
import pytest
import torch

from continual.memory.buffers import GDumbBuffer, ReplayBuffer, ReservoirBuffer, make_buffer
from continual.memory.eviction import ReservoirEviction, reservoir_slots
from continual.types import ConfigError


def test_reservoir_never_exceeds_capacity_and_counts_seen():
    b = ReservoirBuffer(50, seed=0)
    for _ in range(30):
        b.add(torch.randn(10, 3), torch.randint(0, 5, (10,)))
    assert len(b) == 50 and b.seen == 300


def test_reservoir_keeps_items_uniformly():
    # item i is kept with probability capacity / n for every i: early and late halves alike
    kept_early = 0
    for seed in range(200):
        b = ReservoirBuffer(20, seed=seed)
        for i in range(10):
            b.add(torch.arange(i * 10, i * 10 + 10).float()[:, None], torch.zeros(10, dtype=torch.long))
        kept_early += int((b.items()[0] < 50).sum())
    share = kept_early / (200 * 20)
    assert 0.42 < share < 0.58


def test_reservoir_draws_are_those_of_earlier_releases():
    # values recorded with the buffer of commit 0e008eb (before it asked an eviction policy)
    b = ReservoirBuffer(6, seed=3)
    g = torch.Generator().manual_seed(0)
    for s in range(5):
        b.add(torch.arange(s * 4, s * 4 + 4).float()[:, None], torch.randint(0, 3, (4,), generator=g))
    assert b.items()[0][:, 0].long().tolist() == [14, 12, 16, 3, 10, 13]
    assert b.draw(4).tolist() == [0, 5, 1, 4]


def test_gdumb_draws_are_those_of_earlier_releases():
    # values recorded with ClassBalancedBuffer of commit 0e008eb
    b = GDumbBuffer(5, seed=3)
    for s in range(6):
        b.add(torch.arange(s * 4, s * 4 + 4).float()[:, None], torch.tensor([s % 3, s % 3, (s + 1) % 5, s % 2]))
    assert b.items()[0][:, 0].long().tolist() == [8, 1, 14, 5, 10]
    assert b.items()[1].tolist() == [2, 0, 4, 1, 3]
    assert b.draw(4).tolist() == [0, 2, 1, 4]


def test_buffer_and_store_share_one_reservoir_algorithm():
    # the buffer's slots are reservoir_slots' answer, with the buffer's own torch generator
    b = ReservoirBuffer(4, seed=7)
    b.add(torch.arange(6).float()[:, None], torch.zeros(6, dtype=torch.long))
    src, dst = reservoir_slots(0, 0, 6, 4, torch.Generator().manual_seed(7))
    expected = torch.zeros(4)
    expected[torch.from_numpy(dst)] = torch.from_numpy(src).float()
    assert torch.equal(b.items()[0][:, 0], expected)


def test_sample_returns_stored_items():
    b = ReservoirBuffer(10)
    b.add(torch.arange(10).float()[:, None], torch.arange(10))
    x, y = b.sample(4)
    assert x.shape == (4, 1) and torch.equal(x[:, 0].long(), y)


def test_gdumb_buffer_balances_classes():
    b = GDumbBuffer(20, seed=0)
    for c in range(10):
        b.add(torch.randn(30, 2), torch.full((30,), c))
    assert torch.bincount(b.items()[1], minlength=10).tolist() == [2] * 10


def test_gdumb_buffer_refuses_a_newcomer_of_a_largest_class():
    b = GDumbBuffer(4, seed=0)
    b.add(torch.arange(4).float()[:, None], torch.tensor([0, 0, 1, 1]))
    b.add(torch.tensor([[9.0]]), torch.tensor([1]))
    assert b.items()[0][:, 0].tolist() == [0.0, 1.0, 2.0, 3.0] and b.seen == 5


def test_state_dict_round_trip_is_exact():
    b = ReservoirBuffer(8, seed=1)
    b.add(torch.randn(20, 2), torch.randint(0, 3, (20,)))
    c = ReservoirBuffer(8, seed=5)
    c.load_state_dict(b.state_dict())
    assert torch.equal(b.items()[0], c.items()[0])
    assert torch.equal(b.sample(3)[0], c.sample(3)[0])


def test_capacity_below_one_is_an_error():
    with pytest.raises(ConfigError, match="at least 1"):
        ReservoirBuffer(0)


def test_unknown_buffer_kind_is_an_error():
    with pytest.raises(ConfigError, match="reservoir"):
        make_buffer("lifo", 10)


def test_a_policy_that_does_not_place_items_is_refused_with_the_ones_that_do():
    with pytest.raises(ConfigError, match="'reservoir' or 'gdumb'"):
        ReplayBuffer(10, policy="fifo")


def test_buffer_takes_a_policy_instance():
    b = ReplayBuffer(3, policy=ReservoirEviction())
    b.add(torch.arange(5).float()[:, None], torch.zeros(5, dtype=torch.long))
    assert len(b) == 3 and b.policy.name == "reservoir"


def test_old_buffer_name_class_balanced_still_builds_gdumb_with_a_warning():
    with pytest.warns(FutureWarning, match="renamed 'gdumb'.*buffer_kind=gdumb"):
        b = make_buffer("class_balanced", 10)
    assert isinstance(b, GDumbBuffer)


def test_old_class_name_still_imports_with_a_warning():
    from continual.memory import buffers

    with pytest.warns(FutureWarning, match="GDumbBuffer"):
        assert buffers.ClassBalancedBuffer is GDumbBuffer


def test_reservoir_slots_fill_free_slots_first_then_replace_distinct_slots():
    src, dst = reservoir_slots(2, 2, 2, 4, np.random.default_rng(0))
    assert src.tolist() == [0, 1] and dst.tolist() == [2, 3]
    src, dst = reservoir_slots(4, 4, 50, 4, np.random.default_rng(0))  # a numpy rng: the store's
    assert np.all(dst < 4) and np.unique(dst).shape == dst.shape and np.all(np.diff(src) > 0)


def test_a_negative_draw_is_refused_not_read_as_all_but_some():
    buf = ReservoirBuffer(capacity=5, seed=0)
    buf.add(torch.zeros(5, 2), torch.arange(5))
    assert buf.draw(3).numel() == 3
    with pytest.raises(ValueError, match="n must be >= 0"):
        buf.draw(-1)


def test_er_refuses_a_negative_replay_batch_before_training():
    from continual.models import build_model
    from continual.strategies.er import ER

    with pytest.raises(ConfigError, match="replay_batch_size must be >= 0, got -1"):
        ER(build_model("mlp", (1, 8, 8), 10, hidden=8), replay_batch_size=-1)
