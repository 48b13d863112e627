"""Entry point for the language-model experiments (``conf/experiment/ckl_smollm2.yaml``,
``conf/experiment/infinite_lr.yaml``):

    python -m continual.lm.run experiment=ckl_smollm2 [seeds=[0,1,2]] [methods=[vanilla,lora]]
    python -m continual.lm.run experiment=infinite_lr [schedules_to_run=[infinite]] [key=value ...]

The experiment file is composed with Hydra (overrides as on any Hydra command line); every
(method or schedule) x seed run gets its own run folder under ``out_dir``
(config.yaml, metrics.jsonl, scores.csv, summary.json), and ``out_dir/results.md`` holds
the table over all runs.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from continual.types import ConfigError

CONF_DIR = Path(str(importlib.resources.files("continual.conf")))


def compose_experiment(name: str, overrides: list[str]) -> Any:
    """The experiment config ``conf/experiment/<name>.yaml`` with Hydra overrides applied."""
    from hydra import compose, initialize_config_dir

    if not (CONF_DIR / "experiment" / f"{name}.yaml").exists():
        have = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
        raise ConfigError(f"no experiment {name!r} in {CONF_DIR / 'experiment'}; have {have}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name=f"experiment/{name}", overrides=overrides)


def build_from_config(node: Any, **objects: Any) -> Any:
    """Call the config's ``_target_`` with its other keys (plain Python values) and
    ``objects`` (models, tokenizers, factories that do not belong in a config)."""
    from hydra.utils import get_object
    from omegaconf import OmegaConf

    kwargs = dict(node) if isinstance(node, dict) else OmegaConf.to_container(node, resolve=True)
    target = kwargs.pop("_target_", None)
    if target is None:
        raise ConfigError(f"config {kwargs} has no _target_ to build")
    return get_object(target)(**kwargs, **objects)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _mean_sd(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "n.d."
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"


def cached_answer_fn(strategy: Any, cache_path: Path, max_new_tokens: int):
    """``strategy.answer`` for probing the base model, memoised in a JSON file."""
    cache: dict[str, str] = json.loads(cache_path.read_text()) if cache_path.exists() else {}

    def answer(prompts: list[str]) -> list[str]:
        todo = [p for p in dict.fromkeys(prompts) if p not in cache]
        if todo:
            cache.update(zip(todo, strategy.answer(todo, max_new_tokens=max_new_tokens)))
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_text(json.dumps(cache))
        return [cache[p] for p in prompts]

    return answer


# ---------------------------------------------------------------- CKL

def run_ckl(cfg: Any) -> list[dict[str, Any]]:
    """Every CKL method x seed on a knowledge stream probed from the base model."""
    from omegaconf import OmegaConf

    from continual.lm.fuar import format_fuar
    from continual.lm.loops import evaluate_knowledge, knowledge_budget, run_knowledge_stream
    from continual.models.lm import build_lm
    from continual.strategies.ckl.vanilla import Vanilla
    from continual.streams.knowledge import real_facts

    out = Path(cfg.out_dir)
    base, tok = build_lm(**OmegaConf.to_container(cfg.model, resolve=True))
    summaries = []
    for seed in cfg.seeds:
        stream = build_from_config(cfg.stream, seed=seed)
        budget = max(len(tok(" " + f.object, add_special_tokens=False)["input_ids"])
                     for f in real_facts()) + 2
        probe = cached_answer_fn(Vanilla(base, tok), out / f"probe_cache_{cfg.model.name}.json",
                                 budget)
        t0 = time.time()
        data = stream.build(probe)
        print(f"[seed {seed}] stream built in {time.time() - t0:.0f}s: {data.stats}", flush=True)
        t0 = time.time()
        initial = evaluate_knowledge(Vanilla(base, tok), data, knowledge_budget(tok, data))
        print(f"[seed {seed}] M0 evaluated in {time.time() - t0:.0f}s: {initial}", flush=True)
        for method in cfg.methods:
            if method not in cfg.strategies:
                raise ConfigError(f"method {method!r} has no entry under strategies; "
                                  f"have {sorted(cfg.strategies)}")
            seed_everything(seed)
            run_dir = out / method / f"seed{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(cfg, run_dir / "config.yaml")
            strategy = build_from_config(cfg.strategies[method], model=copy.deepcopy(base),
                                         tokenizer=tok)
            s = run_knowledge_stream(strategy, data, str(run_dir), seed=seed,
                                     meta={"method": method, "model": cfg.model.name},
                                     initial_scores=initial,
                                     **OmegaConf.to_container(cfg.train, resolve=True))
            f = s["final"]
            print(f"[seed {seed}] {method}: IL {f['IL']:.1f} UL {f['UL1']:.1f} NL {f['NL1']:.1f} "
                  f"FUAR {format_fuar(s['FUAR'])} ({s['train_s']:.0f}s train, "
                  f"{s['wall_s']:.0f}s wall)", flush=True)
            summaries.append(s)
            write_ckl_table(collect_summaries(out), out / "results.md", echo=False)
            del strategy
    write_ckl_table(collect_summaries(out), out / "results.md")
    return summaries


def collect_summaries(out_dir: Path) -> list[dict[str, Any]]:
    """Every run's summary.json under ``out_dir/<name>/seed<k>/`` (all seeds run so far)."""
    return [json.loads(p.read_text()) for p in sorted(Path(out_dir).glob("*/seed*/summary.json"))]


PAPER_ORDER = ("vanilla", "recadam", "mixreview", "lora", "kadapter", "ltm_retrieval")


def write_ckl_table(summaries: list[dict[str, Any]], path: Path, echo: bool = True) -> str:
    """Markdown table: per method, IL / UL / NL exact match and FUAR (mean ± sd over seeds)."""
    methods = sorted(dict.fromkeys(s["method"] for s in summaries),
                     key=lambda m: (PAPER_ORDER.index(m) if m in PAPER_ORDER else 99, m))
    n_ph = max(int(k[2:]) for k in summaries[0]["final"] if k.startswith("UL") and
               k[2:].isdigit())
    seeds = {s.get("seed"): s["initial"] for s in summaries}  # one M0 per seed (its split)
    init = {k: statistics.mean(v[k] for v in seeds.values()) for k in summaries[0]["initial"]}
    lines = ["| method | seeds | IL | " + " | ".join(
        f"UL{i} | NL{i}" for i in range(1, n_ph + 1)) + " | FUAR | heldout loss | trainable "
        "params | train s |", "|" + " --- |" * (7 + 2 * n_ph)]
    lines.append(f"| initial (M0) | {len(seeds)} | " + f"{init['IL']:.2f} | " + " | ".join(
        f"{init[f'UL{i}']:.2f} | {init[f'NL{i}']:.2f}" for i in range(1, n_ph + 1)) +
        f" | - | {init['heldout_loss']:.3f} | - | - |")
    for m in methods:
        runs = [s for s in summaries if s["method"] == m]
        cells = [_mean_sd([r["final"]["IL"] for r in runs])]
        for i in range(1, n_ph + 1):
            cells += [_mean_sd([r["final"][f"UL{i}"] for r in runs]),
                      _mean_sd([r["final"][f"NL{i}"] for r in runs])]
        fuars = [r["FUAR"] for r in runs]
        nd = sum(v is None for v in fuars)
        cells.append(_mean_sd(fuars) + (f" ({nd} n.d.)" if nd and nd < len(fuars) else ""))
        cells.append(_mean_sd([r["final"]["heldout_loss"] for r in runs]))
        train_s = statistics.mean(r["train_s"] for r in runs)
        cells += [str(runs[0]["trainable_params"]), f"{train_s:.0f}"]
        lines.append(f"| {m} | {len(runs)} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if echo:
        print(text)
    return text


# ---------------------------------------------------------------- continual pre-training

def build_corpora(cfg: Any, seed: int) -> list:
    from continual.streams.corpora import domain_corpus, wikipedia_topic_corpora

    if cfg.source == "domains":
        return [domain_corpus(d, n_chars=cfg.n_chars, seed=seed) for d in cfg.domains]
    if cfg.source == "wiki_topics":
        return wikipedia_topic_corpora(cfg.n_groups, seed=seed)
    raise ConfigError(f"corpora.source must be 'domains' or 'wiki_topics', got {cfg.source!r}")


def run_cpt(cfg: Any) -> list[dict[str, Any]]:
    """Every LR schedule x seed on a corpus stream, equal steps for all schedules."""
    import functools

    from hydra.utils import get_object
    from omegaconf import OmegaConf

    from continual.lm.loops import run_corpus_stream
    from continual.models.lm import build_lm
    from continual.streams.corpora import CorpusStream

    out = Path(cfg.out_dir)
    summaries = []
    for seed in cfg.seeds:
        corpora = build_corpora(cfg.corpora, seed=0)  # same data for every seed and schedule
        for name in cfg.schedules_to_run:
            if name not in cfg.schedules:
                raise ConfigError(f"schedule {name!r} not under schedules; "
                                  f"have {sorted(cfg.schedules)}")
            seed_everything(seed)
            model, tok = build_lm(**OmegaConf.to_container(cfg.model, resolve=True), seed=seed)
            stream = CorpusStream(corpora, tok, seed=seed,
                                  **OmegaConf.to_container(cfg.stream, resolve=True))
            sched_cfg = OmegaConf.to_container(cfg.schedules[name], resolve=True)
            schedule = functools.partial(get_object(sched_cfg.pop("_target_")), **sched_cfg)
            strategy = build_from_config(cfg.strategy, model=model, tokenizer=tok,
                                         schedule=schedule)
            run_dir = out / name / f"seed{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(cfg, run_dir / "config.yaml")
            s = run_corpus_stream(strategy, stream, str(run_dir), meta={"schedule": name},
                                  **OmegaConf.to_container(cfg.eval, resolve=True))
            print(f"[seed {seed}] {name}: final {s['final_loss']} forgetting {s['forgetting']} "
                  f"({s['wall_s']:.0f}s)", flush=True)
            summaries.append(s)
    write_cpt_table(collect_summaries(out), out / "results.md")
    return summaries


def write_cpt_table(summaries: list[dict[str, Any]], path: Path) -> str:
    """Markdown tables: final loss per corpus, forgetting and adaptation, mean ± sd."""
    names = summaries[0]["corpora"]
    order = ("infinite", "repeated_cosine", "constant", "wsd")
    scheds = sorted(dict.fromkeys(s["schedule"] for s in summaries),
                    key=lambda n: (order.index(n) if n in order else 99, n))
    head = ("| schedule | seeds | " + " | ".join(f"final {n}" for n in names) + " | final avg | "
            + " | ".join(f"forgetting {n}" for n in names[:-1]) + " | avg forgetting | "
            + " | ".join(f"adapt {n}" for n in names) + " |")
    lines = [head, "|" + " --- |" * (4 + 2 * len(names) + len(names) - 1)]
    for sc in scheds:
        runs = [s for s in summaries if s["schedule"] == sc]
        cells = [_mean_sd([r["final_loss"][n] for r in runs]) for n in names]
        cells.append(_mean_sd([r["final_avg_loss"] for r in runs]))
        cells += [_mean_sd([r["forgetting"][n] for r in runs]) for n in names[:-1]]
        cells.append(_mean_sd([r["avg_forgetting"] for r in runs]))
        cells += [_mean_sd([r["adaptation_loss"][n] for r in runs]) for n in names]
        lines.append(f"| {sc} | {len(runs)} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)
    return text


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = [a.split("=", 1)[1] for a in argv if a.startswith("experiment=")]
    if len(names) != 1:
        raise SystemExit("usage: python -m continual.lm.run experiment=<ckl_smollm2|infinite_lr> "
                         "[key=value ...]")
    cfg = compose_experiment(names[0], [a for a in argv if not a.startswith("experiment=")])
    import torch

    torch.set_num_threads(int(cfg.get("torch_threads", 1)))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if cfg.kind == "knowledge":
        run_ckl(cfg)
    elif cfg.kind == "corpus":
        run_cpt(cfg)
    else:
        raise ConfigError(f"experiment kind must be 'knowledge' or 'corpus', got {cfg.kind!r}")


if __name__ == "__main__":
    main()
