"""continual.testing.check_stream / check_logger: the built-in kinds pass, and each planted bug
fails exactly the check that names it."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _scripted import ScriptedLossStream

from continual import streams
from continual.streams.stream import Segment, Stream
from continual.testing import ContractViolation, check_logger, check_stream
from continual.types import EvalSet, Logger

ROOT = Path(__file__).resolve().parents[1]
ALL_PASS = {"declared": "passed", "segments": "passed", "batches": "passed", "deterministic": "passed",
            "resumable": "passed"}


def _failed(check, *args) -> tuple[set[str], str]:
    """The names of the failed checks in the ContractViolation that ``check(*args)`` raises, and its text."""
    with pytest.raises(ContractViolation) as info:
        check(*args)
    message = str(info.value)
    return set(re.findall(r"^\s+\[(\w+)\]", message, flags=re.M)), message


@pytest.fixture(scope="module")
def digits():
    return streams.class_incremental("digits", n_tasks=5, batch_size=10, train_per_class=10, test_per_class=5)


def _as(cls, stream, **changes):
    """``stream`` rebuilt as a ``cls`` (a subclass of Stream), with ``changes``."""
    fields = {f.name: getattr(stream, f.name) for f in dataclasses.fields(stream) if f.init}
    return cls(**{**fields, **changes})


# ---------------------------------------------------------------------- streams that pass
def test_a_class_incremental_stream_passes(digits):
    assert check_stream(digits) == {**ALL_PASS, "eval_sets_shape": "passed", "eval_sets": "skipped"}


def test_a_hidden_boundary_stream_passes(digits):
    hidden = dataclasses.replace(digits, boundaries="hidden")
    assert check_stream(hidden) == {**ALL_PASS, "eval_sets_shape": "passed", "eval_sets": "skipped"}


def test_a_task_incremental_stream_with_validation_passes(digits):
    shown = dataclasses.replace(digits, task_labels=True, val_fraction=0.2, batch_size=3, passes=2, blurry=0.2)
    assert check_stream(shown)["eval_sets_shape"] == "passed"


def test_a_self_scoring_stream_passes():
    assert check_stream(ScriptedLossStream()) == {**ALL_PASS, "eval_sets_shape": "skipped", "eval_sets": "passed"}


def test_a_long_segment_is_counted_through_a_resume_and_stays_cheap(digits):
    import time

    long = dataclasses.replace(digits, batch_size=1, passes=20)  # 400 steps a segment
    t = time.perf_counter()
    assert check_stream(long)["batches"] == "passed"
    assert time.perf_counter() - t < 1.0


# ---------------------------------------------------------------------- broken streams
class _NotAStream:
    name, batch_size, segments = "plain", 10, [Segment(0, 10, 0)]


def test_an_object_that_is_not_a_stream_fails_declared():
    failed, message = _failed(check_stream, _NotAStream())
    assert failed == {"declared"} and "not a continual.types.Stream" in message


def test_an_unprepared_stream_that_needs_a_model_fails_declared():
    stream = ScriptedLossStream()
    stream.segments = []
    failed, message = _failed(check_stream, stream)
    assert failed == {"declared"} and "prepare(model, tokenizer)" in message


def test_segments_with_a_gap_fail_segments(digits):
    stream = dataclasses.replace(digits)
    seg = stream.segments[2]
    stream.segments[2] = Segment(seg.start + 1, seg.end, seg.task)
    failed, message = _failed(check_stream, stream)
    assert failed == {"segments"} and "segments[2] starts at" in message


class _LeaksTaskIds(Stream):
    """Shows task ids in every batch although task_labels is False."""

    def batch(self, start, end, step=0):
        return dataclasses.replace(super().batch(start, end, step), task=self.true_task[start:end])


def test_task_ids_shown_without_task_labels_fail_batches(digits):
    failed, message = _failed(check_stream, _as(_LeaksTaskIds, digits))
    assert failed == {"batches"} and "task_labels is False" in message


class _OneBatchTooMany(Stream):
    """Repeats each segment's last sample as one more batch."""

    def batches(self, segment, first_step=0, start=None):
        step = first_step
        for b in super().batches(segment, first_step, start):
            yield b
            step = b.step + 1
        yield self.batch(segment.end - 1, segment.end, step)


def test_a_batch_more_than_segment_steps_fails_batches(digits):
    failed, message = _failed(check_stream, _as(_OneBatchTooMany, digits))
    assert failed == {"batches", "resumable"}  # a resumed segment has one batch too many, too
    assert "yielded 3+ batches" in message and "segment_steps" in message


class _NotDeterministic(Stream):
    """Noise from the global generator: a different batch every time."""

    def batch(self, start, end, step=0):
        b = super().batch(start, end, step)
        return dataclasses.replace(b, x=b.x + torch.randn(b.x.shape))


def test_batches_that_change_between_iterations_fail_deterministic(digits):
    failed, message = _failed(check_stream, _as(_NotDeterministic, digits))
    assert failed == {"deterministic"} and "batch.x differs" in message


class _IgnoresStart(Stream):
    def batches(self, segment, first_step=0, start=None):
        return super().batches(segment, first_step)


def test_batches_that_ignore_start_fail_resumable(digits):
    failed, message = _failed(check_stream, _as(_IgnoresStart, digits))
    assert failed == {"resumable"} and "start=" in message


class _ShortLabels(Stream):
    def eval_set(self, task, max_items=None, split="test"):
        x, y = super().eval_set(task, max_items, split)
        return x, y[:-1]


def test_an_eval_set_with_fewer_labels_than_inputs_fails_eval_sets_shape(digits):
    failed, message = _failed(check_stream, _as(_ShortLabels, digits))
    assert failed == {"eval_sets_shape"} and "eval_set(0" in message


class _ScoresEverySet(ScriptedLossStream):
    """A held-out set without a task, and task_scores that returns the whole row."""

    def __init__(self):
        super().__init__()
        self.eval_sets = [*self.eval_sets, EvalSet("loss/heldout", "loss", False)]

    def task_scores(self, scores):
        return list(scores)


def test_task_scores_that_are_not_one_per_task_fail_eval_sets():
    failed, message = _failed(check_stream, _ScoresEverySet())
    assert failed == {"eval_sets"} and "one score per task (2)" in message


# ---------------------------------------------------------------------- loggers
class _Tally(Logger):
    """Counts eval records; writes the count at the end."""

    def __init__(self, out_dir):
        self.path, self.evals = Path(out_dir) / "evals.txt", 0

    def log(self, record):
        self.evals += record["type"] == "eval"

    def finish(self, summary):
        self.path.write_text(f"{self.evals} {summary['acc']}\n")


def test_a_conforming_logger_passes_and_gets_a_fresh_folder_when_it_takes_out_dir():
    folders = []

    def factory(out_dir):
        folders.append(out_dir)
        return _Tally(out_dir)

    assert check_logger(factory) == {"declared": "passed", "run": "passed", "records_unchanged": "passed",
                                     "abort": "passed"}
    assert len(set(folders)) == 2  # one run that ends, one that fails
    assert check_logger(Logger)["run"] == "passed"  # the protocol's no-ops, built with no argument


class _NotALogger:
    def log(self, record):
        pass


def test_an_object_that_is_not_a_logger_fails_declared():
    failed, message = _failed(check_logger, _NotALogger)
    assert failed == {"declared"} and "class _NotALogger(Logger)" in message


class _ReadsAMissingField(Logger):
    def progress(self, state):
        print(state.samples_per_second)


def test_a_logger_that_raises_fails_run():
    failed, message = _failed(check_logger, _ReadsAMissingField)
    assert failed == {"run"} and "progress() raised AttributeError" in message


class _PopsAKey(Logger):
    def log(self, record):
        record.pop("samples_seen")


def test_a_logger_that_pops_a_key_fails_records_unchanged():
    failed, message = _failed(check_logger, _PopsAKey)
    assert failed == {"records_unchanged"} and "removed ['samples_seen']" in message


class _ChangesLater(Logger):
    """Keeps the record it was given and overwrites its step at the end."""

    def log(self, record):
        self.last = record

    def finish(self, summary):
        self.last["step"] = -1


def test_a_logger_that_changes_a_kept_record_later_fails_records_unchanged():
    failed, message = _failed(check_logger, _ChangesLater)
    assert failed == {"records_unchanged"} and "after log() returned" in message


class _AbortRaises(Logger):
    def abort(self, error=None):
        raise RuntimeError("connection already closed")


def test_a_logger_whose_abort_raises_fails_abort():
    failed, message = _failed(check_logger, _AbortRaises)
    assert failed == {"abort"} and "connection already closed" in message


def test_skip_leaves_checks_out_and_rejects_unknown_names():
    assert check_logger(_AbortRaises, skip=("abort",))["abort"] == "skipped"
    with pytest.raises(ValueError, match="unknown checks"):
        check_stream(ScriptedLossStream(), skip=("nope",))


# ---------------------------------------------------------------------- docs, imports
def test_the_stream_and_logger_examples_in_plugins_md_run(capsys):
    from test_docs import fenced_blocks

    text = (ROOT / "docs" / "plugins.md").read_text()
    sections = text[text.index("## Your own stream"):text.index("## How names resolve")]
    blocks = [body for lang, body in fenced_blocks(sections) if lang == "python"]
    assert len(blocks) == 3
    for i, body in enumerate(blocks):
        exec(compile(body, f"docs/plugins.md, python block {i + 1}", "exec"), {"__name__": f"plugins_md_{i}"})
    printed = capsys.readouterr().out
    assert printed.count("'passed'") >= 3 and "'failed'" not in printed


@pytest.mark.slow  # a fresh interpreter imports torch
def test_the_kits_parts_import_before_testing_without_a_cycle():
    code = ("import continual.testing_streams as s; import continual.testing_loggers as g; "
            "import continual.testing as t; "
            "assert t.check_stream is s.check_stream and t.check_logger is g.check_logger")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_plugin_docs_stream_and_logger_examples_run_and_pass_the_kit(tmp_path, monkeypatch, capsys):
    import re

    text = (ROOT / "docs" / "plugins.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "check_stream" in b or "check_logger" in b]
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "docs/plugins.md", "exec"), {"__name__": "__main__"})
    printed = capsys.readouterr().out
    assert "'failed'" not in printed and printed.count("'declared': 'passed'") == len(blocks)
