"""Run loops write the engine's run-folder records; the infinite schedule's anneal branch."""

import json

import pytest

from continual.lm.loops import knowledge_fuar, run_corpus_stream, run_knowledge_stream
from continual.strategies.ckl.vanilla import Vanilla
from continual.strategies.schedules import InfiniteSchedule, RepeatedCosineSchedule
from continual.streams.corpora import Corpus, CorpusStream


def test_knowledge_loop_writes_records_and_evaluates_every_phase(tiny, knowledge_data, tmp_path):
    model, tok = tiny
    summary = run_knowledge_stream(Vanilla(model, tok, lr=1e-3), knowledge_data, str(tmp_path),
                                   epochs=1, batch_size=8, seq_len=96)
    assert {"metrics.jsonl", "scores.csv", "summary.json"} <= {p.name for p in tmp_path.iterdir()}
    lines = (tmp_path / "scores.csv").read_text().splitlines()
    assert lines[0].startswith("eval_point,step,IL,UL1,NL1,UL2,NL2")
    assert [r.split(",")[0] for r in lines[1:]] == ["M0", "M1", "M2"]
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == summary["steps"] > 0
    answers = [json.loads(a) for a in (tmp_path / "answers.jsonl").read_text().splitlines()]
    n_probes = sum(len(v) for v in knowledge_data.probe_sets().values())
    assert len(answers) == 3 * n_probes and {a["eval_point"] for a in answers} == {"M0", "M1", "M2"}


def test_knowledge_fuar_uses_the_multiphase_form(knowledge_data):
    base = {"IL": 50.0, "UL1": 0.0, "NL1": 0.0, "UL2": 0.0, "NL2": 0.0}
    m1 = dict(base, IL=40.0, UL1=50.0, NL1=50.0)
    m2 = dict(base, IL=30.0, UL1=25.0, NL1=25.0, UL2=50.0, NL2=50.0)
    # forgotten: IL 50->30 (20) + phase-1 facts 50->25 (25); gained: 25+25 + 50+50
    assert knowledge_fuar([base, m1, m2], knowledge_data) == pytest.approx(45 / 150)


def _stream(tok, steps=10):
    corpora = [Corpus(n, [f"{n} text {i} " * 30 for i in range(6)], [f"{n} eval " * 40])
               for n in ("a", "b", "c")]
    return CorpusStream(corpora, tok, seq_len=32, batch_size=4, steps_per_task=steps,
                        replay_share=0.25)


def test_corpus_loop_with_infinite_schedule_evaluates_the_annealed_branch(tiny, tmp_path):
    model, tok = tiny
    strategy = Vanilla(model, tok, schedule=lambda task_steps: InfiniteSchedule(
        warmup_fraction=0.1, anneal_fraction=0.3, task_steps=task_steps))
    summary = run_corpus_stream(strategy, _stream(tok), str(tmp_path))
    points = [r.split(",")[0] for r in (tmp_path / "scores.csv").read_text().splitlines()[1:]]
    assert points == ["init", "T0_main", "T0", "T1_main", "T1", "T2_main", "T2"]
    assert summary["steps"] == 30 == strategy.steps  # the branch's steps are not counted
    assert set(summary["forgetting"]) == {"a", "b"}


def test_corpus_loop_main_trajectory_keeps_the_constant_rate(tiny, tmp_path):
    model, tok = tiny
    strategy = Vanilla(model, tok, schedule=lambda task_steps: InfiniteSchedule(
        warmup_fraction=0.1, cooldown_fraction=0.2, anneal_fraction=0.3, task_steps=task_steps))
    run_corpus_stream(strategy, _stream(tok), str(tmp_path))
    assert strategy.optimizer.param_groups[0]["lr"] == pytest.approx(1.65e-4)


def test_corpus_loop_with_repeated_cosine_has_no_branch(tiny, tmp_path):
    model, tok = tiny
    strategy = Vanilla(model, tok, schedule=lambda task_steps: RepeatedCosineSchedule(
        task_steps=task_steps))
    run_corpus_stream(strategy, _stream(tok, steps=4), str(tmp_path), eval_every=2)
    points = [r.split(",")[0] for r in (tmp_path / "scores.csv").read_text().splitlines()[1:]]
    assert points == ["init", "step2", "T0", "step6", "T1", "step10", "T2"]
