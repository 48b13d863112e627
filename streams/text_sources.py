"""Reading a user's own data for the language-model streams: text corpora and fact files.

Text (``stream=corpora stream.files=[...]``): each entry of ``files`` names one corpus, read
by the reader of its kind (``READERS``) into a list of documents:

- ``a.txt``: a text file (UTF-8), one document.
- ``notes/``: a folder, every ``*.txt`` file under it (recursive), sorted by path, one
  document each.
- ``'notes/*.md'``: a glob (``**`` recursive), the files it matches, sorted, one document each.
- ``a.jsonl:text``: a JSON Lines file, the string field ``text`` of every line.
- ``saved:text``, ``a.parquet:text``, ``a.json:text``: a Hugging Face dataset saved with
  ``save_to_disk`` (its ``train`` split if it holds several) or local Parquet / JSON files,
  read through the ``datasets`` package offline (``pip install datasets``), column ``text``.

An entry is a string (the training text; the held-out text is a fraction of it) or a mapping
``{train: <entry>, eval: <entry>, name: <name>}`` (``eval`` and ``name`` optional). The
corpus's name (``loss/<name>`` in the records) is the file's stem, the folder's name, or for
a glob the last folder before its first wildcard, unless ``name`` is given.

Facts (``stream=knowledge stream.facts=f.jsonl``): one JSON object a line, either a fact
``{"subject", "relation", "object", "old_object"?, "phase"?}`` or a relation's template
``{"relation", "template", "sentences"?}`` (``read_fact_records``; what the knowledge stream
makes of them: ``continual.streams.knowledge``).

Every refusal names the entry (and line) and what to do. Paths are relative to the working
directory the command was started in.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from continual.types import ConfigError

DATASET_SUFFIXES = (".parquet", ".json")
# what ``save_to_disk`` writes: a Dataset (state.json, dataset_info.json) or a DatasetDict
DATASET_MARKERS = ("state.json", "dataset_info.json", "dataset_dict.json")
CORPUS_KEYS = ("train", "eval", "name")


# ---------------------------------------------------------------- text sources

@dataclass(frozen=True)
class TextSource:
    """One place to read text from: ``kind`` (a key of ``READERS``), its ``path`` (a file,
    folder or glob) and the ``field`` (column) read from structured files."""

    kind: str
    path: str
    field: str | None = None
    entry: str = ""  # as the user wrote it, for messages

    def read(self) -> list[str]:
        """The source's documents, in order; refuses a source with no text."""
        docs = READERS[self.kind](self)
        if not any(d.strip() for d in docs):
            raise ConfigError(f"corpus file entry {self.entry!r} holds no text (empty corpus); "
                              "give a file with some text in it")
        return docs

    def default_name(self) -> str:
        if self.kind == "glob":
            parts = Path(self.path).parts
            fixed = parts[:next(i for i, p in enumerate(parts) if glob.has_magic(p))]
            name = Path(*fixed).name if fixed else ""
            if not name:
                raise ConfigError(f"the glob {self.entry!r} has no folder to name its corpus after; "
                                  f"give it a name: {{train: '{self.entry}', name: mycorpus}}")
            return name
        path = Path(self.path)
        return path.name if path.is_dir() else path.stem


def _utf8(path: Path, entry: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"corpus file {str(path)!r} (entry {entry!r}) is not UTF-8 text ({e.reason} at byte "
                          f"{e.start}); convert it to UTF-8 or leave it out") from None


def read_text_file(source: TextSource) -> list[str]:
    """A text file: one document."""
    return [_utf8(Path(source.path), source.entry)]


def read_folder(source: TextSource) -> list[str]:
    """Every ``*.txt`` file under a folder (recursive), sorted by path: one document each."""
    files = sorted(p for p in Path(source.path).rglob("*.txt") if p.is_file())
    if not files:
        raise ConfigError(f"folder {source.path!r} holds no .txt file; for other files give a glob "
                          f"such as '{source.path.rstrip('/')}/*.md'")
    return [_utf8(p, source.entry) for p in files]


def read_glob(source: TextSource) -> list[str]:
    """The files a glob matches (``**`` recursive), sorted: one document each."""
    files = sorted(p for p in glob.glob(source.path, recursive=True) if os.path.isfile(p))
    if not files:
        raise ConfigError(f"the glob {source.path!r} matches no file (working directory {os.getcwd()}); "
                          "check the pattern")
    return [_utf8(Path(p), source.entry) for p in files]


def read_jsonl_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number from 1, object) for every non-blank line of a JSON Lines file; refuses a
    line that is not a JSON object, naming it."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path} line {n} is not valid JSON ({e.msg}); every line must be one "
                                  "JSON object") from None
            if not isinstance(obj, dict):
                raise ConfigError(f"{path} line {n} is a JSON {type(obj).__name__}, not an object "
                                  "({...}); every line must be one JSON object")
            yield n, obj


def read_jsonl_field(source: TextSource) -> list[str]:
    """The string field ``source.field`` of every line of a JSON Lines file: one document each."""
    docs = []
    for n, obj in read_jsonl_lines(source.path):
        if source.field not in obj:
            raise ConfigError(f"{source.path} line {n} has no field {source.field!r} (it has "
                              f"{sorted(obj)}); give every line that field or name another: "
                              f"'{source.path}:<field>'")
        value = obj[source.field]
        if not isinstance(value, str):
            raise ConfigError(f"{source.path} line {n}: field {source.field!r} is a "
                              f"{type(value).__name__}, expected a string of text")
        docs.append(value)
    return docs


def read_hf_dataset(source: TextSource) -> list[str]:
    """Column ``source.field`` of a ``save_to_disk`` folder (its ``train`` split when it holds
    several) or of local Parquet / JSON files, through ``datasets`` offline."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local files only: never reach the hub
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"reading {source.entry!r} needs the Hugging Face `datasets` package, which is not "
                          "installed: pip install datasets (or export the text to .jsonl and give "
                          f"'{Path(source.path).with_suffix('.jsonl')}:{source.field}')") from None
    if Path(source.path).is_dir():
        ds = datasets.load_from_disk(source.path)
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise ConfigError(f"the saved dataset {source.path!r} has splits {sorted(ds)} and no 'train'; "
                                  "save the split to read on its own (ds[split].save_to_disk(...))")
            ds = ds["train"]
    else:
        builder = "parquet" if source.path.endswith(".parquet") else "json"
        ds = datasets.load_dataset(builder, data_files=source.path, split="train")
    if source.field not in ds.column_names:
        raise ConfigError(f"the dataset {source.path!r} has no column {source.field!r} (it has "
                          f"{ds.column_names}); name one: '{source.path}:<column>'")
    docs = list(ds[source.field])
    bad = next((i for i, d in enumerate(docs) if not isinstance(d, str)), None)
    if bad is not None:
        raise ConfigError(f"the dataset {source.path!r}: row {bad} of column {source.field!r} is a "
                          f"{type(docs[bad]).__name__}, expected a string of text")
    return docs


READERS: dict[str, Callable[[TextSource], list[str]]] = {
    "text": read_text_file, "folder": read_folder, "glob": read_glob,
    "jsonl": read_jsonl_field, "datasets": read_hf_dataset,
}


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in DATASET_MARKERS)


def parse_text_source(entry: Any) -> TextSource:
    """The source an entry names (see the module docstring); refuses a missing file, a
    structured file without a field and a field on plain text."""
    if not isinstance(entry, str) or not entry.strip():
        raise ConfigError(f"a corpus file entry must be a path (a string), got {entry!r}")
    path, field = entry, None
    if not Path(entry).expanduser().exists() and ":" in entry:
        path, field = entry.rsplit(":", 1)
        if not field or "/" in field:
            path, field = entry, None
    path = os.path.expanduser(path)
    p = Path(path)
    if glob.has_magic(path) and not p.exists():
        kind = "glob"
    elif not p.exists():
        raise ConfigError(f"corpus file {path!r} does not exist (working directory {os.getcwd()}); "
                          "check the path")
    elif p.suffix == ".jsonl":
        kind = "jsonl"
    elif p.suffix in DATASET_SUFFIXES or _is_saved_dataset(p):
        kind = "datasets"
    else:
        kind = "folder" if p.is_dir() else "text"
    if kind in ("jsonl", "datasets") and field is None:
        raise ConfigError(f"{entry!r} is structured ({'JSON Lines' if kind == 'jsonl' else 'a dataset'}): name "
                          f"the field that holds the text, e.g. '{path}:text'")
    if kind not in ("jsonl", "datasets") and field is not None:
        raise ConfigError(f"{entry!r}: a field (':{field}') is read only from .jsonl, .json, .parquet files "
                          f"or a saved dataset, and {path!r} is {'a folder' if p.is_dir() else 'plain text'}")
    return TextSource(kind, path, field, entry)


@dataclass(frozen=True)
class CorpusSource:
    """One corpus of a user's own: its name, training source and optional held-out source."""

    name: str
    train: TextSource
    eval: TextSource | None = None


def parse_corpus_entry(entry: Any) -> CorpusSource:
    """A ``files`` entry: a source string, or ``{train, eval?, name?}``."""
    if isinstance(entry, Mapping):
        unknown = sorted(set(entry) - set(CORPUS_KEYS))
        if unknown or "train" not in entry:
            what = f"unknown key(s) {unknown}" if unknown else "no 'train'"
            raise ConfigError(f"corpus entry {dict(entry)} has {what}; it must have 'train' and may have 'eval' "
                              "and 'name', e.g. {train: a.txt, eval: a_eval.txt, name: wiki}")
        train = parse_text_source(entry["train"])
        held_out = parse_text_source(entry["eval"]) if entry.get("eval") is not None else None
        name = entry.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip() or "/" in name):
            raise ConfigError(f"corpus entry {dict(entry)}: name must be a non-empty string without '/', "
                              f"got {name!r}")
        return CorpusSource(name or train.default_name(), train, held_out)
    train = parse_text_source(entry)
    return CorpusSource(train.default_name(), train)


def parse_corpus_entries(entries: Sequence[Any]) -> list[CorpusSource]:
    """Every ``files`` entry, checked before any text is read; refuses a string where a list is
    wanted and two corpora of one name (their ``loss/<name>`` columns would collide)."""
    if isinstance(entries, (str, Mapping)):
        raise ConfigError(f"files must be a list of entries, one corpus each, got the single entry {entries!r}; "
                          "wrap it in a list: stream.files=[...]")
    out = [parse_corpus_entry(e) for e in entries]
    seen: dict[str, str] = {}
    for c in out:
        if c.name in seen:
            raise ConfigError(f"two corpora are named {c.name!r} ({seen[c.name]!r} and {c.train.entry!r}); "
                              "give one a name of its own: {train: ..., name: other}")
        seen[c.name] = c.train.entry
    return out


# ---------------------------------------------------------------- fact files

FactSource = str | Path | Sequence[Mapping[str, Any]]  # a JSON Lines path, or its lines as mappings
FACT_KEYS = ("subject", "relation", "object", "old_object", "phase")
TEMPLATE_KEYS = ("relation", "template", "sentences")


@dataclass(frozen=True)
class FactRecord:
    """One fact line: ``phase`` is the corpus D_phase that teaches it (0: none; None: not
    given). ``where`` names the line for messages."""

    subject: str
    relation: str
    object: str
    old_object: str | None
    phase: int | None
    where: str


@dataclass(frozen=True)
class TemplateRecord:
    """One template line: the relation's probe (``{subject}``, ending before the object) and
    its paraphrases (``{subject}`` and ``{object}``)."""

    relation: str
    probe: str
    sentences: tuple[str, ...]
    where: str


def _fact_lines(source: FactSource) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(source, (str, Path)):
        if not Path(source).is_file():
            raise ConfigError(f"facts file {str(source)!r} does not exist (working directory {os.getcwd()}); "
                              "check the path")
        for n, obj in read_jsonl_lines(source):
            yield f"{source} line {n}", obj
        return
    for i, obj in enumerate(source):
        if not isinstance(obj, Mapping):
            raise ConfigError(f"facts[{i}] is a {type(obj).__name__}; every fact is a mapping such as "
                              '{"subject": "France", "relation": "capital", "object": "Paris"}')
        yield f"facts[{i}]", dict(obj)


def _string(obj: dict[str, Any], key: str, where: str, required: bool = True) -> str | None:
    if key not in obj or obj[key] is None:
        if required:
            raise ConfigError(f"{where} has no field {key!r}; a fact line needs subject, relation and object, "
                              'e.g. {"subject": "France", "relation": "capital", "object": "Paris"}')
        return None
    value = obj[key]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return value.strip()


def _check_template(text: Any, where: str, key: str, with_object: bool) -> str:
    want = "{subject} and {object}" if with_object else "{subject} and no {object} (the probe ends before it)"
    if not isinstance(text, str):
        raise ConfigError(f"{where}: {key} must be a string with {want}, got {text!r}")
    try:
        text.format(subject="S", object="O") if with_object else text.format(subject="S")
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"{where}: {key} {text!r} must have {want} and no other {{...}} ({e!r})") from None
    if "{subject}" not in text or (with_object and "{object}" not in text):
        raise ConfigError(f"{where}: {key} {text!r} must have {want}")
    return text


def _template_record(obj: dict[str, Any], where: str) -> TemplateRecord:
    unknown = sorted(set(obj) - set(TEMPLATE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: a template line has no field(s) {unknown}; it takes {list(TEMPLATE_KEYS)}")
    relation = _string(obj, "relation", where)
    probe = _check_template(obj["template"], where, "template", with_object=False)
    sentences = obj.get("sentences") or []
    if not isinstance(sentences, list):
        raise ConfigError(f"{where}: sentences must be a list of templates, got {sentences!r}")
    return TemplateRecord(relation, probe,
                          tuple(_check_template(s, where, "a sentence", with_object=True) for s in sentences), where)


def _fact_record(obj: dict[str, Any], where: str) -> FactRecord:
    unknown = sorted(set(obj) - set(FACT_KEYS))
    if unknown:
        raise ConfigError(f"{where}: a fact line has no field(s) {unknown}; it takes {list(FACT_KEYS)} "
                          "(a template line: relation, template, sentences)")
    phase = obj.get("phase")
    if phase is not None and (isinstance(phase, bool) or not isinstance(phase, int) or phase < 0):
        raise ConfigError(f"{where}: field 'phase' must be an integer >= 0 (0: taught by no corpus, i: by "
                          f"corpus D_i), got {phase!r}")
    return FactRecord(_string(obj, "subject", where), _string(obj, "relation", where), _string(obj, "object", where),
                      _string(obj, "old_object", where, required=False), phase, where)


def read_fact_records(source: FactSource) -> tuple[list[FactRecord], dict[str, TemplateRecord]]:
    """Fact and template records from a JSON Lines file (or a list of the same mappings), in
    order; refuses a malformed line naming it and the field, two facts with one (relation,
    subject), two templates of one relation and a source with no fact."""
    facts: list[FactRecord] = []
    templates: dict[str, TemplateRecord] = {}
    first: dict[tuple[str, str], str] = {}
    for where, obj in _fact_lines(source):
        if "template" in obj:
            t = _template_record(obj, where)
            if t.relation in templates:
                raise ConfigError(f"{where}: relation {t.relation!r} already has a template "
                                  f"({templates[t.relation].where}); keep one")
            templates[t.relation] = t
            continue
        f = _fact_record(obj, where)
        key = (f.relation, f.subject)
        if key in first:
            raise ConfigError(f"{where}: {f.subject!r} already has a {f.relation!r} fact ({first[key]}); one "
                              "object per (subject, relation), so that a probe has one answer")
        first[key] = where
        facts.append(f)
    if not facts:
        named = str(source) if isinstance(source, (str, Path)) else "list"
        raise ConfigError(f"the facts {named} holds no fact; give one JSON object a line: "
                          '{"subject": "France", "relation": "capital", "object": "Paris"}')
    return facts, templates
