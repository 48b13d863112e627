"""Light tuning: fine-tune the evaluated LM briefly on held-out facts, score it, restore it exactly.

The official GPT-2 evaluation of Jang et al. (ICLR 2022; ``Datasets.py`` and
``configs/GPT2/evaluation/*`` of github.com/joeljang/continual-knowledge-learning) does not
probe the continually trained decoder as it is: it first fine-tunes the whole model for one
epoch on 5,000 T-REx facts written as "<prompt> <answer>." (lr 1e-3, batch 32, Adafactor, no
schedule), so that the model answers a cloze prompt with a short span and a full stop, and
then scores the probes. ``light_tuned(model, tokenizer, texts, ...)`` does that around a
scoring call and puts the model back exactly: every weight and buffer bit for bit, every
parameter's ``requires_grad``, every module's train/eval mode, every parameter's ``.grad``
and the global RNG (the tuning runs in a forked RNG), so the continual run goes on as if
nothing had happened.

Departures from the official code: the facts are our own real facts that no probe set holds
(``KnowledgeData.unprobed_real_facts``), not T-REx, and far fewer by default (the whole real
pool has about 1,100 facts, and light tuning runs at every eval point on CPU); the loss is
taken on every token of the fact, as the official GPT-2 code does (its labels are its
inputs), padding excluded; a minibatch with a NaN/Inf loss is skipped (counted by
``LightTuningReport.skipped``) rather than stopping the run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class LightTuningReport:
    """What one light tuning did: facts, minibatches skipped for a NaN/Inf loss, last epoch's
    mean loss, seconds spent training and restoring."""

    n_facts: int
    skipped: int = 0
    loss: float = float("nan")
    seconds: float = 0.0


def _next_token_loss(output, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a causal LM's output against labels (B, T), -100 ignored."""
    logits = output.logits[:, :-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)


def fact_batches(tokenizer, texts: Sequence[str], max_length: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input ids (N, T) of ``texts`` and labels (N, T): the ids, -100 on padding."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        enc = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    return enc["input_ids"], enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)


@contextmanager
def light_tuned(model: nn.Module, tokenizer, texts: Sequence[str], lr: float = 1e-3, batch_size: int = 32,
                optimizer: str = "adafactor", epochs: int = 1, seed: int = 0) -> Iterator[LightTuningReport]:
    """Inside the block, ``model`` is fine-tuned (every parameter, ``epochs`` shuffled passes
    over ``texts`` in minibatches of ``batch_size``, optimiser ``optimizer`` at a fixed
    ``lr``); on leaving it, the model is exactly as it was (see the module docstring).
    The shuffle is drawn from ``seed`` alone, so every eval point tunes the same way.
    Yields a ``LightTuningReport``. With no texts, nothing is trained."""
    from continual.strategies.base import make_optimizer, train_epochs

    report = LightTuningReport(len(texts))
    if not texts or epochs <= 0:
        yield report
        return
    t0 = time.perf_counter()
    params = list(model.parameters())
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    requires_grad = [p.requires_grad for p in params]
    grads = [p.grad for p in params]  # zero_grad(set_to_none) drops the reference, never writes to it
    modes = [m.training for m in model.modules()]
    device = params[0].device
    x, y = fact_batches(tokenizer, texts)
    x, y = x.to(device), y.to(device)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            opt = make_optimizer(params, optimizer, lr)
            generator = torch.Generator().manual_seed(seed)
            report.loss, report.skipped = train_epochs(
                model, opt, x, y, epochs, batch_size, _next_token_loss,
                generator=generator, skip_nonfinite=True, where="light tuning")
            del opt
        model.eval()
        report.seconds = time.perf_counter() - t0
        yield report
    finally:
        t1 = time.perf_counter()
        with torch.no_grad():
            model.load_state_dict(weights)
        for p, flag, grad in zip(params, requires_grad, grads):
            p.requires_grad_(flag)
            p.grad = grad
        for m, mode in zip(model.modules(), modes):
            m.training = mode
        report.seconds += time.perf_counter() - t1
