"""Each CKL strategy takes a step and changes what it should (and only that)."""

import copy

import pytest
import torch

from continual.models.lm import tiny_causal_lm
from continual.strategies.ckl.kadapter import KAdapter
from continual.strategies.ckl.lora import LoRA
from continual.strategies.ckl.ltm_retrieval import HashingEmbedder, LTMRetrieval
from continual.strategies.ckl.mixreview import MixReview
from continual.strategies.ckl.modular import Modular
from continual.strategies.ckl.recadam import RecAdam, RecAdamStrategy, sigmoid_anneal
from continual.strategies.ckl.vanilla import Vanilla
from continual.types import Batch, ConfigError, TaskInfo


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


def _trainable(s):
    return {n: p.numel() for n, p in s.model.named_parameters() if p.requires_grad}


# The tiny model: hidden 32, 2 blocks, 4 heads (head size 8), MLP 128, byte vocabulary V.
D, L, MLP = 32, 2, 128
LLAMA_BLOCK = 4 * D * D + 3 * D * MLP + 2 * D  # q k v o, gate up down, two RMS norms


@pytest.mark.parametrize("cls", [Vanilla, RecAdamStrategy, MixReview])
def test_full_fine_tuning_methods_train_every_parameter(tiny, cls):
    model, tok = tiny
    vocab = model.config.vocab_size
    s = cls(model, tok)
    assert sum(_trainable(s).values()) == vocab * D + L * LLAMA_BLOCK + D  # tied embedding, blocks, norm


def test_ltm_retrieval_trains_nothing(tiny):
    model, tok = tiny
    assert sum(_trainable(LTMRetrieval(model, tok)).values()) == 0


def test_lora_official_defaults_train_adapters_and_the_tied_head(tiny, lm_batch):
    model, tok = tiny
    vocab = model.config.vocab_size
    base_q = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    s = LoRA(model, tok, lr=1e-2)
    names = _trainable(s)
    assert sum(names.values()) == L * 2 * (4 * D + D * 4) + vocab * D  # {q, v} x (A + B) + head
    assert all("lora_" in n or "embed_tokens" in n for n in names)
    assert s.scale == 4 / 16  # official r / alpha, not peft's alpha / r
    lora_a = [p for n, p in s.model.named_parameters() if "lora_A" in n]
    assert abs(float(torch.cat([p.flatten() for p in lora_a]).std()) - 0.02) < 0.005
    before = {n: p.detach().clone() for n, p in s.model.named_parameters()}
    s.observe(lm_batch)
    s.observe(lm_batch)  # lora_B starts at zero: lora_A moves from the second step
    changed = _changed(before, s.model)
    assert any("lora_A" in n for n in changed) and any("embed_tokens" in n for n in changed)
    assert torch.equal(model.model.layers[0].self_attn.q_proj.base_layer.weight, base_q)


def test_lora_scale_rules_give_the_documented_factors(tiny, lm_batch):
    model, tok = tiny
    peft_like = LoRA(copy.deepcopy(model), tok, scale_rule="peft", train_lm_head=False, init_a_std=None)
    official = LoRA(model, tok)
    assert peft_like.scale == 4.0 and official.scale == 0.25
    layer = official.model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == 0.25
    assert sum(_trainable(peft_like).values()) == L * 2 * (4 * D + D * 4)
    with pytest.raises(ConfigError, match="scale_rule"):
        LoRA(copy.deepcopy(model), tok, scale_rule="other")


def test_lora_targets_q_and_v_with_rank_4():
    from continual.models.lm import tiny_causal_lm

    model, tok = tiny_causal_lm(hidden_size=32, n_layers=2)
    s = LoRA(model, tok, train_lm_head=False)
    n = sum(p.numel() for p in s.trainable_parameters())
    assert n == 2 * 2 * (4 * 32 + 32 * 4)  # layers x {q, v} x (A + B)


def test_kadapter_official_blocks_fusion_and_scale(tiny, lm_batch):
    model, tok = tiny
    vocab = model.config.vocab_size
    base = copy.deepcopy(model)
    before = _base_weights(model)
    s = KAdapter(model, tok, lr=1e-2)
    assert s.adapters.layer_ids == [1, 2]  # official [1, 11], clamped to the 2 blocks
    # two full blocks of the model's own shape, the output norm, the tied head
    assert sum(_trainable(s).values()) == 2 * LLAMA_BLOCK + D + vocab * D
    # output = norm(h_L) + 0.1 * RMSNorm(a_2): recompute it by hand from the base model
    with torch.no_grad():
        out = base(input_ids=lm_batch.x, output_hidden_states=True)
        hs = out.hidden_states  # hidden_states[-1] is already the final norm's output
        a = torch.zeros_like(hs[-1])
        for lid, block in zip([1, 2], s.adapters.blocks):
            h = hs[lid] if lid < 2 else base.model.layers[1](hs[1], position_embeddings=
                base.model.rotary_emb(hs[1], torch.arange(hs[1].shape[1])[None]))
            h = h[0] if isinstance(h, tuple) else h
            a = block(inputs_embeds=h + a, use_cache=False).last_hidden_state
        want = base.lm_head(hs[-1] + 0.1 * s.adapters.norm(a))
        assert torch.allclose(s.predict(lm_batch.x), want, atol=1e-4)
        gap = (s.predict(lm_batch.x) - out.logits).abs().max()
        assert 0 < gap  # random blocks: the start is off the base model, by 0.1 of a unit vector
    s.observe(lm_batch)
    s.observe(lm_batch)
    changed = _changed(before, model, names=set(before))
    assert changed == {"model.embed_tokens.weight"}  # the tied head trains; the base does not


def test_kadapter_bottleneck_variant_keeps_the_earlier_design(tiny, lm_batch):
    model, tok = tiny
    base = copy.deepcopy(model)
    before = _base_weights(model)
    s = KAdapter(model, tok, variant="bottleneck", adapter_dim=8, lr=1e-2)
    assert sum(_trainable(s).values()) == 3 * 0 + 2 * ((2 * D) * 8 + 8 + 8 * D + D)  # blocks {0, 1}
    with torch.no_grad():
        assert torch.allclose(s.predict(lm_batch.x), base(input_ids=lm_batch.x).logits, atol=1e-5)
    s.observe(lm_batch)
    s.observe(lm_batch)
    assert not _changed(before, model, names=set(before))  # base weights untouched
    assert not torch.allclose(s.predict(lm_batch.x), base(input_ids=lm_batch.x).logits)


@pytest.mark.parametrize("cls", [KAdapter, Modular])
def test_side_module_caches_give_the_answers_of_full_recomputation(lm_batch, cls):
    """K-Adapter's blocks and the Modular stack keep KV caches of their own in cached
    generation: the answers equal those of recomputing the whole sequence at every token,
    for a padded batch, and a prompt's answer does not depend on its batch; beam search
    (which reorders only the model's cache) runs uncached."""
    from continual.lm.evaluation import greedy_answers

    model, tok = tiny_causal_lm(hidden_size=32, n_layers=2, n_heads=4, seed=0)
    s = cls(model, tok, lr=5e-2)
    for _ in range(3):
        s.observe(lm_batch)
    prompts = ["The capital of", "A much longer prompt about rivers and", "Peru"]
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    s.model.eval()
    with torch.no_grad():
        scores = [torch.stack(s.model.generate(**enc, max_new_tokens=6, do_sample=False, use_cache=c,
                                               output_scores=True, return_dict_in_generate=True,
                                               pad_token_id=tok.pad_token_id).scores) for c in (True, False)]
    assert torch.allclose(scores[0], scores[1], atol=1e-4)  # every step's logits, not only the argmax
    cached = s.answer(prompts, max_new_tokens=6)
    full = greedy_answers(s.model, tok, prompts, 6, use_cache=False)
    assert cached == full and len(set(cached)) > 1
    assert s.answer(prompts[:1], max_new_tokens=6)[0] == cached[0]
    beams = s.answer(prompts, max_new_tokens=6, num_beams=2)
    assert beams == greedy_answers(s.model, tok, prompts, 6, num_beams=2, use_cache=False)


def test_modular_shape_rule_parameters_and_scale(tiny, lm_batch):
    model, tok = tiny
    vocab = model.config.vocab_size
    base = copy.deepcopy(model)
    before = _base_weights(model)
    s = Modular(model, tok, lr=1e-2)
    # rule: width half the model's in whole heads of 8 -> 16 (2 heads), blocks max(1, 2/4) = 1
    assert s.module_config == {"width": 16, "n_blocks": 1, "n_heads": 2, "intermediate_size": 48}
    w, m = 16, 48
    module = vocab * w + (4 * w * w + 3 * w * m + 2 * w) + w + w * D  # embed, block, norm, W_up
    assert sum(_trainable(s).values()) == module + vocab * D
    with torch.no_grad():
        out = base(input_ids=lm_batch.x, output_hidden_states=True)
        small = s.modular.stack(input_ids=lm_batch.x).last_hidden_state
        want = base.lm_head(out.hidden_states[-1] + 0.05 * s.modular.projection(small))
        assert torch.allclose(s.predict(lm_batch.x), want, atol=1e-4)
    s.observe(lm_batch)
    assert _changed(before, model, names=set(before)) == {"model.embed_tokens.weight"}


def test_modular_smollm2_shape_follows_the_rule():
    from transformers import LlamaConfig

    from continual.strategies.ckl.modular import module_shape

    smollm2 = LlamaConfig(hidden_size=576, num_attention_heads=9, num_key_value_heads=3,
                          num_hidden_layers=30, intermediate_size=1536, vocab_size=49152)
    assert module_shape(smollm2, 30) == (256, 8, 4)


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


@pytest.mark.parametrize("reanchor", [True, False])
def test_recadam_reanchors_at_each_corpus_phase(tiny, lm_batch, reanchor):
    """Two corpus phases: with ``reanchor`` phase 2's anchor is the weights phase 1 reached and
    its annealing counter restarts (first step: lambda ~ 0, a pull to itself, no move); without,
    the counter runs on (lambda ~ 1), the old anchor no longer pulls and Adam moves on."""
    model, tok = tiny
    s = RecAdamStrategy(model, tok, lr=1e-3, anneal_t0=3, anneal_k=5.0, pretrain_coef=100.0,
                        reanchor=reanchor)
    s.on_task_start(TaskInfo(0, [], 0, 0))
    for _ in range(8):  # lambda -> 1: Adam moves away from the anchor
        s.observe(lm_batch)
    s.on_task_end(TaskInfo(0, [], 0, 8))
    after_phase1 = _base_weights(model)
    s.on_task_start(TaskInfo(1, [], 0, 8))
    s.observe(lm_batch)  # t = 1 of phase 2 when re-anchored: lambda ~ 0, pure pull to the anchor
    now = _base_weights(model)
    name = "model.layers.0.self_attn.q_proj.weight"
    counters = {st["anneal_step"] for st in s.optimizer.state.values()}
    if reanchor:
        assert counters == {1}
        for n in (name, "model.embed_tokens.weight"):
            assert torch.allclose(now[n], after_phase1[n], atol=1e-6)  # pulled to itself
    else:
        assert counters == {9}
        assert not torch.allclose(now[name], after_phase1[name], atol=1e-6)


def test_mixreview_adds_decaying_review_rows(tiny, lm_batch):
    model, tok = tiny
    s = MixReview(model, tok, lr=1e-3, review_texts=["An older text about rivers."] * 50)
    s.on_task_start(TaskInfo(0, [], 0, 0, extra={"steps_per_epoch": 1, "texts": ["new"]}))
    first = s.observe(lm_batch)["review_rows"]
    second = s.observe(lm_batch)["review_rows"]
    assert first == 16 and second == round(4 * 4 * 0.7)  # B=4, ratio 4, decay 0.7 per epoch


@pytest.mark.parametrize("cap, expected", [(None, [32, 22, 16, 11]), (8, [8, 6, 4, 3])])
def test_mixreview_share_falls_every_epoch_even_with_a_cap(tiny, cap, expected):
    """Batch 8, ratio 4, decay 0.7, 4 epochs of 2 steps: the cap scales the schedule and the
    review share of each batch falls epoch by epoch (it was a constant 8 of 16 with cap 8)."""
    model, tok = tiny
    s = MixReview(model, tok, lr=1e-3, max_review_rows=cap, review_texts=["Older text."] * 50)
    s.on_task_start(TaskInfo(0, [], 0, 0, extra={"steps_per_epoch": 2, "texts": ["new"]}))
    batch = Batch(x=torch.randint(3, 100, (8, 12)), y=torch.randint(3, 100, (8, 12)), step=0)
    rows = [s.observe(batch)["review_rows"] for _ in range(8)]
    assert rows[::2] == expected and rows[1::2] == expected
    shares = [r / (r + 8) for r in expected]
    assert all(a > b for a, b in zip(shares, shares[1:]))


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
