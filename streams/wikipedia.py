"""The offline Wikipedia sample (gensim's 103 articles): plain text and sentences, shared by the
corpus stream (the ``wiki`` domain, topics) and the knowledge stream (filler sentences)."""

from __future__ import annotations

import functools
import re

WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def clean_wikitext(text: str) -> str:
    """Plain paragraphs from gensim-filtered wikitext (headers, lists, tables dropped)."""
    from gensim.corpora.wikicorpus import filter_wiki

    text = filter_wiki(text).replace("'''", "").replace("''", "")
    keep = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if len(line) < 80 or line[0] in "=*#|{!:;" or line.startswith("Category"):
            continue
        keep.append(line)
    return "\n".join(keep)


@functools.lru_cache(maxsize=1)
def wikipedia_articles(min_chars: int = 1000) -> tuple[tuple[str, str], ...]:
    """(title, plain text) of the gensim Wikipedia sample's articles (redirects dropped)."""
    import bz2
    import logging

    logging.getLogger("gensim").setLevel(logging.WARNING)  # it logs every dictionary it builds
    from gensim.corpora.wikicorpus import extract_pages
    from gensim.test.utils import datapath

    out = []
    with bz2.open(datapath(WIKI_FILE)) as fh:
        for title, text, _ in extract_pages(fh):
            if text.lstrip().upper().startswith("#REDIRECT"):
                continue
            body = clean_wikitext(text)
            if len(body) >= min_chars:
                out.append((title, body))
    return tuple(out)


_SENT_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def split_sentences(text: str) -> list[str]:
    """Split plain text into sentences at '.', '!' or '?' followed by a capital letter."""
    return [s.strip() for para in text.splitlines() for s in _SENT_END.split(para) if s.strip()]


@functools.lru_cache(maxsize=1)
def wikipedia_sentences(min_words: int = 6, max_words: int = 40) -> tuple[str, ...]:
    """Sentences of the Wikipedia sample with min_words..max_words words, in file order."""
    out = []
    for _, body in wikipedia_articles():
        for s in split_sentences(body):
            if min_words <= len(s.split()) <= max_words and s[-1] in ".!?":
                out.append(s)
    return tuple(out)
