"""A user's own text corpora (`stream=corpora stream.files=[...]`): one task per entry, read by
the reader of its kind, held out by a fraction or a file of its own, refused clearly."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
import types

import pytest
from _cli import run_continual

from continual.streams.text import CorpusTextStream
from continual.types import ConfigError

WORDS = "river stone cloud lamp market garden signal harbor winter paper engine orbit".split()


def prose(n_words: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words)) + "."


@pytest.fixture
def three_files(tmp_path, monkeypatch):
    """a.txt, b.txt, c.txt of about 3,000 characters each, in the working directory."""
    monkeypatch.chdir(tmp_path)
    for i, name in enumerate("abc"):
        (tmp_path / f"{name}.txt").write_text(prose(500, i))
    return ["a.txt", "b.txt", "c.txt"]


def corpora(files, **options):
    return CorpusTextStream(files=files, **options).corpora()


def test_each_file_is_a_corpus_named_by_its_stem_in_order(three_files):
    out = corpora(three_files, eval_fraction=0.3)
    assert [c.name for c in out] == ["a", "b", "c"]
    for c, path in zip(out, three_files):
        text = open(path).read()
        assert len(c.eval_texts) == 1 and len(c.train_texts) == 3  # 4 pieces of <= 1,000 chars, 0.3 held out
        assert sorted(c.train_texts + c.eval_texts) == sorted(text[i:i + 1000] for i in range(0, len(text), 1000))


def test_a_jsonl_field_gives_one_document_per_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = [{"id": i, "body": prose(40, i)} for i in range(6)]
    (tmp_path / "notes.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (tmp_path / "held.txt").write_text(prose(60, 9))
    [c] = corpora([{"train": "notes.jsonl:body", "eval": "held.txt"}])
    assert c.name == "notes"
    assert c.train_texts == [x["body"] for x in lines] and c.eval_texts == [prose(60, 9)]


def test_a_held_out_file_of_its_own_is_the_whole_eval_split(three_files):
    out = corpora([{"train": "a.txt", "eval": "b.txt", "name": "wiki"}, "c.txt"])
    assert [c.name for c in out] == ["wiki", "c"]
    assert out[0].train_texts == [open("a.txt").read()] and out[0].eval_texts == [open("b.txt").read()]


def test_a_folder_and_a_glob_read_their_files_sorted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wiki" / "sub").mkdir(parents=True)
    for name, seed in (("wiki/b.txt", 1), ("wiki/a.txt", 0), ("wiki/sub/c.txt", 2), ("wiki/skip.md", 3)):
        (tmp_path / name).write_text(prose(300, seed))
    from continual.streams.text_sources import parse_text_source

    assert parse_text_source("wiki").read() == [prose(300, s) for s in (0, 1, 2)]  # a.txt, b.txt, sub/c.txt
    assert parse_text_source("wiki/*.md").read() == [prose(300, 3)]
    assert [c.name for c in corpora(["wiki", {"train": "wiki/*.md", "name": "md"}])] == ["wiki", "md"]


def test_a_saved_dataset_is_read_through_datasets(tmp_path, monkeypatch):
    """The reader's plumbing, with a stand-in for the `datasets` package (not a dependency)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "state.json").write_text("{}")

    class Table(dict):
        column_names = property(lambda self: list(self))

    fake = types.SimpleNamespace(DatasetDict=type("DatasetDict", (dict,), {}),
                                 load_from_disk=lambda path: Table(text=[prose(50, 1), prose(50, 2)], n=[1, 2]))
    monkeypatch.setitem(sys.modules, "datasets", fake)
    from continual.streams.text_sources import parse_text_source

    assert parse_text_source("saved:text").read() == [prose(50, 1), prose(50, 2)]
    with pytest.raises(ConfigError, match=r"has no column 'body' \(it has \['text', 'n'\]\)"):
        parse_text_source("saved:body").read()


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="datasets is installed")
def test_a_dataset_without_the_datasets_package_names_the_install(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    with pytest.raises(ConfigError, match="pip install datasets"):
        corpora(["t.parquet:text"])


@pytest.mark.parametrize(("options", "message"), [
    ({"files": ["a.txt", "missing.txt"]}, "corpus file 'missing.txt' does not exist"),
    ({"files": "a.txt"}, "files must be a list of entries, one corpus each, got the single entry 'a.txt'"),
    ({"domains": "abc"}, "domains must be a list such as [wiki,code], got the string 'abc'"),
    ({"files": ["a.txt"], "domains": ["wiki"]}, "files and domains=['wiki'] both choose the corpora"),
    ({"files": ["a.txt"], "source": "wiki_topics"}, "files and source=wiki_topics both choose the corpora"),
    ({"files": ["a.txt", "sub/a.txt"]}, "two corpora are named 'a'"),
    ({"files": ["notes.jsonl"]}, "name the field that holds the text, e.g. 'notes.jsonl:text'"),
    ({"files": ["a.txt:text"]}, "a field (':text') is read only from .jsonl"),
    ({"files": [{"train": "a.txt", "evl": "b.txt"}]}, "has unknown key(s) ['evl']; it must have 'train'"),
    ({"files": ["a.txt"], "eval_fraction": 0.0}, "eval_fraction must be in (0, 1)"),
])
def test_a_wrong_entry_is_refused_when_the_stream_is_built(three_files, tmp_path, options, message):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("x")
    (tmp_path / "notes.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(ConfigError) as e:
        CorpusTextStream(**options)
    assert message in str(e.value)


@pytest.mark.parametrize(("content", "entry", "message"), [
    (" \n\n", "empty.txt", "entry 'empty.txt' holds no text (empty corpus)"),
    ('{"text": "one"}\n{"body": "two"}\n', "empty.jsonl:text", "empty.jsonl line 2 has no field 'text'"),
    (prose(100, 0), "empty.txt", "corpus 'empty' has 1 piece(s) of up to 1000 characters: too few to hold one out"),
])
def test_a_corpus_without_enough_text_is_refused_when_read(tmp_path, monkeypatch, content, entry, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / entry.split(":")[0]).write_text(content)
    with pytest.raises(ConfigError) as e:
        corpora([entry])
    assert message in str(e.value)


def test_a_held_out_split_too_short_for_one_block_is_refused_before_training(three_files, tiny, tmp_path):
    (tmp_path / "short.txt").write_text("Too short.")
    stream = CorpusTextStream(files=[{"train": "a.txt", "eval": "short.txt"}], seq_len=64)
    with pytest.raises(ConfigError, match=r"corpus 'a', held-out text: 11 tokens do not fill one block of seq_len=64"):
        stream.prepare(*tiny)


def test_the_hydra_syntax_of_the_docs_builds_the_corpora(three_files):
    from hydra import compose, initialize_config_module

    from continual.config import instantiate_checked, register_configs

    register_configs()
    with initialize_config_module(config_module="continual.conf", version_base="1.3"):
        cfg = compose("config", overrides=["stream=corpora", "stream.files=[{train:a.txt,eval:b.txt,name:wiki},c.txt]",
                                           "stream.eval_fraction=0.5"])
        bad = compose("config", overrides=["stream=corpora", "stream.domains=abc"])
    stream = instantiate_checked(cfg.stream, "stream", seed=0)
    assert [c.name for c in stream.corpora()] == ["wiki", "c"]
    with pytest.raises(ConfigError, match="got the string 'abc'"):
        instantiate_checked(bad.stream, "stream", seed=0)


SMALL = ["model=tiny_lm", "strategy=lm_vanilla", "stream.steps_per_task=4", "stream.batch_size=4",
         "stream.max_eval_blocks=4", "model.hidden_size=32", "log.console=false"]


@pytest.mark.slow
def test_three_own_files_through_the_cli_record_a_loss_per_stem(three_files, tmp_path):
    r = run_continual("stream=corpora", "stream.files=[a.txt,b.txt,c.txt]", *SMALL, f"hydra.run.dir={tmp_path / 'run'}",
                      cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    header, *rows = (tmp_path / "run" / "scores.csv").read_text().splitlines()
    assert header == "step,samples_seen,kind,loss/a,loss/b,loss/c"
    assert [row.split(",")[2] for row in rows] == ["init", "task_end", "task_end", "task_end"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["corpora"] == ["a", "b", "c"]


@pytest.mark.slow
def test_a_missing_file_is_refused_by_the_cli_before_any_work(three_files, tmp_path):
    r = run_continual("stream=corpora", "stream.files=[a.txt,nothere.txt]", *SMALL,
                      f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert r.returncode == 2
    assert "corpus file 'nothere.txt' does not exist" in r.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
