"""Run files honour the umask, as any file the process creates does: collaborators on a shared
file system (a Slurm sweep's) can read summary.json, error.txt and checkpoints when the umask
lets them, and nobody else can when it does not."""

import os
import stat

import pytest

from continual import streams
from continual.checkpoint import save_checkpoint
from continual.config import CheckpointConfig
from continual.models import build_model
from continual.records import write_atomic
from continual.runner import Runner
from continual.strategies.naive import Naive


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after)."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_an_atomically_written_file_has_the_umasks_permissions(tmp_path, umask, mask, expected):
    umask(mask)
    write_atomic(tmp_path / "error.txt", b"boom\n")
    assert _mode(tmp_path / "error.txt") == expected
    assert [p.name for p in tmp_path.iterdir()] == ["error.txt"]  # no temporary file left behind


def test_a_checkpoint_has_the_umasks_permissions(tmp_path, umask):
    umask(0o002)
    path = save_checkpoint(tmp_path / "checkpoints", 1, {"step": 1})
    assert _mode(path) == 0o664


def test_every_file_of_a_run_is_group_readable_under_umask_022(tmp_path, umask):
    umask(0o022)
    stream = streams.class_incremental("digits", n_tasks=2, batch_size=10, train_per_class=5, test_per_class=3)
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=8)
    Runner(stream, Naive(model, lr=0.1), out_dir=str(tmp_path), checkpoint=CheckpointConfig(min_interval_s=0)).run()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"summary.json", "scores.csv", "metrics.jsonl"} <= {p.name for p in files}
    assert any(p.parent.name == "checkpoints" for p in files)
    assert {p.name: oct(_mode(p)) for p in files} == {p.name: oct(0o644) for p in files}
