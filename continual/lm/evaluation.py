"""Evaluate causal LMs: greedy exact match on cloze probes, loss / perplexity on text.

Exact match follows Jang et al. (ICLR 2022) and SQuAD: answers are lower-cased, stripped
of punctuation, articles (a, an, the) and extra spaces before comparison; the score is a
percentage. A decoder LM continues the sentence ("Paris. It is ..."), so the continuation
must be matched to the gold answer by a rule (``MATCH_RULES``):

- ``prefix`` (our default): right when the first k normalised words of the continuation
  equal the k normalised words of the gold answer. Departure from the paper: its T5
  generates only the masked span; for a decoder LM this credits "Paris, the city of light"
  as well as "Paris.", so the score does not depend on how the model ends its sentence.
- ``strict``: the official GPT-2 evaluation (``models/GPT2_Model.py``, ``_generative_step``
  and ``exact_match_score``): the continuation is cut after its first "." (if it has one),
  then its normalised text must EQUAL the normalised gold. "Paris, France." is wrong; a
  gold with a "." inside ("St. Louis") can never match, as in the official code.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (SQuAD normalisation)."""
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


MATCH_RULES = ("prefix", "strict")


def answer_matches(prediction: str, gold: str, rule: str = "prefix") -> bool:
    """True when a generated continuation answers ``gold`` under ``rule`` (see the module
    docstring): ``prefix``, it starts with the gold answer word for word once normalised;
    ``strict``, cut after its first ".", it equals the gold answer once normalised."""
    gold_norm = normalize_answer(gold)
    if not gold_norm:
        return False
    if rule == "prefix":
        gold_words = gold_norm.split()
        return normalize_answer(prediction).split()[: len(gold_words)] == gold_words
    if rule == "strict":
        cut = prediction.find(".")
        return normalize_answer(prediction if cut < 0 else prediction[: cut + 1]) == gold_norm
    raise ValueError(f"unknown match rule {rule!r}; choose one of {list(MATCH_RULES)}")


def exact_match(predictions: Sequence[str], golds: Sequence[str], rule: str = "prefix") -> float:
    """Percentage of predictions that match their gold answers under ``rule`` (0-100); 0 for no probes."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} gold answers")
    if not golds:
        return 0.0
    return 100.0 * sum(answer_matches(p, g, rule) for p, g in zip(predictions, golds)) / len(golds)


def answer_token_budget(tokenizer, golds: Sequence[str], margin: int = 2) -> int:
    """New tokens to generate: the longest gold answer (with its leading space) plus a margin."""
    longest = max((len(tokenizer(" " + g, add_special_tokens=False)["input_ids"]) for g in golds),
                  default=1)
    return longest + margin


@torch.no_grad()
def greedy_answers(model: nn.Module, tokenizer, prompts: Sequence[str], max_new_tokens: int = 8,
                   batch_size: int = 32, num_beams: int = 1, use_cache: bool = True) -> list[str]:
    """Greedy (or ``num_beams``-beam) continuations of ``prompts`` (left-padded batches);
    returns only the new text. ``use_cache=False`` recomputes the whole sequence each step
    (for added modules that keep no KV cache)."""
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    out: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(list(prompts[start:start + batch_size]), return_tensors="pt",
                            padding=True, add_special_tokens=False).to(device)
            # decoder LMs take no segment ids: transformers 4.5x's generate refuses them
            # ("model_kwargs are not used") where the tokenizer adds them
            enc.pop("token_type_ids", None)
            beams = {"num_beams": num_beams, "early_stopping": True} if num_beams > 1 else {}
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, use_cache=use_cache, **beams)
            out.extend(tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:],
                                              skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


@torch.no_grad()
def block_loss(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
               batch_size: int = 16) -> float:
    """Mean next-token cross-entropy (nats per predicted token) over blocks.

    input_ids: (N, T) token ids; labels: (N, T) with -100 where no loss is taken (defaults
    to input_ids, i.e. every next token counts).
    """
    was_training = model.training
    model.eval()
    labels = input_ids if labels is None else labels
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, input_ids.shape[0], batch_size):
        x = input_ids[start:start + batch_size].to(device)
        y = labels[start:start + batch_size].to(device)
        logits = model(input_ids=x).logits[:, :-1]
        target = y[:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                               ignore_index=-100, reduction="sum")
        total += float(loss)
        count += int((target != -100).sum())
    model.train(was_training)
    return total / max(count, 1)


def text_loss(model: nn.Module, tokenizer, texts: Sequence[str], max_length: int = 256,
              batch_size: int = 16) -> float:
    """Mean next-token loss on each text on its own (right-padded, padding ignored)."""
    eos = tokenizer.eos_token or ""
    enc = tokenizer([t + eos for t in texts], return_tensors="pt", padding=True, truncation=True,
                    max_length=max_length, add_special_tokens=False)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return block_loss(model, enc["input_ids"], labels, batch_size)


def perplexity(loss: float) -> float:
    """exp(mean token loss), capped to avoid overflow."""
    return math.exp(min(loss, 50.0))
