"""The tiny test model, the byte tokenizer, evaluation helpers and the SmolLM2 locator."""

import pytest
import torch

from continual.lm.evaluation import (
    answer_matches,
    block_loss,
    exact_match,
    greedy_answers,
    normalize_answer,
    text_loss,
)
from continual.models.lm import build_lm, byte_tokenizer, load_causal_lm
from continual.types import ConfigError


def test_byte_tokenizer_round_trips_unicode():
    tok = byte_tokenizer()
    text = "Zürich is a city in Switzerland."
    assert tok.decode(tok(text)["input_ids"]) == text
    assert len(tok) == 259


def test_tiny_model_maps_ids_to_logits_over_the_vocabulary(tiny):
    model, tok = tiny
    x = torch.tensor([tok("Paris")["input_ids"]])
    assert model(input_ids=x).logits.shape == (1, x.shape[1], len(tok))


def test_tiny_model_is_deterministic_per_seed():
    a, _ = build_lm("tiny", hidden_size=32, n_layers=1, seed=3)
    b, _ = build_lm("tiny", hidden_size=32, n_layers=1, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_normalisation_drops_case_punctuation_and_articles():
    assert normalize_answer("  The Euro!  ") == "euro"


def test_answer_matches_on_leading_words_only():
    assert answer_matches(" Paris. It is a big city", "Paris")
    assert answer_matches(" andorra la vella, the capital", "Andorra la Vella")
    assert not answer_matches(" Lyon, not Paris", "Paris")


def test_exact_match_is_a_percentage():
    assert exact_match([" Paris.", " Rome"], ["Paris", "Lima"]) == 50.0


def test_greedy_answers_return_only_new_text_and_restore_padding_side(tiny):
    model, tok = tiny
    out = greedy_answers(model, tok, ["The capital of France is", "Hi"], max_new_tokens=3)
    assert len(out) == 2 and tok.padding_side == "right"
    assert all(len(tok(o, add_special_tokens=False)["input_ids"]) <= 3 for o in out)


def test_text_loss_ignores_padding(tiny):
    model, tok = tiny
    alone = text_loss(model, tok, ["short text"])
    padded = text_loss(model, tok, ["short text", "a much longer text that forces padding"])
    longer = text_loss(model, tok, ["a much longer text that forces padding"])
    n_s, n_l = len("short text") + 1, len("a much longer text that forces padding") + 1
    assert padded == pytest.approx((alone * (n_s - 1) + longer * (n_l - 1)) / (n_s + n_l - 2),
                                   rel=1e-4)


def test_block_loss_of_a_random_model_is_near_log_vocab(tiny):
    model, tok = tiny
    x = torch.randint(0, 256, (2, 16))
    assert block_loss(model, x) == pytest.approx(torch.log(torch.tensor(len(tok))).item(), rel=0.1)


def test_offline_loading_of_an_unknown_model_says_what_to_do():
    with pytest.raises(ConfigError, match="offline"):
        load_causal_lm("no-such-org/no-such-model", offline=True)
