"""Corpus runs read as LM researchers read them: perplexity and bits per byte beside the loss,
and one definition of forgetting for every stream (hand-computed values)."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    from continual.models.lm import byte_tokenizer
    from continual.streams.text import CorpusTextStream

    folder = tmp_path_factory.mktemp("text")
    for name, word in (("a", "alpha "), ("b", "beta é ")):  # b: a two-byte character in every word
        (folder / f"{name}.txt").write_text((word * 2000).strip())
    stream = CorpusTextStream(files=[str(folder / "a.txt"), str(folder / "b.txt")], seq_len=16,
                              batch_size=4, steps_per_task=2, max_eval_blocks=4, seed=0)
    stream.prepare(None, byte_tokenizer())
    return stream


def test_bits_per_byte_divide_the_loss_by_the_bytes_each_predicted_token_holds(corpora):
    tok = corpora.inner.tokenizer
    for k in range(2):
        blocks = corpora.inner.eval_blocks(k)[:4]
        # the byte tokenizer: one token per byte, and special tokens (end of text) hold none
        text_tokens = sum(t not in tok.all_special_ids for row in blocks for t in row[1:].tolist())
        assert corpora.bytes_per_token(k) == pytest.approx(text_tokens / (blocks.shape[0] * 15))
    scores = corpora.language_scores({"loss/a": 2.0, "loss/b": 1.0})
    assert scores["ppl/a"] == pytest.approx(math.exp(2.0))
    assert scores["bpb/a"] == pytest.approx(2.0 / math.log(2) / corpora.bytes_per_token(0))
    assert scores["bpb/b"] == pytest.approx(1.0 / math.log(2) / corpora.bytes_per_token(1))


def test_forgetting_by_corpus_is_the_engines_forgetting_keyed_by_corpus(corpora):
    # rows: init, after task a, after task b (the end): the loss on a rose from 2 to 3
    rows = [{"loss/a": 5.0, "loss/b": 5.0}, {"loss/a": 2.0, "loss/b": 4.0}, {"loss/a": 3.0, "loss/b": 1.0}]
    summary = corpora.summary_metrics(rows, [1, 2])
    # a: best task-end loss before the end 2.0, final 3.0 -> 1.0 (worse); b is the last task
    assert summary["forgetting_by_corpus"] == {"a": pytest.approx(1.0)}
    assert summary["adaptation_loss"] == {"a": 2.0, "b": 1.0}
    assert summary["final_avg_loss"] == pytest.approx(2.0)
    assert "avg_forgetting" not in summary  # the engine's forgetting says it once
    assert summary["final_bpb"]["a"] == pytest.approx(3.0 / math.log(2) / corpora.bytes_per_token(0))
