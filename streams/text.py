"""Language-model streams for the one Runner: token blocks in, probe exact match or held-out loss out.

Both kinds present their tasks the way ``Stream`` does (segments of a schedule, consecutive
batches, deterministic for a seed, resumable at any position) and score their own eval sets
(``eval_sets``, ``score_eval_sets``), so the Runner, checkpoints, loggers, reports and Hydra
sweeps treat them like any stream:

- ``KnowledgeTextStream`` (``stream=knowledge``): continual knowledge learning (Jang et al.,
  ICLR 2022). The base model is probed to split facts into Invariant / Updated / New
  (``continual.streams.knowledge.KnowledgeStream``); each corpus D_i is a task, trained for
  ``epochs`` passes; every eval point scores every probe set by exact match (0-100), the
  updated sets against their old objects (``UL<i>_old``) and the held-out Wikipedia loss;
  IL, UL, NL and FUAR are recorded at every eval point (FUAR at task ends, where it is defined).
- ``CorpusTextStream`` (``stream=corpora``): continual pre-training over corpora in sequence
  (``continual.streams.corpora.CorpusStream``), each a task of ``steps_per_task`` steps with an
  optional replay share; every eval point scores the held-out loss (nats per token) of every
  corpus, lower is better.

Scoring options of the knowledge stream, for the official CKL protocol (Jang et al.'s code,
github.com/joeljang/continual-knowledge-learning); each default keeps our earlier protocol:

- ``num_beams`` (default 1, greedy; official 2): beams of ``strategy.answer``.
- ``match`` (default ``prefix``; official GPT-2 rule ``strict``): how a continuation is
  matched to the gold answer (``continual.lm.evaluation``, module docstring).
- ``light_tune`` (default off, ``n_facts: 0``; official GPT-2 evaluation: 5,000 facts):
  before the probes are answered at every eval point, the model is fine-tuned on
  ``n_facts`` real facts of no probe set, then restored exactly
  (``continual.lm.light_tuning``). The held-out loss is scored on the model as trained,
  outside the light tuning: it measures the continual run, not the probe protocol.
- ``invariant`` (default ``known``; the paper's InvariantLAMA is ``all``): see
  ``continual.streams.knowledge``.

Which base-model facts count as known (the Invariant/Updated/New split) is decided by
greedy decoding and the ``prefix`` rule whatever ``num_beams`` and ``match`` say: the split
is cached per base model and should not move with the scoring options. Under ``strict``
the base model's IL at the init row can therefore be below 100 (strict implies prefix, so
New facts stay unknown under both rules). The options used are recorded in summary.json
(``probe_protocol``).

Departures from the earlier LM loops (``continual.lm.loops``, removed): knowledge batches are
consecutive slices of the epochs' permutations, so a batch may straddle two epochs (as in
``Stream`` with ``passes``); each task draws its permutations from its own generator (seed,
task), so a run resumes at any step; the base model's probe answers are cached on disk
(``probe_cache``), keyed by the model's config and weights, so a sweep probes once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from continual.types import Batch, ConfigError, EvalSet, Segment, SelfScoringStream


@dataclass
class TextTask:
    """One task of a language-model stream (a corpus); no classes."""

    id: int
    name: str
    classes: list[int] = field(default_factory=list)


class TextStream(SelfScoringStream):
    """What the language-model streams share: tasks of (B, T) token batches on a schedule
    (``continual.types.SelfScoringStream``).

    Subclasses fill ``tasks`` and ``segments`` in ``prepare(model, tokenizer)`` (they need the
    tokenizer, and the knowledge stream the base model) and implement ``batches``,
    ``eval_sets``, ``score_eval_sets`` and, where not every set with a task is that task's
    score, ``task_scores``.
    """

    kind = "language"
    needs_model = True  # the CLI builds the (model, tokenizer) first and calls prepare()
    online_accuracy = False  # next-token prediction has no test-then-train accuracy
    counts_tokens = True

    def __init__(self, name: str, batch_size: int, seed: int) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.name, self.batch_size, self.seed = name, int(batch_size), int(seed)
        self.tasks: list[TextTask] = []
        self.segments: list[Segment] = []
        self.device = torch.device("cpu")

    def prepare(self, model: Any, tokenizer: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_prepared(self) -> None:
        if not self.segments:
            raise ConfigError(f"stream {self.name!r} is not prepared: call prepare(model, tokenizer) first")

    @property
    def true_boundaries(self) -> list[int]:
        return [s.start for s in self.segments[1:]]

    def to(self, device: torch.device | str) -> TextStream:
        self.device = torch.device(device)
        return self

    def task_extra(self, task: int) -> dict[str, Any]:
        """What ``TaskInfo.extra`` carries at a task boundary (strategies that read text)."""
        return {"task_steps": self.segment_steps()}

    def batch_tokens(self, batch: Batch) -> torch.Tensor:
        """Tokens the loss is taken on: the labels that are not -100 (padding)."""
        return (batch.y != -100).sum()


# ---------------------------------------------------------------- knowledge (CKL)

def _synthetic_filler(n: int = 2400) -> list[str]:
    """Neutral sentences about nothing in the probe sets (fast; for tests and smoke runs)."""
    subjects = ("The committee", "A small village", "The old bridge", "Their report", "The river")
    verbs = ("was discussed", "was rebuilt", "changed little", "was mentioned again", "stayed quiet")
    times = ("in spring", "last year", "during the meeting", "after the storm", "at noon")
    return [f"{subjects[i % 5]} {verbs[(i // 5) % 5]} {times[(i // 25) % 5]}, item {i}." for i in range(n)]


def capital_oracle(prompts: Sequence[str]) -> list[str]:
    """A stand-in base model that knows every capital and nothing else (``probe_with=capital_oracle``)."""
    from continual.streams.knowledge import probe_prompt, real_facts

    lookup = {probe_prompt(f): f.object for f in real_facts() if f.relation == "capital"}
    return [" " + lookup.get(p, "nothing") + ". More" for p in prompts]


def _model_key(model: Any) -> str:
    """A short hash of a model's config and weights (what its probe answers depend on)."""
    h = hashlib.sha1()
    config = getattr(model, "config", None)
    h.update((config.to_json_string() if hasattr(config, "to_json_string") else repr(config)).encode())
    with torch.no_grad():
        for p in list(model.parameters())[:4]:
            h.update(f"{p.shape}:{float(p.double().sum()):.6e}:{float(p.double().abs().sum()):.6e}".encode())
    return h.hexdigest()[:16]


def _cache_dir() -> Path:
    return Path(os.environ.get("CONTINUAL_CACHE", Path.home() / ".cache" / "continual")) / "probes"


class KnowledgeTextStream(TextStream):
    """CKL's knowledge stream for the Runner (see the module docstring).

    Args (besides ``KnowledgeStream``'s n_per_set, n_phases, mentions, filler_share,
    sentences_per_doc, probe_wording_in_corpus, new_fictional_share, probe_limit, n_review,
    n_heldout):
        epochs: passes over each corpus. batch_size: rows per step. seq_len: tokens per row.
        filler: ``wikipedia`` (gensim's sample) or ``synthetic`` (fast; tests).
        probe_with: ``model`` (the base model's greedy answers) or ``capital_oracle`` (a
            stand-in that knows every capital; for tests with an untrained model); from
            Python also any function (prompts -> continuations) standing in for the base model.
        facts: a user's own facts instead of the drawn ones: a JSON Lines path or a list of
            the same mappings (``continual.streams.knowledge``, "A user's own facts").
        probe_cache: keep the base model's probe answers on disk (``$CONTINUAL_CACHE``,
            default ``~/.cache/continual``), keyed by its config and weights.
        answer_batch_size: prompts per generation batch when probing.
        num_beams: beams when the strategy answers the probes (1: greedy).
        match: ``prefix`` or ``strict`` (``continual.lm.evaluation.answer_matches``).
        light_tune: ``{n_facts, lr, batch_size, optimizer, epochs}``; ``n_facts > 0`` light-tunes
            the model on that many unprobed real facts before each eval point's probes
            (``continual.lm.light_tuning``).
        invariant: ``known`` or ``all`` (``continual.streams.knowledge.KnowledgeStream``).
    """

    kind = "knowledge"
    LIGHT_TUNE_DEFAULTS = {"n_facts": 0, "lr": 1e-3, "batch_size": 32, "optimizer": "adafactor", "epochs": 1}

    def __init__(self, n_per_set: int = 100, n_phases: int = 1, mentions: int = 4, filler_share: float = 0.3,
                 sentences_per_doc: int = 6, probe_wording_in_corpus: bool = True,
                 new_fictional_share: float = 0.5, probe_limit: int = 1200, n_review: int = 2000,
                 n_heldout: int = 200, epochs: int = 4, batch_size: int = 8, seq_len: int = 128,
                 filler: str = "wikipedia", probe_with: str | Callable[[list[str]], list[str]] = "model",
                 probe_cache: bool = True,
                 answer_batch_size: int = 32, num_beams: int = 1, match: str = "prefix",
                 light_tune: dict[str, Any] | None = None, invariant: str = "known",
                 facts: str | list[dict[str, Any]] | None = None, seed: int = 0, name: str = "knowledge") -> None:
        from continual.lm.evaluation import MATCH_RULES
        from continual.streams.knowledge import KnowledgeStream

        super().__init__(name, batch_size, seed)
        if epochs < 1 or seq_len < 2:
            raise ConfigError(f"epochs must be >= 1 and seq_len >= 2, got {epochs}, {seq_len}")
        if filler not in ("wikipedia", "synthetic"):
            raise ConfigError(f"filler must be 'wikipedia' or 'synthetic', got {filler!r}")
        if probe_with not in ("model", "capital_oracle") and not callable(probe_with):
            raise ConfigError(f"probe_with must be 'model' or 'capital_oracle' (or, from Python, a function "
                              f"prompts -> answers), got {probe_with!r}")
        self.epochs, self.seq_len = int(epochs), int(seq_len)
        self.filler, self.probe_with, self.probe_cache = filler, probe_with, probe_cache
        self.answer_batch_size = int(answer_batch_size)
        if int(num_beams) < 1:
            raise ConfigError(f"num_beams must be >= 1 (1: greedy), got {num_beams}")
        if match not in MATCH_RULES:
            raise ConfigError(f"match must be one of {list(MATCH_RULES)}, got {match!r}")
        self.num_beams, self.match = int(num_beams), match
        self.light_tune = self._light_tune_options(light_tune)
        self.spec = KnowledgeStream(
            n_per_set=n_per_set, n_phases=n_phases, mentions=mentions, filler_share=filler_share,
            sentences_per_doc=sentences_per_doc, probe_wording_in_corpus=probe_wording_in_corpus,
            new_fictional_share=new_fictional_share, probe_limit=probe_limit, n_review=n_review,
            n_heldout=n_heldout, seed=seed, invariant=invariant, facts=facts,
            filler_texts=_synthetic_filler() if filler == "synthetic" else None)
        self.spec._check()
        self.data: Any = None
        self.light_tune_texts: list[str] = []

    @classmethod
    def _light_tune_options(cls, options: Any) -> dict[str, Any]:
        given = dict(options or {})
        unknown = sorted(set(given) - set(cls.LIGHT_TUNE_DEFAULTS))
        if unknown:
            raise ConfigError(f"light_tune has no option(s) {unknown}; it takes {sorted(cls.LIGHT_TUNE_DEFAULTS)}")
        out = {**cls.LIGHT_TUNE_DEFAULTS, **given}
        if int(out["n_facts"]) < 0 or int(out["batch_size"]) < 1 or int(out["epochs"]) < 1 or float(out["lr"]) <= 0:
            raise ConfigError(f"light_tune needs n_facts >= 0 (0: off), batch_size >= 1, epochs >= 1 and lr > 0, "
                              f"got {out}")
        return {"n_facts": int(out["n_facts"]), "lr": float(out["lr"]), "batch_size": int(out["batch_size"]),
                "optimizer": str(out["optimizer"]), "epochs": int(out["epochs"])}

    # ------------------------------------------------------------------ building
    def _answer_fn(self, model: Any, tokenizer: Any):
        from continual.lm.evaluation import greedy_answers
        from continual.streams.knowledge import real_facts

        if callable(self.probe_with):
            return self.probe_with
        if self.probe_with == "capital_oracle":
            return capital_oracle
        own = [g for f, _ in self.spec.own.facts for g in (f.object, f.old_object) if g] if self.spec.own else []
        budget = max(len(tokenizer(" " + g, add_special_tokens=False)["input_ids"])
                     for g in [f.object for f in real_facts()] + own) + 2
        path = _cache_dir() / f"{_model_key(model)}_{budget}.json" if self.probe_cache else None

        def answer(prompts: list[str]) -> list[str]:
            cache: dict[str, str] = json.loads(path.read_text()) if path and path.exists() else {}
            todo = [p for p in dict.fromkeys(prompts) if p not in cache]
            if todo:
                cache.update(zip(todo, greedy_answers(model, tokenizer, todo, budget, self.answer_batch_size)))
                if path is not None:
                    from continual.records import write_atomic

                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_atomic(path, json.dumps(cache).encode())
            return [cache[p] for p in prompts]

        return answer

    def prepare(self, model: Any, tokenizer: Any) -> None:
        """Probe the base model, build the corpora and pack them into token rows."""
        from continual.lm.evaluation import answer_token_budget
        from continual.streams.corpora import pack_documents

        self.tokenizer = tokenizer
        self.data = self.spec.build(self._answer_fn(model, tokenizer))
        self.light_tune_texts = self._light_tune_texts()
        golds = [f.object for facts in self.data.probe_sets().values() for f in facts]
        golds += [f.old_object for ph in self.data.phases for f in ph.updated]
        self.budget = answer_token_budget(tokenizer, golds)
        self.rows = [pack_documents(tokenizer, ph.corpus, self.seq_len) for ph in self.data.phases]
        self.tasks = [TextTask(i, f"D{i + 1}") for i in range(len(self.data.phases))]
        self.segments, pos = [], 0
        for i, (x, _) in enumerate(self.rows):
            n = x.shape[0] * self.epochs
            self.segments.append(Segment(pos, pos + n, i))
            pos += n
        self._orders: dict[int, torch.Tensor] = {}

    def _light_tune_texts(self) -> list[str]:
        """``light_tune.n_facts`` real facts of no probe set, drawn by the seed, as "<probe> <object>."."""
        import random

        from continual.streams.knowledge import probe_prompt

        n = self.light_tune["n_facts"]
        if n == 0:
            return []
        pool = self.data.unprobed_real_facts()
        if n > len(pool):
            raise ConfigError(f"light_tune.n_facts={n} but only {len(pool)} real facts are in no probe set; "
                              "lower light_tune.n_facts or n_per_set")
        facts = random.Random(self.seed).sample(pool, n)
        return [f"{probe_prompt(f, self.data.relations)} {f.object}." for f in facts]

    # ------------------------------------------------------------------ batches
    def _order(self, task: int) -> torch.Tensor:
        """Row indices of task ``task`` in training order: one permutation per epoch."""
        if task not in self._orders:
            g = torch.Generator().manual_seed(self.seed * 1000 + task)
            n = self.rows[task][0].shape[0]
            self._orders[task] = torch.cat([torch.randperm(n, generator=g) for _ in range(self.epochs)])
        return self._orders[task]

    def batches(self, segment: Segment, first_step: int = 0, start: int | None = None) -> Iterator[Batch]:
        self._check_prepared()
        x_all, y_all = self.rows[segment.task]
        order = self._order(segment.task)
        pos, step = segment.start if start is None else start, first_step
        while pos < segment.end:
            end = min(pos + self.batch_size, segment.end)
            idx = order[pos - segment.start:end - segment.start]
            yield Batch(x=x_all[idx].to(self.device), y=y_all[idx].to(self.device), step=step,
                        true_task=torch.full((idx.numel(),), segment.task), index=idx)
            pos, step = end, step + 1

    def task_extra(self, task: int) -> dict[str, Any]:
        return {**super().task_extra(task), "steps_per_epoch": -(-self.rows[task][0].shape[0] // self.batch_size),
                "texts": self.data.phases[task].corpus, "review_texts": self.data.review_texts}

    # ------------------------------------------------------------------ evaluation
    @property
    def eval_sets(self) -> list[EvalSet]:
        n = len(self.spec_phases())
        sets = [EvalSet("IL", "exact_match", True)]
        for i in range(1, n + 1):
            sets += [EvalSet(f"UL{i}", "exact_match", True, i - 1), EvalSet(f"NL{i}", "exact_match", True, i - 1)]
        sets += [EvalSet(f"UL{i}_old", "exact_match", True) for i in range(1, n + 1)]
        return sets + [EvalSet("heldout_loss", "loss", False)]

    def spec_phases(self) -> list[Any]:
        self._check_prepared()
        return self.data.phases

    def answer_probes(self, strategy: Any, prompts: list[str]) -> list[str]:
        """``strategy.answer`` on the probes with this stream's beams, inside light tuning when on."""
        from continual.lm.light_tuning import light_tuned

        beams = {"num_beams": self.num_beams} if self.num_beams != 1 else {}  # plugins may take no beams
        options = {k: v for k, v in self.light_tune.items() if k != "n_facts"}
        with light_tuned(strategy.model, self.tokenizer, self.light_tune_texts, seed=self.seed, **options):
            return strategy.answer(prompts, max_new_tokens=self.budget, **beams)

    def score_eval_sets(self, strategy: Any) -> tuple[list[float], list[dict[str, Any]]]:
        """Exact match (rule ``match``) of the strategy's answers on every probe set, of the
        updated sets against their old objects, and the held-out text loss; plus one record
        per probe."""
        from continual.lm.evaluation import exact_match, text_loss
        from continual.streams.knowledge import probe_prompt

        sets = self.data.probe_sets()
        prompts = [probe_prompt(f, self.data.relations) for facts in sets.values() for f in facts]
        preds = self.answer_probes(strategy, prompts)
        scores: dict[str, float] = {}
        details: list[dict[str, Any]] = []
        pos = 0
        for name, facts in sets.items():
            p = preds[pos:pos + len(facts)]
            pos += len(facts)
            scores[name] = exact_match(p, [f.object for f in facts], self.match)
            if name.startswith("UL"):
                scores[name + "_old"] = exact_match(p, [f.old_object for f in facts], self.match)
            details += [{"set": name, "subject": f.subject, "relation": f.relation, "object": f.object,
                         "old_object": f.old_object, "prediction": a} for f, a in zip(facts, p)]
        scores["heldout_loss"] = text_loss(strategy.model, self.tokenizer, self.data.heldout_texts)
        return [scores[s.name] for s in self.eval_sets], details

    def task_scores(self, scores: Sequence[float]) -> list[float]:
        """Per corpus D_i: exact match on its updated and new facts together (FUAR's T^F_i)."""
        row = dict(zip((s.name for s in self.eval_sets), scores))
        return [self._union(row, i) for i in range(1, len(self.data.phases) + 1)]

    def _union(self, row: dict[str, float], i: int) -> float:
        ph = self.data.phases[i - 1]
        nu, nn_ = len(ph.updated), len(ph.new)
        return (row[f"UL{i}"] * nu + row[f"NL{i}"] * nn_) / max(nu + nn_, 1)

    def _fuar(self, points: list[dict[str, float]]) -> float | None:
        """Multi-phase FUAR (Jang et al. Sec. 3.3) over M_0..M_j (the init and task-end rows)."""
        from continual.lm.fuar import fuar_multiphase

        j = len(points) - 1
        last = points[j]
        retained = [(points[0]["IL"], last["IL"])] + [(self._union(points[i], i), self._union(last, i))
                                                       for i in range(1, j)]
        updated = [(points[i - 1][f"UL{i}"], last[f"UL{i}"]) for i in range(1, j + 1)]
        acquired = [(points[i - 1][f"NL{i}"], last[f"NL{i}"]) for i in range(1, j + 1)]
        return fuar_multiphase(retained, updated, acquired)

    def _headline(self, row: dict[str, float]) -> dict[str, float]:
        n = len(self.data.phases)
        return {"IL": row["IL"], "UL": sum(row[f"UL{i}"] for i in range(1, n + 1)) / n,
                "NL": sum(row[f"NL{i}"] for i in range(1, n + 1)) / n}

    def eval_metrics(self, rows: list[dict[str, float]], task_end_rows: list[int]) -> dict[str, Any]:
        """IL, UL, NL of the newest row, and FUAR when it is a task-end row (else null)."""
        out: dict[str, Any] = self._headline(rows[-1])
        last = len(rows) - 1
        out["FUAR"] = self._fuar([rows[0]] + [rows[e] for e in task_end_rows]) \
            if task_end_rows and task_end_rows[-1] == last else None
        return out

    def summary_metrics(self, rows: list[dict[str, float]], task_end_rows: list[int]) -> dict[str, Any]:
        """Final IL/UL/NL, FUAR over M_0..M_n, the initial ones, probe-set sizes, the scoring
        options (``probe_protocol``), stream facts."""
        return {**self._headline(rows[-1]), "FUAR": self._fuar([rows[0]] + [rows[e] for e in task_end_rows]),
                "initial": self._headline(rows[0]),
                "probe_sizes": {k: len(v) for k, v in self.data.probe_sets().items()},
                "probe_protocol": {"num_beams": self.num_beams, "match": self.match,
                                   "invariant": self.spec.invariant, "light_tune": dict(self.light_tune)},
                "stream_stats": self.data.stats}


# ---------------------------------------------------------------- corpora (pre-training)

class CorpusTextStream(TextStream):
    """Continual pre-training over corpora in sequence, for the Runner (see the module docstring).

    Args:
        source: ``domains`` (``domains``: wiki, code, facts; ``n_chars`` each) or
            ``wiki_topics`` (the Wikipedia sample in ``n_groups`` TF-IDF + k-means topics).
        files: a user's own corpora, one task each, in order (``continual.streams.text_sources``:
            text files, folders, globs, ``a.jsonl:field``, saved datasets; an entry may be
            ``{train, eval, name}``); given, they replace ``source`` and ``domains``.
        eval_fraction: share of each corpus held out for the loss (in pieces of 1,000
            characters, at least one), unless an entry gives a held-out file of its own.
        seq_len, batch_size, steps_per_task, replay_share: as ``CorpusStream``.
        max_eval_blocks: held-out blocks scored per corpus at each eval point.
        data_seed: seed of the corpora themselves (the same text for every run seed).
        seed: the run's seed (batch order and replay draws).
    """

    kind = "corpus"

    def __init__(self, source: str = "domains", domains: Sequence[str] = ("wiki", "code", "facts"),
                 files: Sequence[str | dict[str, str]] = (), eval_fraction: float = 0.1,
                 n_chars: int = 200_000, n_groups: int = 3, seq_len: int = 64, batch_size: int = 16,
                 steps_per_task: int | Sequence[int] = 200, replay_share: float = 0.0, max_eval_blocks: int = 32,
                 data_seed: int = 0, seed: int = 0, name: str = "corpora") -> None:
        from continual.streams.corpora import DOMAINS
        from continual.streams.text_sources import parse_corpus_entries

        super().__init__(name, batch_size, seed)
        if source not in ("domains", "wiki_topics"):
            raise ConfigError(f"source must be 'domains' or 'wiki_topics', got {source!r}; for your own "
                              "files give stream.files=[a.txt,b.txt]")
        if isinstance(domains, str):
            raise ConfigError(f"domains must be a list such as [wiki,code], got the string {domains!r}; "
                              f"write stream.domains=[{domains}] (domains: {list(DOMAINS)})")
        if max_eval_blocks < 1:
            raise ConfigError(f"max_eval_blocks must be >= 1, got {max_eval_blocks}")
        if not 0 < eval_fraction < 1:
            raise ConfigError(f"eval_fraction must be in (0, 1) (the held-out share of each corpus), "
                              f"got {eval_fraction}")
        self.files = parse_corpus_entries(files or [])  # checks every path before the model is built
        if self.files and (source != "domains" or list(domains) != list(DOMAINS)):
            given = f"source={source}" if source != "domains" else f"domains={list(domains)}"
            raise ConfigError(f"files and {given} both choose the corpora; give one: files for your own "
                              "text, source/domains for the built-in corpora")
        self.source, self.domains, self.n_chars, self.n_groups = source, list(domains), int(n_chars), int(n_groups)
        self.eval_fraction = float(eval_fraction)
        self.seq_len, self.steps_per_task, self.replay_share = int(seq_len), steps_per_task, float(replay_share)
        self.max_eval_blocks, self.data_seed = int(max_eval_blocks), int(data_seed)
        self.inner: Any = None
        self._bytes_per_token: dict[int, float] = {}

    def corpora(self) -> list[Any]:
        """The corpora in task order: the user's ``files`` when given, else the built-in ones."""
        from continual.streams.corpora import domain_corpus, own_corpus, wikipedia_topic_corpora

        share, seed = self.eval_fraction, self.data_seed
        if self.files:
            return [own_corpus(f, eval_share=share, seed=seed) for f in self.files]
        if self.source == "domains":
            return [domain_corpus(d, n_chars=self.n_chars, eval_share=share, seed=seed) for d in self.domains]
        return wikipedia_topic_corpora(self.n_groups, eval_share=share, seed=seed)

    def prepare(self, model: Any, tokenizer: Any) -> None:
        from continual.streams.corpora import CorpusStream

        steps = self.steps_per_task
        self.inner = CorpusStream(self.corpora(), tokenizer, seq_len=self.seq_len, batch_size=self.batch_size,
                                  steps_per_task=steps if isinstance(steps, int) else list(steps),
                                  replay_share=self.replay_share, seed=self.seed)
        if len(self.inner.task_steps) != self.inner.n_tasks:
            raise ConfigError(f"steps_per_task lists {len(self.inner.task_steps)} tasks but there are "
                              f"{self.inner.n_tasks} corpora")
        self.inner.eval_blocks(0)  # tokenise every corpus now: a too short one is refused before training
        self.tasks = [TextTask(k, c.name) for k, c in enumerate(self.inner.corpora)]
        self.segments, pos = [], 0
        for k, n in enumerate(self.inner.task_steps):
            self.segments.append(Segment(pos, pos + n * self.batch_size, k))
            pos += n * self.batch_size

    def batches(self, segment: Segment, first_step: int = 0, start: int | None = None) -> Iterator[Batch]:
        self._check_prepared()
        skip = 0 if start is None else (start - segment.start) // self.batch_size
        for i, b in enumerate(self.inner.batches(segment.task)):  # replays the draws it skips
            if i >= skip:
                yield Batch(x=b.x.to(self.device), y=b.y.to(self.device), true_task=b.true_task,
                            step=first_step + i - skip)

    @property
    def eval_sets(self) -> list[EvalSet]:
        self._check_prepared()
        return [EvalSet(f"loss/{c.name}", "loss", False, k) for k, c in enumerate(self.inner.corpora)]

    def score_eval_sets(self, strategy: Any) -> tuple[list[float], None]:
        """Held-out loss (nats per token) of the strategy's model on every corpus."""
        return [strategy.loss_on(self.inner.eval_blocks(k)[:self.max_eval_blocks])
                for k in range(self.n_tasks)], None

    def bytes_per_token(self, k: int) -> float:
        """UTF-8 bytes per predicted token of corpus ``k``'s scored held-out blocks (what bits per
        byte divide by, so that they compare across tokenizers); special tokens count no bytes.
        Each row is decoded on its own: a multi-byte character cut by a block edge may count as a
        replacement character (3 bytes), a negligible error on blocks of tens of tokens."""
        if k not in self._bytes_per_token:
            blocks = self.inner.eval_blocks(k)[:self.max_eval_blocks]
            decode = self.inner.tokenizer.decode
            n_bytes = sum(len(decode(row[1:].tolist(), skip_special_tokens=True).encode()) for row in blocks)
            self._bytes_per_token[k] = n_bytes / max(1, blocks.shape[0] * (blocks.shape[1] - 1))
        return self._bytes_per_token[k]

    def language_scores(self, row: dict[str, float]) -> dict[str, float]:
        """Perplexity (``ppl/<corpus>``, exp of nats per token) and bits per byte
        (``bpb/<corpus>``: nats per token / ln 2 / bytes per token) of one eval row's losses."""
        out: dict[str, float] = {}
        for k, name in enumerate(self.corpus_names()):
            loss = row[f"loss/{name}"]
            out[f"ppl/{name}"] = math.exp(loss) if loss < 700 else math.inf
            bpt = self.bytes_per_token(k)
            out[f"bpb/{name}"] = loss / math.log(2) / bpt if bpt else math.nan
        return out

    def corpus_names(self) -> list[str]:
        return [s.name.split("/", 1)[1] for s in self.eval_sets]

    def eval_metrics(self, rows: list[dict[str, float]], task_end_rows: list[int]) -> dict[str, Any]:
        """Every eval record gets each corpus's perplexity and bits per byte beside its loss."""
        return self.language_scores(rows[-1])

    def summary_metrics(self, rows: list[dict[str, float]], task_end_rows: list[int]) -> dict[str, Any]:
        """Per corpus: final loss, bits per byte and perplexity, the loss right after its own
        task (adaptation), and its forgetting as the engine defines it for every stream
        (``forgetting_per_task``: the best earlier task-end loss to the final one, > 0 worse),
        keyed by corpus."""
        import numpy as np

        from continual.metrics import forgetting_per_task

        names = self.corpus_names()
        final = [rows[-1][f"loss/{n}"] for n in names]
        own = [rows[e][f"loss/{n}"] for n, e in zip(names, task_end_rows)]
        losses = np.array([[r[f"loss/{n}"] for n in names] for r in rows])
        forgetting = forgetting_per_task(-losses, task_end_rows) if len(task_end_rows) > 1 else []
        scores = self.language_scores(rows[-1])
        bpb = {n: scores[f"bpb/{n}"] for n in names}
        return {"corpora": names, "final_loss": dict(zip(names, final)), "final_avg_loss": sum(final) / len(final),
                "final_bpb": bpb, "final_avg_bpb": sum(bpb.values()) / len(bpb),
                "final_ppl": {n: scores[f"ppl/{n}"] for n in names},
                "adaptation_loss": dict(zip(names, own)),
                "forgetting_by_corpus": {n: float(f) for n, f in zip(names, forgetting)},
                "replay_share": self.replay_share}
