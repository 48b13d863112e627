"""Corpus streams for continual pre-training: text corpora in sequence, with replay.

A ``CorpusStream`` is a list of ``Corpus`` (train and held-out texts) with a distribution
shift between them; task k trains on corpus k in blocks of ``seq_len`` tokens, and a
``replay_share`` of every batch (Ibrahim et al. 2024 use 1%-50%, typically 5%-25%) is drawn
from the blocks of earlier corpora. Forgetting is read from the held-out loss on every
corpus at every eval point.

Offline sources: gensim's 103-article Wikipedia sample (``wikipedia_articles``, grouped
by topic with TF-IDF + k-means in ``wikipedia_topic_corpora``), the Python standard
library's source files (``code``) and templated geography facts (``facts``, from
``continual.streams.knowledge``) as synthetic domains (``domain_corpus``). A user's own
files (``own_corpus``; read by ``continual.streams.text_sources``) are split the same way.
"""

from __future__ import annotations

import os
import random
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from continual.streams.text_sources import CorpusSource
from continual.streams.wikipedia import (  # noqa: F401 - re-exported: where they were
    WIKI_FILE,
    clean_wikitext,
    split_sentences,
    wikipedia_articles,
    wikipedia_sentences,
)
from continual.types import Batch, ConfigError

DOMAINS = ("wiki", "code", "facts")


# ---------------------------------------------------------------- offline text sources

def python_source_texts(max_files: int = 60, seed: int = 0) -> list[str]:
    """Source of up to ``max_files`` top-level standard-library modules (a code domain)."""
    lib = sysconfig.get_paths()["stdlib"]
    names = sorted(n for n in os.listdir(lib) if n.endswith(".py") and not n.startswith("_"))
    random.Random(seed).shuffle(names)
    texts = []
    for name in names[:max_files]:
        with open(os.path.join(lib, name), encoding="utf-8", errors="replace") as fh:
            texts.append(fh.read())
    return texts


# ---------------------------------------------------------------- corpora

@dataclass
class Corpus:
    """A named text corpus: training texts and held-out texts (loss is measured on these)."""

    name: str
    train_texts: list[str]
    eval_texts: list[str]


def _split_chars(name: str, texts: Sequence[str], n_chars: int, eval_share: float,
                 seed: int) -> Corpus:
    """Shuffle texts, keep about n_chars characters, hold out eval_share of them."""
    texts = list(texts)
    random.Random(seed).shuffle(texts)
    picked, total = [], 0
    for t in texts:
        if total >= n_chars:
            break
        picked.append(t[: n_chars - total] if total + len(t) > n_chars else t)
        total += len(picked[-1])
    return hold_out(name, picked, eval_share, f"raise n_chars (got {n_chars})")


def hold_out(name: str, pieces: Sequence[str], eval_share: float, remedy: str) -> Corpus:
    """The first ``eval_share`` of already shuffled pieces (at least one) held out, the rest to
    train on; ``remedy`` says what to do when there are fewer than 2 pieces."""
    if len(pieces) < 2:
        raise ConfigError(f"corpus {name!r} has {len(pieces)} piece(s) of up to {PIECE_CHARS} characters: "
                          f"too few to hold one out and train on the rest; {remedy}")
    n_eval = max(1, round(eval_share * len(pieces)))
    return Corpus(name, list(pieces[n_eval:]), list(pieces[:n_eval]))


PIECE_CHARS = 1000  # held-out pieces come from the whole corpus, not only its end


def _chunk(text: str, size: int = PIECE_CHARS) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size) if text[i:i + size].strip()]


def domain_corpus(name: str, n_chars: int = 200_000, eval_share: float = 0.1,
                  seed: int = 0) -> Corpus:
    """One synthetic-domain corpus: ``wiki`` (encyclopedia prose), ``code`` (Python
    stdlib source) or ``facts`` (templated geography sentences), cut into ~1000-char
    pieces so that held-out pieces come from the whole domain."""
    if name == "wiki":
        pieces = [c for _, body in wikipedia_articles() for c in _chunk(body, 1000)]
    elif name == "code":
        pieces = [c for src in python_source_texts(max_files=200, seed=seed)
                  for c in _chunk(src, 1000)]
    elif name == "facts":
        from continual.streams.knowledge import RELATIONS, real_facts, render

        rng = random.Random(seed)
        sents = [render(f, i) for f in real_facts()
                 for i in range(len(RELATIONS[f.relation].sentences))]
        rng.shuffle(sents)
        pieces = _chunk(" ".join(sents), 1000)
    else:
        raise ConfigError(f"unknown domain {name!r}; choose from {DOMAINS}")
    return _split_chars(name, pieces, n_chars, eval_share, seed)


def wikipedia_topic_corpora(n_groups: int = 3, eval_share: float = 0.1,
                            seed: int = 0) -> list[Corpus]:
    """The Wikipedia sample grouped into ``n_groups`` topics (TF-IDF + k-means on articles),
    each group one corpus named ``wiki_topic<k>``; groups ordered by size, largest first."""
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    arts = wikipedia_articles()
    if n_groups < 1 or n_groups > len(arts) // 2:
        raise ConfigError(f"n_groups must be in 1..{len(arts) // 2}, got {n_groups}")
    feats = TfidfVectorizer(max_features=5000, stop_words="english").fit_transform(
        [body for _, body in arts])
    labels = KMeans(n_clusters=n_groups, n_init=10, random_state=seed).fit_predict(feats)
    groups = [[body for (_, body), lab in zip(arts, labels) if lab == g] for g in range(n_groups)]
    groups.sort(key=len, reverse=True)
    out = []
    for g, bodies in enumerate(groups):
        pieces = [c for b in bodies for c in _chunk(b, 1000)]
        out.append(_split_chars(f"wiki_topic{g}", pieces, sum(map(len, pieces)), eval_share, seed))
    return out


def own_corpus(source: CorpusSource, eval_share: float = 0.1, seed: int = 0) -> Corpus:
    """A user's corpus (``continual.streams.text_sources``): its held-out file's documents when
    it has one; otherwise its documents cut into pieces of ``PIECE_CHARS`` characters, shuffled
    by ``seed`` and ``eval_share`` of them held out, as for the built-in corpora."""
    docs = source.train.read()
    if source.eval is not None:
        return Corpus(source.name, docs, source.eval.read())
    pieces = [c for d in docs for c in _chunk(d)]
    random.Random(seed).shuffle(pieces)
    return hold_out(source.name, pieces, eval_share,
                    "give more text or a held-out file of its own: {train: ..., eval: ...}")


# ---------------------------------------------------------------- tokens

def pack_texts(tokenizer, texts: Sequence[str], seq_len: int) -> torch.Tensor:
    """Concatenate texts (each followed by EOS) and cut into (N, seq_len) token blocks;
    the remainder shorter than a block is dropped."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids: list[int] = []
    for t in texts:
        ids.extend(tokenizer(t, add_special_tokens=False)["input_ids"] + eos)
    n = len(ids) // seq_len
    if n == 0:
        raise ConfigError(f"{len(ids)} tokens do not fill one block of seq_len={seq_len}; "
                          "give more text or a shorter seq_len")
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def pack_documents(tokenizer, docs: Sequence[str],
                   seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack whole documents (EOS after each) into rows of seq_len tokens without splitting
    one (a longer document is truncated); returns (input_ids, labels), both (N, seq_len),
    labels -100 on the right padding."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows: list[list[int]] = [[]]
    for d in docs:
        ids = (tokenizer(d, add_special_tokens=False)["input_ids"] + eos)[:seq_len]
        if len(rows[-1]) + len(ids) > seq_len:
            rows.append([])
        rows[-1].extend(ids)
    rows = [r for r in rows if r]
    x = torch.full((len(rows), seq_len), pad, dtype=torch.long)
    y = torch.full((len(rows), seq_len), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, :len(r)] = torch.tensor(r)
        y[i, :len(r)] = torch.tensor(r)
    return x, y


@dataclass
class CorpusStream:
    """Corpora in sequence as tasks of ``steps_per_task`` steps of (batch_size, seq_len) blocks.

    ``replay_share`` of each batch's rows (rounded) come from earlier corpora's training
    blocks, drawn uniformly from their union; task 0 has no replay. Deterministic per seed.
    """

    corpora: list[Corpus]
    tokenizer: object
    seq_len: int = 128
    batch_size: int = 16
    steps_per_task: int | Sequence[int] = 200
    replay_share: float = 0.0
    seed: int = 0
    _train: list[torch.Tensor] = field(default_factory=list, init=False, repr=False)
    _eval: list[torch.Tensor] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.replay_share < 1.0:
            raise ConfigError(f"replay_share must be in [0, 1), got {self.replay_share}")
        if len(self.corpora) < 1:
            raise ConfigError("a corpus stream needs at least one corpus")

    @property
    def n_tasks(self) -> int:
        return len(self.corpora)

    @property
    def task_steps(self) -> list[int]:
        s = self.steps_per_task
        return [int(s)] * self.n_tasks if isinstance(s, int) else [int(v) for v in s]

    def _ensure_tokens(self) -> None:
        if not self._train:
            for c in self.corpora:
                for blocks, texts, part, remedy in (
                        (self._train, c.train_texts, "training", ""),
                        (self._eval, c.eval_texts, "held-out", " (or a larger eval_fraction)")):
                    try:
                        blocks.append(pack_texts(self.tokenizer, texts, self.seq_len))
                    except ConfigError as e:
                        raise ConfigError(f"corpus {c.name!r}, {part} text: {e}{remedy}") from None

    def eval_blocks(self, k: int) -> torch.Tensor:
        """Held-out blocks of corpus k: (N_k, seq_len)."""
        self._ensure_tokens()
        return self._eval[k]

    def train_blocks(self, k: int) -> torch.Tensor:
        self._ensure_tokens()
        return self._train[k]

    def n_replay(self, k: int) -> int:
        """Rows of each task-k batch drawn from earlier corpora."""
        return 0 if k == 0 else round(self.replay_share * self.batch_size)

    def batches(self, k: int) -> Iterator[Batch]:
        """Task k's batches; x = y = token blocks (B, seq_len); Batch.task is None and
        ``true_task`` (B,) names the corpus each row came from (bookkeeping only)."""
        self._ensure_tokens()
        gen = torch.Generator().manual_seed(self.seed * 1000 + k)
        cur = self._train[k]
        past = torch.cat(self._train[:k]) if k else cur[:0]
        past_task = torch.cat([torch.full((len(b),), j) for j, b in enumerate(self._train[:k])]) \
            if k else torch.zeros(0, dtype=torch.long)
        n_rep = self.n_replay(k)
        n_new = self.batch_size - n_rep
        order = torch.randperm(len(cur), generator=gen)
        pos = 0
        start = sum(self.task_steps[:k])
        for i in range(self.task_steps[k]):
            if pos + n_new > len(order):
                order, pos = torch.randperm(len(cur), generator=gen), 0
            rows, source = [cur[order[pos:pos + n_new]]], [torch.full((n_new,), k)]
            pos += n_new
            if n_rep:
                pick = torch.randint(len(past), (n_rep,), generator=gen)
                rows.append(past[pick])
                source.append(past_task[pick])
            x = torch.cat(rows)
            yield Batch(x=x, y=x, step=start + i, true_task=torch.cat(source))
