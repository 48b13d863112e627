"""Language models through the one engine: the `continual` CLI, Runner records, sweeps, resume.

A CKL run on the knowledge stream and a continual pre-training run on the corpus stream, both
with the tiny offline LM; a 2-job multirun over LM strategies; SIGKILL and exact resume; the
score matrix's direction for lower-is-better scores; clear errors for mismatched models.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from _cli import run_continual, run_records
from _scripted import Idle, ScriptedLossStream

from continual.config import CheckpointConfig
from continual.runner import Runner

KNOWLEDGE = ["stream=knowledge", "model=tiny_lm", "stream.probe_with=capital_oracle", "stream.filler=synthetic",
             "stream.n_per_set=12", "stream.n_phases=2", "stream.n_review=60", "stream.n_heldout=10",
             "stream.epochs=1", "stream.seq_len=96", "log.console=false"]
CORPORA = ["stream=corpora", "model=tiny_lm", "strategy=lm_vanilla", "stream.n_chars=20000",
           "stream.steps_per_task=12", "stream.batch_size=8", "stream.max_eval_blocks=8", "log.console=false",
           "model.hidden_size=32"]


def _records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_ckl_run_through_the_cli_scores_every_probe_set_at_every_eval_point(tmp_path):
    r = run_continual(*KNOWLEDGE, "strategy=ckl_vanilla", "strategy.lr=1e-3", f"hydra.run.dir={tmp_path}",
                      cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("metrics.jsonl", "scores.csv", "summary.json", "continual.log", "answers.jsonl"):
        assert (tmp_path / name).is_file(), name
    with open(tmp_path / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == "step,samples_seen,kind,IL,UL1,NL1,UL2,NL2,UL1_old,UL2_old,heldout_loss".split(",")
    assert [row["kind"] for row in rows] == ["init", "task_end", "task_end"]
    evals = [rec for rec in _records(tmp_path) if rec["type"] == "eval"]
    for rec, row in zip(evals, rows, strict=True):  # the records hold the very scores of the CSV
        assert {k: rec[k] for k in row} == pytest.approx({k: float(v) for k, v in row.items() if k != "kind"}
                                                         | {"kind": row["kind"]})
    losses = [float(row["heldout_loss"]) for row in rows]
    assert losses[0] == pytest.approx(math.log(259), rel=0.02)  # untrained: ~uniform over the 259 byte tokens
    assert losses[0] > losses[1] > losses[2]  # each phase's training lowers the held-out loss
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["acc"] is None and summary["online_acc"] is None
    assert summary["score_name"] == "exact_match" and summary["higher_is_better"] is True
    assert summary["probe_sizes"] == {"IL": 12, "UL1": 6, "NL1": 6, "UL2": 6, "NL2": 6}
    assert summary["strategy"] == "ckl_vanilla"
    # the capital oracle "knew" the invariant capitals; the untrained tiny LM answers none, and
    # four steps teach it no fact: nothing forgotten or gained, so FUAR is undefined (null), not 0
    assert summary["initial"] == {"IL": 0.0, "UL": 0.0, "NL": 0.0}
    assert {k: summary[k] for k in ("IL", "UL", "NL", "FUAR")} == {"IL": 0.0, "UL": 0.0, "NL": 0.0, "FUAR": None}
    assert [rec["FUAR"] for rec in evals] == [None, None, None]
    answers = (tmp_path / "answers.jsonl").read_text().splitlines()
    assert len(answers) == 3 * 36  # 3 eval points x (12 + 4 x 6) probes


@pytest.mark.slow
def test_a_corpus_run_through_the_cli_records_held_out_loss_per_corpus(tmp_path):
    r = run_continual(*CORPORA, "schedule=infinite", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    header, *rows = (tmp_path / "scores.csv").read_text().splitlines()
    assert header == "step,samples_seen,kind,loss/wiki,loss/code,loss/facts"
    kinds = [row.split(",")[2] for row in rows]
    assert kinds == ["init"] + ["task_end_main", "task_end"] * 3  # the annealed copy is deployed
    steps = [rec for rec in _records(tmp_path) if rec["type"] == "step"]
    # logged steps come after the first task's cool-down (half its 12 steps): the infinite
    # schedule then holds eta_const 0.55 x lm_vanilla's lr 3e-3, with no re-warm-up at new corpora
    assert steps and all(rec["step"] > 6 for rec in steps)
    assert [rec["lr"] for rec in steps] == pytest.approx([0.55 * 3e-3] * len(steps))
    loss = [rec["loss"] for rec in steps]
    assert all(math.isfinite(v) for v in loss) and math.log(259) > loss[0] > loss[-1]
    assert steps[-1]["online_acc"] is None
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["score_name"] == "loss" and summary["higher_is_better"] is False
    assert summary["score"] == pytest.approx(summary["final_avg_loss"])
    assert set(summary["forgetting_by_corpus"]) == {"wiki", "code"}
    assert summary["schedule"] == "infinite" and summary["steps"] == 36


@pytest.mark.slow
def test_a_two_job_multirun_over_lm_strategies(tmp_path):
    r = run_continual("-m", *KNOWLEDGE, "strategy=ckl_vanilla,ckl_lora", f"hydra.sweep.dir={tmp_path}/sweep",
                      cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    summaries = sorted((tmp_path / "sweep").glob("*/summary.json"))
    assert len(summaries) == 2
    assert {json.loads(s.read_text())["strategy"] for s in summaries} == {"ckl_vanilla", "ckl_lora"}
    report = run_continual("report", str(tmp_path / "sweep"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    text = (tmp_path / "sweep" / "report.md").read_text()
    assert "ckl_lora" in text and "| IL | UL | NL |" in text.splitlines()[4]  # the table has CKL's columns
    for png in ("accuracy_matrix_knowledge.png", "task_accuracy_knowledge.png", "comparison.png"):
        assert (tmp_path / "sweep" / png).is_file()
    assert "warning" not in report.stderr.lower()


@pytest.mark.slow
def test_an_lm_run_killed_mid_task_resumes_exactly(tmp_path):
    args = [*CORPORA, "schedule=cosine", "log.every=2", "checkpoint.every=4", "checkpoint.min_interval_s=0"]
    ref = run_continual(*args, f"hydra.run.dir={tmp_path / 'ref'}", cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = run_continual(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, fault="step:19")
    assert killed.returncode == -9
    resumed = run_continual(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr
    assert run_records(tmp_path / "run") == run_records(tmp_path / "ref")


@pytest.mark.parametrize(("args", "message"), [
    (["stream=corpora", "model=mlp"], "use model=tiny_lm or model=smollm2"),
    (["stream=split_digits", "model=tiny_lm"], "is a language model but stream"),
])
@pytest.mark.slow
def test_a_model_of_the_wrong_kind_is_refused_clearly(tmp_path, args, message):
    r = run_continual(*args, "log.console=false", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr


def test_lower_is_better_scores_give_forgetting_and_transfer_the_usual_signs(tmp_path):
    # init: (5, 5); after task a: (2, 4); after task b: loss on a rose to 3, b fell to 1
    stream = ScriptedLossStream([(5.0, 5.0), (2.0, 4.0), (3.0, 1.0)])
    summary = Runner(stream, Idle(), out_dir=str(tmp_path), checkpoint=CheckpointConfig(enabled=False)).run()
    assert summary["forgetting"] == pytest.approx(1.0)  # loss on a: 2 -> 3, worse by 1
    assert summary["bwt"] == pytest.approx(-1.0)
    assert summary["fwt"] == pytest.approx(1.0)  # b's loss before training on it: 5 -> 4, better
    assert summary["plasticity"] == pytest.approx(1.5)  # (2 + 1) / 2, in loss units
    assert summary["score"] == pytest.approx(2.0) and summary["acc"] is None


def test_knowledge_fuar_uses_the_multiphase_form(knowledge_data):
    from continual.streams.text import KnowledgeTextStream

    stream = KnowledgeTextStream(n_per_set=12, n_phases=2)
    stream.data = knowledge_data  # 6 updated + 6 new facts in each of the 2 phases
    base = {"IL": 50.0, "UL1": 0.0, "NL1": 0.0, "UL2": 0.0, "NL2": 0.0}
    m1 = dict(base, IL=40.0, UL1=50.0, NL1=50.0)
    m2 = dict(base, IL=30.0, UL1=25.0, NL1=25.0, UL2=50.0, NL2=50.0)
    # forgotten: IL 50->30 (20) + phase-1 facts 50->25 (25); gained: 25+25 + 50+50
    assert stream._fuar([base, m1, m2]) == pytest.approx(45 / 150)
    assert stream.eval_metrics([base, m1, m2], task_end_rows=[1, 2])["FUAR"] == pytest.approx(45 / 150)
    assert stream.eval_metrics([base, m1, m2], task_end_rows=[1])["FUAR"] is None  # not a task-end row


def test_the_old_lm_entry_point_prints_the_new_command():
    from continual.lm.run import main

    with pytest.raises(SystemExit, match=r"continual -m \+experiment=infinite_lr schedule="):
        main(["experiment=infinite_lr"])


def test_the_lm_studies_compose_through_the_main_config():
    from hydra import compose, initialize_config_module

    from continual.config import register_configs

    register_configs()
    with initialize_config_module(config_module="continual.conf", version_base="1.3"):
        ckl = compose("config", overrides=["+experiment=ckl_smollm2", "strategy=ckl_lora"])
        cpt = compose("config", overrides=["+experiment=infinite_lr", "schedule=wsd"])
    assert ckl.stream._target_.endswith("KnowledgeTextStream") and ckl.model._target_.endswith("load_smollm2")
    assert ckl.strategy._target_.endswith("lora.LoRA") and ckl.stream.n_per_set == 100
    assert cpt.stream._target_.endswith("CorpusTextStream") and cpt.strategy.lr == pytest.approx(3e-3)
    assert cpt.schedule._target_.endswith("WSDSchedule") and cpt.eval.every == 100


def test_lm_strategies_take_the_guarded_step(tiny, lm_batch):
    from continual.strategies.ckl.vanilla import Vanilla
    from continual.types import NonFiniteLoss

    model, tok = tiny
    strategy = Vanilla(model, tok, lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    strategy.lm_loss = lambda x, y: torch.tensor(float("nan"), requires_grad=True)
    with pytest.raises(NonFiniteLoss):
        strategy.observe(lm_batch)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert strategy.steps == 0


def test_continual_list_shows_the_lm_streams_models_strategies_and_schedules(tmp_path):
    r = run_continual("list", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    names = {line.split()[0] for line in r.stdout.splitlines() if line.startswith("  ")}
    assert {"knowledge", "corpora", "tiny_lm", "smollm2", "ckl_lora", "lm_vanilla", "infinite", "wsd_once"} <= names
    assert "models (model=<name>):" in r.stdout and "schedules (schedule=<name>):" in r.stdout


@pytest.mark.slow
def test_lm_runs_on_the_joblib_launcher_with_the_loggers(tmp_path):
    corpora = [a for a in CORPORA if not a.startswith("strategy=")]
    r = run_continual("-m", "hydra/launcher=joblib", *corpora, "strategy=lm_vanilla,ckl_vanilla",
                      "stream.steps_per_task=4", "loggers=[tensorboard]", f"hydra.sweep.dir={tmp_path}/sweep",
                      cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = sorted((tmp_path / "sweep").glob("corpora_*"))
    assert len(runs) == 2 and all((run / "summary.json").is_file() for run in runs)
    assert all(list((run / "tensorboard").rglob("events.out.tfevents.*")) for run in runs)


def test_recadam_reanchors_at_the_second_corpus_of_a_two_phase_knowledge_run(tmp_path):
    """Through the Runner on the knowledge stream with n_phases=2: at corpus D2's start the
    anchor is the weights D1 ended with, and the annealing counter counts D2's steps only."""
    from continual.models.lm import tiny_causal_lm
    from continual.strategies.ckl.recadam import RecAdamStrategy
    from continual.streams.text import KnowledgeTextStream

    class Watched(RecAdamStrategy):
        def on_task_start(self, info):
            self.weights_at_start = {id(p): p.detach().clone() for p in self.trainable_parameters()}
            self.steps_at_start = self.steps
            super().on_task_start(info)

    model, tok = tiny_causal_lm(hidden_size=32, n_layers=2, seed=0)
    stream = KnowledgeTextStream(n_per_set=12, n_phases=2, n_review=60, n_heldout=10, epochs=1,
                                 seq_len=96, filler="synthetic", probe_with="capital_oracle")
    stream.prepare(model, tok)
    s = Watched(model, tok, lr=1e-3, anneal_t0=2)
    Runner(stream, s, out_dir=str(tmp_path), checkpoint=CheckpointConfig(enabled=False)).run()
    phase2_steps = s.steps - s.steps_at_start
    assert s.steps_at_start > 0 and phase2_steps > 0
    for p in s.trainable_parameters():
        st = s.optimizer.state[p]
        assert torch.equal(st["anchor"], s.weights_at_start[id(p)])
        assert st["anneal_step"] == phase2_steps and st["step"] == s.steps
