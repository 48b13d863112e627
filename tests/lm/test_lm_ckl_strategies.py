"""Each CKL strategy takes a step and changes what it should (and only that)."""

import copy

import pytest
import torch

from continual.strategies.ckl.kadapter import KAdapter
from continual.strategies.ckl.lora import LoRA
from continual.strategies.ckl.ltm_retrieval import HashingEmbedder, LTMRetrieval
from continual.strategies.ckl.mixreview import MixReview
from continual.strategies.ckl.recadam import RecAdam, RecAdamStrategy, sigmoid_anneal
from continual.strategies.ckl.vanilla import Vanilla
from continual.types import Batch, TaskInfo


def _base_weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(before, model, names=None):
    now = dict(model.named_parameters())
    return {n for n, p in before.items() if (names is None or n in names)
            and not torch.equal(p, now[n].detach())}


def test_vanilla_step_changes_the_base_weights_and_lowers_the_loss(tiny, lm_batch):
    model, tok = tiny
    before = _base_weights(model)
    s = Vanilla(model, tok, lr=1e-2)
    first = float(s.observe(lm_batch)["loss"])
    for _ in range(5):
        last = float(s.observe(lm_batch)["loss"])
    assert _changed(before, model) and last < first


def test_lora_trains_adapters_and_leaves_the_base_frozen(tiny, lm_batch):
    model, tok = tiny
    base_q = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    s = LoRA(model, tok, lr=1e-2)
    names = {n for n, p in s.model.named_parameters() if p.requires_grad}
    assert names and all("lora_" in n for n in names)
    before = {n: p.detach().clone() for n, p in s.model.named_parameters()}
    s.observe(lm_batch)
    s.observe(lm_batch)  # lora_B starts at zero: lora_A moves from the second step
    changed = _changed(before, s.model)
    assert changed and all("lora_" in n for n in changed)
    assert torch.equal(model.model.layers[0].self_attn.q_proj.base_layer.weight,
                       base_q)


def test_lora_targets_q_and_v_with_rank_4():
    from continual.models.lm import tiny_causal_lm

    model, tok = tiny_causal_lm(hidden_size=32, n_layers=2)
    s = LoRA(model, tok)
    n = sum(p.numel() for p in s.trainable_parameters())
    assert n == 2 * 2 * (4 * 32 + 32 * 4)  # layers x {q, v} x (A + B)


def test_kadapter_starts_at_the_base_model_and_trains_only_adapters(tiny, lm_batch):
    model, tok = tiny
    base = copy.deepcopy(model)
    before = _base_weights(model)
    s = KAdapter(model, tok, adapter_dim=8, lr=1e-2)
    with torch.no_grad():
        assert torch.allclose(s.predict(lm_batch.x), base(input_ids=lm_batch.x).logits, atol=1e-5)
    s.observe(lm_batch)
    s.observe(lm_batch)
    assert not _changed(before, model, names=set(before))  # base weights untouched
    assert any(p.abs().sum() > 0 for p in s.adapters.up.parameters())
    assert not torch.allclose(s.predict(lm_batch.x), base(input_ids=lm_batch.x).logits)


def test_kadapter_output_survives_cached_generation(tiny, lm_batch):
    model, tok = tiny
    s = KAdapter(model, tok, adapter_dim=8, lr=5e-2)
    for _ in range(3):
        s.observe(lm_batch)
    assert len(s.answer(["The capital of"], max_new_tokens=4)) == 1
    assert s.adapters.state is None  # the chain is reset after every forward


def test_recadam_sigmoid_anneal_is_half_at_t0():
    assert sigmoid_anneal(250, 0.5, 250) == pytest.approx(0.5)
    assert sigmoid_anneal(0, 0.5, 250) < 1e-50


def test_recadam_pulls_toward_the_anchor_before_t0():
    p = torch.nn.Parameter(torch.ones(3))
    opt = RecAdam([p], [torch.zeros(3)], lr=1e-4, anneal_t0=1000, pretrain_coef=5000)
    p.grad = torch.ones(3)
    opt.step()
    # lambda ~ 0: no Adam update, distance shrinks by 1 - lr * coef = 0.5
    assert torch.allclose(p.detach(), torch.full((3,), 0.5))


def test_recadam_is_adam_after_t0():
    p = torch.nn.Parameter(torch.zeros(3))
    q = torch.nn.Parameter(torch.zeros(3))
    rec = RecAdam([p], [torch.zeros(3)], lr=1e-2, eps=1e-8, anneal_k=10, anneal_t0=-100)
    adam = torch.optim.Adam([q], lr=1e-2, eps=1e-8)
    for g in (1.0, -2.0, 0.5):
        p.grad, q.grad = torch.full((3,), g), torch.full((3,), g)
        rec.step()
        adam.step()
    assert torch.allclose(p, q, atol=1e-6)


def test_recadam_strategy_step_changes_weights_once_lambda_rises(tiny, lm_batch):
    model, tok = tiny
    before = _base_weights(model)
    s = RecAdamStrategy(model, tok, lr=1e-3, anneal_t0=0, anneal_k=5.0)
    s.observe(lm_batch)
    assert _changed(before, model)


def test_mixreview_adds_decaying_review_rows(tiny, lm_batch):
    model, tok = tiny
    s = MixReview(model, tok, lr=1e-3, review_texts=["An older text about rivers."] * 50)
    s.on_task_start(TaskInfo(0, [], 0, 0, extra={"steps_per_epoch": 1, "texts": ["new"]}))
    first = s.observe(lm_batch)["review_rows"]
    second = s.observe(lm_batch)["review_rows"]
    assert first == 16 and second == round(4 * 4 * 0.7)  # B=4, ratio 4, decay 0.7 per epoch


def test_mixreview_reviews_earlier_corpora_in_later_tasks(tiny):
    model, tok = tiny
    s = MixReview(model, tok, review_texts=["pretraining text"])
    s.on_task_start(TaskInfo(0, [], 0, 0, extra={"texts": ["corpus one text"]}))
    s.on_task_end(TaskInfo(0, [], 0, 0))
    assert "corpus one text" in s.review_texts


def test_hashing_embedder_matches_a_probe_to_its_fact():
    emb = HashingEmbedder(512)
    facts = emb(["The capital of France is Lima.", "The currency of Japan is the yen."])
    q = emb(["The capital of France is"])
    assert (facts @ q.T).argmax() == 0


def test_ltm_retrieval_writes_sentences_and_leaves_the_model_unchanged(tiny):
    model, tok = tiny
    before = _base_weights(model)
    s = LTMRetrieval(model, tok, k=1)
    text = "The capital of France is Lima. The currency of Japan is the yen."
    ids = torch.tensor([tok(text)["input_ids"]])
    out = s.observe(Batch(x=ids, y=ids.clone()))
    assert out["written"] == 2 and out["memories"] == 2
    assert s.retrieve(["The capital of France is"]) == [["The capital of France is Lima."]]
    assert not _changed(before, model)
    assert len(s.answer(["The capital of France is"], max_new_tokens=3)) == 1
