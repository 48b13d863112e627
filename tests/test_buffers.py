import pytest
import torch

from continual.memory.buffers import ClassBalancedBuffer, ReservoirBuffer, make_buffer
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


def test_sample_returns_stored_items():
    b = ReservoirBuffer(10)
    b.add(torch.arange(10).float()[:, None], torch.arange(10))
    x, y = b.sample(4)
    assert x.shape == (4, 1) and torch.equal(x[:, 0].long(), y)


def test_class_balanced_buffer_balances_classes():
    b = ClassBalancedBuffer(20, seed=0)
    for c in range(10):
        b.add(torch.randn(30, 2), torch.full((30,), c))
    assert torch.bincount(b.items()[1], minlength=10).tolist() == [2] * 10


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
