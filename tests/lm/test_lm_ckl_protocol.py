"""Options of the official CKL protocol (Jang et al. 2022) on the knowledge stream.

The strict GPT-2 match rule, beams passed to the strategy, light tuning that leaves the model
bit-identical, the unfiltered Invariant set, and the options recorded in the summary.
"""

from __future__ import annotations

import pytest
import torch

from continual.lm.evaluation import answer_matches, exact_match
from continual.lm.light_tuning import light_tuned
from continual.streams.knowledge import KnowledgeStream, probe_prompt
from continual.streams.text import KnowledgeTextStream
from continual.types import ConfigError

SMALL = {"n_per_set": 12, "n_phases": 1, "n_review": 60, "n_heldout": 10, "epochs": 1, "seq_len": 96,
         "filler": "synthetic", "probe_with": "capital_oracle", "probe_cache": False}


# ---------------------------------------------------------------- matching

@pytest.mark.parametrize(("prediction", "gold", "prefix", "strict"), [
    (" Paris. It is large", "Paris", True, True),
    (" Paris", "Paris", True, True),
    (" the Paris.", "Paris", True, True),                 # articles and punctuation normalised away
    (" Paris, France.", "Paris", True, False),            # strict: the span before "." must equal the gold
    (" Paris is the capital.", "Paris", True, False),
    (" New York City.", "New York", True, False),
    (" Lyon. Paris.", "Paris", False, False),             # strict looks only before the first "."
    (" St. John's.", "St. John's", True, False),          # a gold with a "." never matches strictly (official)
    (" paris", "Paris", True, True),
])
def test_prefix_and_strict_rules_on_hand_made_strings(prediction, gold, prefix, strict):
    assert answer_matches(prediction, gold, "prefix") is prefix
    assert answer_matches(prediction, gold, "strict") is strict


def test_exact_match_takes_the_rule_and_refuses_an_unknown_one():
    preds, golds = [" Paris.", " Lima, Peru."], ["Paris", "Lima"]
    assert exact_match(preds, golds) == 100.0
    assert exact_match(preds, golds, rule="strict") == 50.0
    with pytest.raises(ValueError, match="prefix"):
        exact_match(preds, golds, rule="loose")


# ---------------------------------------------------------------- the Invariant set

def test_invariant_all_takes_the_first_drawn_facts_whatever_the_model_answers(filler, capital_oracle):
    known = KnowledgeStream(n_per_set=12, filler_texts=filler, n_review=60, n_heldout=10, seed=0)
    unfiltered = KnowledgeStream(n_per_set=12, filler_texts=filler, n_review=60, n_heldout=10, seed=0,
                                 invariant="all")
    a, b = known.build(capital_oracle), unfiltered.build(capital_oracle)
    answers = capital_oracle([probe_prompt(f) for f in b.invariant])
    assert any(not answer_matches(p, f.object) for f, p in zip(b.invariant, answers))  # some unknown
    assert all(f.origin == "real" for f in b.invariant) and len(b.invariant) == 12
    assert b.stats["invariant"] == "all" and b.stats["invariant_known"] < 12 == a.stats["invariant_known"]
    sets = b.probe_sets()
    keys = [(f.relation, f.subject) for facts in sets.values() for f in facts]
    assert len(keys) == len(set(keys))  # Invariant, Updated and New share no fact


def test_invariant_known_still_refuses_a_model_that_knows_too_little(filler):
    def knows_nothing(prompts):
        return [" nothing." for _ in prompts]

    with pytest.raises(ConfigError, match="invariant=all"):
        KnowledgeStream(n_per_set=12, filler_texts=filler, n_review=60, n_heldout=10).build(knows_nothing)
    data = KnowledgeStream(n_per_set=12, filler_texts=filler, n_review=60, n_heldout=10,
                           invariant="all").build(knows_nothing)
    assert len(data.invariant) == 12 and data.stats["invariant_known"] == 0


def test_an_unknown_invariant_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="invariant"):
        KnowledgeTextStream(invariant="some", **SMALL)


# ---------------------------------------------------------------- light tuning

def _frozen_half(model):
    for i, p in enumerate(model.parameters()):
        p.requires_grad_(i % 2 == 0)


def test_light_tuning_changes_answers_inside_and_restores_the_model_bit_for_bit(tiny):
    model, tok = tiny
    _frozen_half(model)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    rng_before = torch.get_rng_state()
    text = ["The capital of France is Paris."] * 8
    prompt = ["The capital of France is"]
    from continual.lm.evaluation import greedy_answers

    plain = greedy_answers(model, tok, prompt, 6)
    with light_tuned(model, tok, text, lr=1e-2, batch_size=4, optimizer="adamw", epochs=40) as report:
        tuned = greedy_answers(model, tok, prompt, 6)
        assert not model.training
    assert report.n_facts == 8 and report.skipped == 0 and report.loss < 0.5
    assert exact_match(tuned, ["Paris"], "strict") == 100.0 and exact_match(plain, ["Paris"]) == 0.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not model.training and torch.equal(torch.get_rng_state(), rng_before)
    assert greedy_answers(model, tok, prompt, 6) == plain


def test_light_tuning_restores_the_model_when_scoring_fails(tiny):
    model, tok = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="scoring failed"), \
            light_tuned(model, tok, ["The capital of Peru is Lima."] * 4, batch_size=2):
        raise RuntimeError("scoring failed")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class _Recorder:
    """A strategy stand-in: the tiny model, answers read from a table, the kwargs it was asked with."""

    def __init__(self, model, tokenizer, table=None, suffix=". More"):
        self.model, self.tokenizer, self.table, self.suffix, self.calls = model, tokenizer, table or {}, suffix, []

    def answer(self, prompts, max_new_tokens=8, **kwargs):
        from continual.lm.evaluation import greedy_answers

        self.calls.append(kwargs)
        if self.table:
            return [" " + self.table.get(p, "nothing") + self.suffix for p in prompts]
        return greedy_answers(self.model, self.tokenizer, prompts, max_new_tokens, **kwargs)


def _stream(model, tok, **options):
    stream = KnowledgeTextStream(**{**SMALL, **options})
    stream.prepare(model, tok)
    return stream


def test_light_tuning_facts_are_real_facts_of_no_probe_set_and_drawn_by_the_seed(tiny):
    model, tok = tiny
    s0 = _stream(model, tok, light_tune={"n_facts": 40})
    again = _stream(model, tok, light_tune={"n_facts": 40})
    other = _stream(model, tok, light_tune={"n_facts": 40}, seed=1)
    probed = {probe_prompt(f) for facts in s0.data.probe_sets().values() for f in facts}
    assert len(s0.light_tune_texts) == 40 and s0.light_tune_texts == again.light_tune_texts
    assert s0.light_tune_texts != other.light_tune_texts
    assert all(t.endswith(".") and t.rsplit(" ", 1)[0] not in probed for t in s0.light_tune_texts)
    assert not any(text.startswith(p + " ") for text in s0.light_tune_texts for p in probed)


def test_scoring_with_light_tuning_differs_and_leaves_the_model_identical(tiny):
    model, tok = tiny
    plain = _stream(model, tok)
    tuned = _stream(model, tok, light_tune={"n_facts": 60, "lr": 1e-2, "batch_size": 8, "epochs": 3})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores_plain, details_plain = plain.score_eval_sets(_Recorder(model, tok))
    scores_tuned, details_tuned = tuned.score_eval_sets(_Recorder(model, tok))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [d["prediction"] for d in details_plain] != [d["prediction"] for d in details_tuned]
    assert scores_tuned[-1] == scores_plain[-1]  # held-out loss is scored on the model as trained
    assert plain.score_eval_sets(_Recorder(model, tok)) == (scores_plain, details_plain)


def test_light_tune_options_are_checked():
    with pytest.raises(ConfigError, match="no option"):
        KnowledgeTextStream(light_tune={"facts": 10}, **SMALL)
    with pytest.raises(ConfigError, match="n_facts >= 0"):
        KnowledgeTextStream(light_tune={"n_facts": -1}, **SMALL)


def test_asking_for_more_light_tuning_facts_than_are_unprobed_is_a_config_error(tiny):
    with pytest.raises(ConfigError, match="in no probe set"):
        _stream(*tiny, light_tune={"n_facts": 100_000})


# ---------------------------------------------------------------- beams, rule, summary

def test_beams_reach_the_strategy_and_the_rule_decides_the_score(tiny):
    model, tok = tiny
    greedy = _stream(model, tok)
    official = _stream(model, tok, num_beams=2, match="strict")
    golds = {probe_prompt(f): f.object for facts in greedy.data.probe_sets().values() for f in facts}
    wordy = _Recorder(model, tok, golds, suffix=", as everyone knows.")
    names = [s.name for s in greedy.eval_sets]
    prefix_row = dict(zip(names, greedy.score_eval_sets(wordy)[0]))
    strict_row = dict(zip(names, official.score_eval_sets(wordy)[0]))
    assert wordy.calls == [{}, {"num_beams": 2}]  # greedy asks nothing of a plugin's answer()
    assert prefix_row["IL"] == prefix_row["UL1"] == 100.0
    assert strict_row["IL"] == strict_row["UL1"] == 0.0


def test_the_summary_records_the_probe_protocol(tiny):
    model, tok = tiny
    stream = _stream(model, tok, num_beams=2, match="strict", invariant="all", light_tune={"n_facts": 5})
    row = dict(zip((s.name for s in stream.eval_sets), [0.0] * len(stream.eval_sets)))
    summary = stream.summary_metrics([row, row], [1])
    assert summary["probe_protocol"] == {
        "num_beams": 2, "match": "strict", "invariant": "all",
        "light_tune": {"n_facts": 5, "lr": 1e-3, "batch_size": 32, "optimizer": "adafactor", "epochs": 1}}


@pytest.mark.parametrize(("options", "message"), [({"num_beams": 0}, "num_beams"), ({"match": "loose"}, "match")])
def test_bad_scoring_options_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        KnowledgeTextStream(**{**SMALL, **options})


def test_the_official_preset_extends_ckl_smollm2_and_switches_every_option_on():
    from hydra import compose, initialize_config_module

    from continual.config import register_configs

    register_configs()
    with initialize_config_module(config_module="continual.conf", version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=ckl_smollm2_official", "strategy=ckl_lora"])
    assert cfg.model._target_.endswith("load_smollm2") and cfg.stream.n_per_set == 100  # from ckl_smollm2
    assert cfg.strategy._target_.endswith("lora.LoRA") and cfg.strategy.optimizer == "adafactor"
    assert cfg.schedule._target_.endswith("OneCycleSchedule")
    assert (cfg.stream.num_beams, cfg.stream.match, cfg.stream.invariant) == (2, "strict", "all")
    assert cfg.stream.light_tune.n_facts == 200 and cfg.stream.light_tune.optimizer == "adafactor"
