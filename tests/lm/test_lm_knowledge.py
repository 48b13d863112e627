"""Knowledge stream: facts, the Invariant / Updated / New split by probing, the corpora."""

import pytest

from continual.lm.evaluation import answer_matches
from continual.streams.knowledge import RELATIONS, KnowledgeStream, probe_prompt, real_facts, render
from continual.types import ConfigError


def test_real_facts_cover_every_relation_once_per_subject():
    facts = real_facts()
    assert {f.relation for f in facts} == set(RELATIONS)
    keys = [(f.relation, f.subject) for f in facts]
    assert len(keys) == len(set(keys)) and len(facts) > 1000


def test_probe_is_template_zero_without_the_object():
    fact = next(f for f in real_facts() if f.subject == "France" and f.relation == "capital")
    assert probe_prompt(fact) == "The capital of France is"
    assert render(fact, 0) == "The capital of France is Paris."


def test_invariant_facts_are_the_ones_the_model_answers(knowledge_data, capital_oracle):
    preds = capital_oracle([probe_prompt(f) for f in knowledge_data.invariant])
    assert len(knowledge_data.invariant) == 12
    assert all(answer_matches(p, f.object) for p, f in zip(preds, knowledge_data.invariant))


def test_updated_facts_change_the_object_and_keep_the_old_one(knowledge_data):
    updated = [f for ph in knowledge_data.phases for f in ph.updated]
    assert len(updated) == 12
    truth = {(f.relation, f.subject): f.object for f in real_facts()}
    assert all(f.old_object == truth[(f.relation, f.subject)] != f.object for f in updated)


def test_new_facts_are_unknown_to_the_model_and_half_fictional(knowledge_data, capital_oracle):
    new = [f for ph in knowledge_data.phases for f in ph.new]
    preds = capital_oracle([probe_prompt(f) for f in new])
    assert not any(answer_matches(p, f.object) for p, f in zip(preds, new))
    assert sum(f.origin == "fictional" for f in new) == 6


def test_probe_sets_do_not_share_facts(knowledge_data):
    sets = knowledge_data.probe_sets()
    keys = [(f.relation, f.subject) for facts in sets.values() for f in facts]
    assert len(keys) == len(set(keys))


def test_each_corpus_states_its_own_facts_and_not_the_invariant_ones(knowledge_data):
    for i, ph in enumerate(knowledge_data.phases):
        text = " ".join(ph.corpus)
        assert all(render(f, 0) in text for f in ph.updated + ph.new)
        other = knowledge_data.phases[1 - i]
        assert not any(render(f, 0) in text for f in other.updated + other.new)
    corpus = " ".join(d for ph in knowledge_data.phases for d in ph.corpus)
    assert not any(render(f, 0) in corpus for f in knowledge_data.invariant)


def test_corpus_mixes_in_filler_at_about_the_asked_share(knowledge_data):
    docs = knowledge_data.phases[0].corpus
    n_fill = " ".join(docs).count("Filler sentence")
    n_facts = 4 * (len(knowledge_data.phases[0].updated) + len(knowledge_data.phases[0].new))
    assert n_fill / (n_fill + n_facts) == pytest.approx(0.3, abs=0.05)


def test_too_few_known_facts_is_a_config_error(filler):
    with pytest.raises(ConfigError, match="answers 0"):
        KnowledgeStream(n_per_set=5, filler_texts=filler).build(lambda ps: [" ?"] * len(ps))
