"""Corpus streams: packing, replay share, determinism."""

import pytest
import torch

from continual.streams.corpora import Corpus, CorpusStream, pack_documents, pack_texts, split_sentences
from continual.types import ConfigError


def _corpora():
    return [Corpus(f"c{k}", [f"corpus {k} says {'abc'[k]} " * 40] * 4, [f"held out {k} " * 30])
            for k in range(3)]


def _stream(tiny, **kw):
    _, tok = tiny
    args = dict(seq_len=32, batch_size=8, steps_per_task=5, seed=0)
    args.update(kw)
    return CorpusStream(_corpora(), tok, **args)


def test_replay_share_of_each_batch_comes_from_earlier_corpora(tiny):
    stream = _stream(tiny, replay_share=0.25)
    assert all((b.true_task == 0).all() for b in stream.batches(0))
    for k in (1, 2):
        for b in stream.batches(k):
            assert (b.true_task == k).sum() == 6
            assert ((b.true_task >= 0) & (b.true_task < k)).sum() == 2


def test_no_replay_by_default(tiny):
    stream = _stream(tiny)
    assert all((b.true_task == 2).all() for b in stream.batches(2))


def test_batches_are_deterministic_per_seed(tiny):
    a = [b.x for b in _stream(tiny, replay_share=0.5).batches(1)]
    b = [b.x for b in _stream(tiny, replay_share=0.5).batches(1)]
    c = [b.x for b in _stream(tiny, replay_share=0.5, seed=1).batches(1)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_steps_are_numbered_globally(tiny):
    stream = _stream(tiny, steps_per_task=[3, 4, 5])
    assert [b.step for b in stream.batches(1)] == [3, 4, 5, 6]


def test_bad_replay_share_is_a_config_error(tiny):
    with pytest.raises(ConfigError, match="replay_share"):
        _stream(tiny, replay_share=1.0)


def test_pack_texts_cuts_full_blocks(tiny):
    _, tok = tiny
    blocks = pack_texts(tok, ["x" * 70], 32)
    assert blocks.shape == (2, 32)  # 71 tokens with EOS -> 2 full blocks


def test_pack_documents_keeps_documents_whole_and_masks_padding(tiny):
    _, tok = tiny
    x, y = pack_documents(tok, ["a" * 10, "b" * 10, "c" * 20], 24)
    assert x.shape == (2, 24)
    assert (y[0, 22:] == -100).all() and (y[1, 21:] == -100).all()


def test_split_sentences():
    assert split_sentences("One two. Three four! five six. Seven") == [
        "One two.", "Three four! five six.", "Seven"]
