"""A user's own facts (`stream=knowledge stream.facts=f.jsonl`): the probe sets they make, the
init row's exact match with a stand-in base model, and malformed lines refused by number.

The 12 facts of FACTS, with the capital oracle as the base model (it answers every real
capital, nothing else), land by hand as follows:

- phase 0 (Invariant candidates): the capitals of France, Peru, Japan, Kenya are known and
  kept; France's currency and Peru's continent are unknown and dropped (kept under
  ``invariant=all``).
- old_object (Updated): Germany -> Hamburg (D1; the oracle answers the old Berlin), Italy ->
  Milan (D2; old Rome known), Japan's currency -> dollar (D2; old yen unknown).
- the rest (New): Zorbia -> Quell (D1), Acme Works founded by Ada Brook (D2, a relation of the
  file's own template); Spain -> Madrid (D1) is known to the oracle, so not new: dropped.
"""

from __future__ import annotations

import csv
import json

import pytest
from _cli import run_continual

from continual.config import CheckpointConfig
from continual.runner import Runner
from continual.streams.knowledge import probe_prompt
from continual.streams.text import KnowledgeTextStream, capital_oracle
from continual.types import ConfigError, Strategy

TEMPLATE = {"relation": "founded_by", "template": "{subject} was founded by",
            "sentences": ["{object} founded {subject}.", "{subject} owes its start to {object}."]}
FACTS = [
    TEMPLATE,
    {"subject": "France", "relation": "capital", "object": "Paris", "phase": 0},
    {"subject": "Peru", "relation": "capital", "object": "Lima", "phase": 0},
    {"subject": "Japan", "relation": "capital", "object": "Tokyo", "phase": 0},
    {"subject": "Kenya", "relation": "capital", "object": "Nairobi", "phase": 0},
    {"subject": "France", "relation": "currency", "object": "Euro", "phase": 0},
    {"subject": "Peru", "relation": "continent", "object": "South America", "phase": 0},
    {"subject": "Germany", "relation": "capital", "object": "Hamburg", "old_object": "Berlin", "phase": 1},
    {"subject": "Italy", "relation": "capital", "object": "Milan", "old_object": "Rome", "phase": 2},
    {"subject": "Japan", "relation": "currency", "object": "dollar", "old_object": "yen", "phase": 2},
    {"subject": "Zorbia", "relation": "capital", "object": "Quell", "phase": 1},
    {"subject": "Acme Works", "relation": "founded_by", "object": "Ada Brook", "phase": 2},
    {"subject": "Spain", "relation": "capital", "object": "Madrid", "phase": 1},
]
SMALL = {"filler": "synthetic", "n_review": 20, "n_heldout": 5, "epochs": 1, "seq_len": 96, "n_phases": 2,
         "probe_with": "capital_oracle", "probe_cache": False}
SETS = {"IL": ["France", "Peru", "Japan", "Kenya"], "UL1": ["Germany"], "NL1": ["Zorbia"],
        "UL2": ["Italy", "Japan"], "NL2": ["Acme Works"]}


def write_jsonl(path, lines) -> str:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return str(path)


def built(tiny, facts, **options) -> KnowledgeTextStream:
    stream = KnowledgeTextStream(facts=facts, **{**SMALL, **options})
    stream.prepare(*tiny)
    return stream


def subjects(stream) -> dict[str, list[str]]:
    return {name: [f.subject for f in facts] for name, facts in stream.data.probe_sets().items()}


def test_the_file_facts_land_in_the_hand_computed_sets(tiny, tmp_path):
    stream = built(tiny, write_jsonl(tmp_path / "facts.jsonl", FACTS))
    assert subjects(stream) == SETS
    stats = stream.data.stats
    assert (stats["invariant_candidates"], stats["invariant_known"]) == (6, 4)
    assert (stats["updated_old_known"], stats["new_known_dropped"]) == (2, 1)  # Berlin, Rome; Spain


def test_each_corpus_states_its_own_facts_in_the_files_templates(tiny, tmp_path):
    stream = built(tiny, write_jsonl(tmp_path / "facts.jsonl", FACTS), mentions=3)
    d1, d2 = (" ".join(ph.corpus) for ph in stream.data.phases)
    assert "The capital of Germany is Hamburg." in d1 and "Zorbia" in d1 and "Madrid" not in d1
    for sentence in ("Acme Works was founded by Ada Brook.", "Ada Brook founded Acme Works.",
                     "Acme Works owes its start to Ada Brook."):
        assert sentence in d2
    assert "Paris" not in d1 + d2  # an invariant fact is never restated
    assert probe_prompt(stream.data.phases[1].new[0], stream.data.relations) == "Acme Works was founded by"


class _OracleLearner(Strategy):
    """Answers as the capital oracle, and at each task end "learns" that corpus's facts exactly."""

    def __init__(self, model, stream):
        self.model, self.stream, self.learned = model, stream, {}

    def observe(self, batch):
        return {"loss": 1.0}

    def on_task_end(self, info):
        ph = self.stream.data.phases[info.task_id]
        self.learned.update({probe_prompt(f, self.stream.data.relations): f.object for f in ph.updated + ph.new})

    def answer(self, prompts, max_new_tokens=8):
        return [f" {self.learned[p]}." if p in self.learned else a for p, a in zip(prompts, capital_oracle(prompts))]


def test_the_init_and_task_end_rows_show_the_hand_computed_exact_match(tiny, tmp_path):
    stream = built(tiny, write_jsonl(tmp_path / "facts.jsonl", FACTS))
    Runner(stream, _OracleLearner(tiny[0], stream), out_dir=str(tmp_path / "run"),
           checkpoint=CheckpointConfig(enabled=False)).run()
    with open(tmp_path / "run" / "scores.csv") as f:
        rows = [{k: v for k, v in row.items() if k[:2] in ("IL", "UL", "NL")} for row in csv.DictReader(f)]
    rows = [{k: round(float(v), 2) for k, v in row.items()} for row in rows]
    # init: the oracle knows the 4 invariant capitals, Berlin and Rome (not yen), no new fact
    assert rows[0] == {"IL": 100, "UL1": 0, "NL1": 0, "UL2": 0, "NL2": 0, "UL1_old": 100, "UL2_old": 50}
    assert rows[1] == {"IL": 100, "UL1": 100, "NL1": 100, "UL2": 0, "NL2": 0, "UL1_old": 0, "UL2_old": 50}
    assert rows[2] == {"IL": 100, "UL1": 100, "NL1": 100, "UL2": 100, "NL2": 100, "UL1_old": 0, "UL2_old": 0}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["FUAR"] == 0.0  # all updated and acquired, nothing forgotten


def test_invariant_all_keeps_the_facts_the_base_model_does_not_know(tiny, tmp_path):
    stream = built(tiny, write_jsonl(tmp_path / "facts.jsonl", FACTS), invariant="all")
    assert subjects(stream)["IL"] == ["France", "Peru", "Japan", "Kenya", "France", "Peru"]


def test_n_per_set_caps_each_set_to_the_files_first_facts(tiny, tmp_path):
    stream = built(tiny, write_jsonl(tmp_path / "facts.jsonl", FACTS), n_per_set=2)
    assert subjects(stream) == {"IL": ["France", "Peru"], "UL1": ["Germany"], "NL1": ["Zorbia"],
                                "UL2": ["Italy"], "NL2": ["Acme Works"]}


def test_facts_without_a_phase_are_spread_over_the_corpora_in_order(tiny):
    facts = [TEMPLATE] + [{"subject": f"Land{i}", "relation": "capital", "object": f"Town{i}"} for i in range(5)]
    stream = built(tiny, facts)  # a list of the file's mappings works as the file does
    assert subjects(stream) == {"IL": [], "UL1": [], "NL1": ["Land0", "Land2", "Land4"],
                                "UL2": [], "NL2": ["Land1", "Land3"]}


LINE = '{"subject": "Chile", "relation": "capital", "object": "Santiago", "phase": 1}'


@pytest.mark.parametrize(("bad", "message"), [
    ('{"subject": "Egypt", "relation": "capital" "object": "Santiago"}', "line 3 is not valid JSON"),
    ('["Chile", "capital", "Santiago"]', "line 3 is a JSON list, not an object"),
    ('{"subject": "Egypt", "relation": "capital"}', "line 3 has no field 'object'"),
    ('{"subject": "Egypt", "relation": "capital", "object": 7}', "line 3: field 'object' must be a non-empty string"),
    ('{"subject": "Egypt", "relation": "capital", "objet": "Cairo"}', "line 3: a fact line has no field(s) ['objet']"),
    ('{"subject": "Egypt", "relation": "capital", "object": "Santiago", "phase": 3}',
     "line 3: phase 3 but the stream has n_phases=2 corpora"),
    ('{"subject": "Egypt", "relation": "capital", "object": "Santiago", "phase": "one"}',
     "line 3: field 'phase' must be an integer >= 0"),
    ('{"subject": "Egypt", "relation": "capital", "object": "Lima", "old_object": "Santiago", "phase": 0}',
     "line 3: an updated fact (old_object) is taught by a corpus"),
    ('{"subject": "Egypt", "relation": "capital", "object": "Lima", "old_object": "Lima"}',
     "line 3: old_object equals object"),
    ('{"subject": "Egypt", "relation": "anthem", "object": "Puro"}', "line 3: relation 'anthem' has no probe template"),
    (LINE.replace('"phase": 1', '"phase": 2'), "line 3: 'Chile' already has a 'capital' fact"),
    ('{"relation": "anthem", "template": "The anthem of Chile is"}', "line 3: template 'The anthem of Chile is' must "
                                                                    "have {subject}"),
    ('{"relation": "anthem", "template": "{subject} sings {object}"}', "must have {subject} and no {object}"),
])
def test_a_malformed_line_is_refused_with_its_number(tmp_path, bad, message):
    path = write_jsonl(tmp_path / "facts.jsonl", ['{"subject": "Peru", "relation": "capital", "object": "Lima"}',
                                                  LINE, bad])
    with pytest.raises(ConfigError, match="facts.jsonl line 3") as e:
        KnowledgeTextStream(facts=path, **SMALL)  # refused when built: before the model is probed
    assert message in str(e.value)


def test_a_corpus_that_would_teach_nothing_is_refused(tiny, tmp_path):
    path = write_jsonl(tmp_path / "facts.jsonl", FACTS[:8])  # no fact for phase 2
    with pytest.raises(ConfigError, match=r"corpus D2 would teach no fact.*lower n_phases \(now 2\)"):
        built(tiny, path)


def test_a_missing_facts_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="facts file 'nowhere.jsonl' does not exist"):
        KnowledgeTextStream(facts="nowhere.jsonl", **SMALL)


@pytest.mark.slow
def test_own_facts_through_the_cli(tmp_path):
    path = write_jsonl(tmp_path / "facts.jsonl", FACTS)
    r = run_continual("stream=knowledge", "model=tiny_lm", "strategy=ckl_vanilla", f"stream.facts={path}",
                      "stream.n_phases=2", "stream.probe_with=capital_oracle", "stream.filler=synthetic",
                      "stream.n_review=20", "stream.n_heldout=5", "stream.epochs=1", "stream.seq_len=96",
                      "log.console=false", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["probe_sizes"] == {name: len(s) for name, s in SETS.items()}
    assert summary["stream_stats"]["new_known_dropped"] == 1
    answers = [json.loads(x) for x in (tmp_path / "run" / "answers.jsonl").read_text().splitlines()]
    assert {a["subject"] for a in answers if a["set"] == "NL2"} == {"Acme Works"}


@pytest.mark.slow
def test_a_malformed_line_is_refused_by_the_cli_before_any_work(tmp_path):
    path = write_jsonl(tmp_path / "facts.jsonl", [FACTS[1], '{"subject": "Egypt", "relation": "capital"}'])
    r = run_continual("stream=knowledge", "model=tiny_lm", f"stream.facts={path}", "log.console=false",
                      f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert r.returncode == 2
    assert "facts.jsonl line 2 has no field 'object'" in r.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
