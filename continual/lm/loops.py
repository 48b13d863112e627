"""Run loops for language models: a knowledge stream (CKL) and a corpus stream (continual
pre-training). Each writes the engine's run-folder records (``continual.records``):
metrics.jsonl (train steps and eval points), scores.csv (rows = eval points, columns =
eval sets) and summary.json.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch

from continual.lm.evaluation import answer_token_budget, exact_match, text_loss
from continual.lm.fuar import fuar_multiphase
from continual.records import RunRecords
from continual.types import Batch, ConfigError, TaskInfo


def versions() -> dict[str, str]:
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__}


# ---------------------------------------------------------------- knowledge stream (CKL)

def evaluate_knowledge(strategy: Any, data: Any, max_new_tokens: int,
                       answers: list[dict[str, Any]] | None = None) -> dict[str, float]:
    """Exact match (0-100) of ``strategy.answer`` on every probe set, exact match of the
    updated sets against their *old* objects (``UL<i>_old``), and the mean token loss
    on held-out Wikipedia text (``heldout_loss``). ``answers``, when given, receives one
    record per probe (set, fact, prediction)."""
    from continual.streams.knowledge import probe_prompt

    sets = data.probe_sets()
    prompts = [probe_prompt(f) for facts in sets.values() for f in facts]
    preds = strategy.answer(prompts, max_new_tokens=max_new_tokens)
    scores: dict[str, float] = {}
    pos = 0
    for name, facts in sets.items():
        p = preds[pos:pos + len(facts)]
        pos += len(facts)
        scores[name] = exact_match(p, [f.object for f in facts])
        if name.startswith("UL"):
            scores[name + "_old"] = exact_match(p, [f.old_object for f in facts])
        if answers is not None:
            answers.extend({"set": name, "subject": f.subject, "relation": f.relation,
                            "object": f.object, "old_object": f.old_object, "prediction": a}
                           for f, a in zip(facts, p))
    scores["heldout_loss"] = text_loss(strategy.model, strategy.tokenizer, data.heldout_texts)
    return scores


def knowledge_budget(tokenizer: Any, data: Any) -> int:
    """New tokens to generate for the probes of ``data``: longest (old or new) answer + 2."""
    golds = [f.object for facts in data.probe_sets().values() for f in facts]
    golds += [f.old_object for ph in data.phases for f in ph.updated]
    return answer_token_budget(tokenizer, golds)


def knowledge_fuar(rows: list[dict[str, float]], data: Any) -> float | None:
    """FUAR over the eval rows M0..Mn (Jang et al. Sec. 3.3, multi-phase form).

    T^F_0 = IL; T^F_i (i >= 1) = the updated and new facts of corpus i, kept from M_i;
    gains on UL_i / NL_i are measured from M_{i-1} to M_n.
    """
    n = len(data.phases)
    last = rows[n]

    def union(row: dict[str, float], i: int) -> float:
        nu, nn_ = len(data.phases[i - 1].updated), len(data.phases[i - 1].new)
        return (row[f"UL{i}"] * nu + row[f"NL{i}"] * nn_) / max(nu + nn_, 1)

    retained = [(rows[0]["IL"], last["IL"])] + [(union(rows[i], i), union(last, i))
                                                 for i in range(1, n)]
    updated = [(rows[i - 1][f"UL{i}"], last[f"UL{i}"]) for i in range(1, n + 1)]
    acquired = [(rows[i - 1][f"NL{i}"], last[f"NL{i}"]) for i in range(1, n + 1)]
    return fuar_multiphase(retained, updated, acquired)


def run_knowledge_stream(strategy: Any, data: Any, out_dir: str, *, epochs: int = 8,
                         batch_size: int = 8, seq_len: int = 128, seed: int = 0,
                         log_every: int = 10, meta: dict[str, Any] | None = None,
                         initial_scores: dict[str, float] | None = None) -> dict[str, Any]:
    """Train ``strategy`` on corpora D1..Dn of ``data`` (a ``KnowledgeData``), evaluating
    every probe set before training (M0) and after each corpus (M1..Mn); every answer goes
    to ``answers.jsonl`` in ``out_dir``. Returns the summary.

    ``initial_scores``: M0's scores when already measured on the same base model (every
    CKL method starts at the base model's outputs), to skip that evaluation."""
    from continual.streams.corpora import pack_documents

    if epochs < 1 or batch_size < 1:
        raise ConfigError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    tok = strategy.tokenizer
    budget = knowledge_budget(tok, data)
    packed = [pack_documents(tok, ph.corpus, seq_len) for ph in data.phases]
    per_epoch = [math.ceil(len(x) / batch_size) for x, _ in packed]
    task_steps = [epochs * s for s in per_epoch]
    rec = RunRecords(out_dir)
    (Path(out_dir) / "answers.jsonl").write_text("")
    names = list(data.probe_sets()) + [f"UL{i}_old" for i in range(1, len(data.phases) + 1)]
    names.append("heldout_loss")
    rows: list[dict[str, float]] = []
    t_start = time.time()

    points: list[tuple[str, int]] = []

    def evaluate(point: str, step: int, scores: dict[str, float] | None = None) -> None:
        t0 = time.time()
        answers: list[dict[str, Any]] = []
        if scores is None:
            scores = evaluate_knowledge(strategy, data, budget, answers)
            with open(Path(out_dir) / "answers.jsonl", "a") as fh:
                fh.writelines(json.dumps({"eval_point": point, **a}) + "\n" for a in answers)
        scores = dict(scores)
        rows.append(scores)
        points.append((point, step))
        rec.log({"kind": "eval", "eval_point": point, "step": step,
                 "eval_s": time.time() - t0, **scores})
        rec.scores(["eval_point", "step"] + names,
                   [[p, s] + [r[n] for n in names] for (p, s), r in zip(points, rows)])

    evaluate("M0", 0, initial_scores)
    gen = torch.Generator().manual_seed(seed)
    step = 0
    t_train = 0.0
    for i, (ph, (x_all, y_all)) in enumerate(zip(data.phases, packed)):
        info = TaskInfo(task_id=i, classes=[], n_classes_total=0, step=step, extra={
            "task_steps": task_steps, "steps_per_epoch": per_epoch[i], "texts": ph.corpus,
            "review_texts": data.review_texts})
        strategy.on_task_start(info)
        t0 = time.time()
        for epoch in range(epochs):
            order = torch.randperm(len(x_all), generator=gen)
            for b in range(per_epoch[i]):
                idx = order[b * batch_size:(b + 1) * batch_size]
                out = strategy.observe(Batch(x=x_all[idx], y=y_all[idx], step=step))
                step += 1
                if step % log_every == 0 or step == 1:
                    rec.log({"kind": "train", "step": step, "task": i, "epoch": epoch,
                             **{k: float(v) for k, v in out.items()}})
        t_train += time.time() - t0
        strategy.on_task_end(info)
        evaluate(f"M{i + 1}", step)
    value = knowledge_fuar(rows, data)
    trainable = sum(p.numel() for p in strategy.trainable_parameters()) \
        if hasattr(strategy, "trainable_parameters") else None
    summary = {
        **(meta or {}), "seed": seed, "FUAR": value, "initial": rows[0], "final": rows[-1],
        "rows": rows, "steps": step, "task_steps": task_steps, "epochs": epochs,
        "batch_size": batch_size, "seq_len": seq_len, "train_s": t_train,
        "wall_s": time.time() - t_start, "trainable_params": trainable,
        "probe_sizes": {k: len(v) for k, v in data.probe_sets().items()},
        "stream_stats": data.stats, "versions": versions(),
    }
    rec.summary(summary)
    rec.close()
    return summary


# ---------------------------------------------------------------- corpus stream (pre-training)

def corpus_losses(strategy: Any, stream: Any, max_blocks: int) -> list[float]:
    """Held-out loss of the strategy's model on every corpus of the stream."""
    return [strategy.loss_on(stream.eval_blocks(k)[:max_blocks]) for k in range(stream.n_tasks)]


def run_corpus_stream(strategy: Any, stream: Any, out_dir: str, *, eval_every: int = 0,
                      max_eval_blocks: int = 64, anneal: bool = True, log_every: int = 10,
                      meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Continual pre-training over ``stream`` (a ``CorpusStream``), loss on every corpus
    at every eval point.

    When the strategy's schedule is an ``InfiniteSchedule`` with an anneal share and
    ``anneal`` is true, the last ``anneal_steps(k)`` steps of task k also train a copy of
    the model with the exponential anneal on the same batches; that copy is the
    deployable model evaluated at the task's end, and the stream continues from the
    main (constant-LR) trajectory. Other schedules: the main model is the deployable one.
    Rows of scores.csv: ``T<k>`` (deployable at the end of task k), ``T<k>_main``
    (main trajectory, infinite only) and ``step<s>`` (main, every ``eval_every`` steps).
    """
    from continual.strategies.schedules import BranchLR, InfiniteSchedule

    task_steps = stream.task_steps
    names = [c.name for c in stream.corpora]
    rec = RunRecords(out_dir)
    table: list[list[Any]] = []
    deploy: list[list[float]] = []
    t_start = time.time()

    def log_eval(point: str, step: int, losses: list[float]) -> None:
        rec.log({"kind": "eval", "eval_point": point, "step": step,
                 **{f"loss/{n}": v for n, v in zip(names, losses)}})
        table.append([point, step] + losses)
        rec.scores(["eval_point", "step"] + [f"loss/{n}" for n in names], table)

    log_eval("init", 0, corpus_losses(strategy, stream, max_eval_blocks))
    step = 0
    for k in range(stream.n_tasks):
        info = TaskInfo(task_id=k, classes=[], n_classes_total=0, step=step,
                        extra={"task_steps": task_steps})
        strategy.on_task_start(info)
        schedule = strategy.scheduler.schedule if strategy.scheduler is not None else None
        n_anneal = schedule.anneal_steps(k) if anneal and isinstance(
            schedule, InfiniteSchedule) else 0
        branch = None
        for i, batch in enumerate(stream.batches(k)):
            if n_anneal and i == task_steps[k] - n_anneal:
                branch = copy.deepcopy(strategy)
                branch.scheduler = BranchLR(branch.optimizer, schedule, n_anneal)
            out = strategy.observe(batch)
            if branch is not None:
                branch.observe(batch)
            step += 1
            if step % log_every == 0 or step == 1:
                rec.log({"kind": "train", "step": step, "task": k,
                         **{a: float(b) for a, b in out.items()}})
            if eval_every and step % eval_every == 0 and i + 1 < task_steps[k]:
                log_eval(f"step{step}", step, corpus_losses(strategy, stream, max_eval_blocks))
        strategy.on_task_end(info)
        main = corpus_losses(strategy, stream, max_eval_blocks)
        if branch is not None:
            log_eval(f"T{k}_main", step, main)
            deployed = corpus_losses(branch, stream, max_eval_blocks)
            del branch
        else:
            deployed = main
        log_eval(f"T{k}", step, deployed)
        deploy.append(deployed)
    final = deploy[-1]
    own = [deploy[k][k] for k in range(stream.n_tasks)]
    forgetting = [final[k] - own[k] for k in range(stream.n_tasks - 1)]
    summary = {
        **(meta or {}), "seed": stream.seed, "corpora": names, "task_steps": task_steps,
        "replay_share": stream.replay_share, "final_loss": dict(zip(names, final)),
        "final_avg_loss": sum(final) / len(final),
        "adaptation_loss": dict(zip(names, own)),
        "forgetting": dict(zip(names[:-1], forgetting)),
        "avg_forgetting": sum(forgetting) / len(forgetting) if forgetting else 0.0,
        "deployable": deploy, "steps": step, "wall_s": time.time() - t_start,
        "versions": versions(),
    }
    rec.summary(summary)
    rec.close()
    return summary
