"""Shared fixtures for the language-model tests: a tiny model and a small knowledge stream."""

import pytest
import torch

from continual.models.lm import tiny_causal_lm
from continual.streams.knowledge import KnowledgeStream, probe_prompt, real_facts

FILLER = [f"Filler sentence number {i} talks about nothing in particular." for i in range(300)]


def capital_oracle(prompts):
    """A stand-in base model that knows every capital and nothing else."""
    lookup = {probe_prompt(f): f.object for f in real_facts() if f.relation == "capital"}
    return [" " + lookup.get(p, "nothing") + ". More text" for p in prompts]


@pytest.fixture(name="capital_oracle")
def _capital_oracle():
    return capital_oracle


@pytest.fixture(name="filler")
def _filler():
    return FILLER


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def tiny():
    """(model, tokenizer): a 2-layer, 32-wide Llama-style LM with the byte tokenizer."""
    return tiny_causal_lm(hidden_size=32, n_layers=2, n_heads=4, seed=0)


@pytest.fixture(scope="session")
def knowledge_data():
    return KnowledgeStream(n_per_set=12, n_phases=2, filler_texts=FILLER, n_review=60,
                           n_heldout=10, seed=0).build(capital_oracle)


@pytest.fixture
def lm_batch(tiny):
    """A (4, 32) batch of byte tokens with the last 4 positions of row 0 as padding."""
    from continual.types import Batch

    _, tok = tiny
    text = "The capital of France is Paris. The capital of Peru is Lima. " * 2
    ids = torch.tensor(tok(text)["input_ids"][:32]).repeat(4, 1)
    y = ids.clone()
    y[0, -4:] = -100
    return Batch(x=ids, y=y)
