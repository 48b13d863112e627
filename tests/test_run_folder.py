"""The run folder as one concept (continual.run_folder): one run at a time, leftovers cleaned,
earlier results kept on a restart, and a folder that says what it holds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _cli import run_continual

from continual.run_folder import LOCK_FILE, RunFolder
from continual.types import ConfigError


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_folder_in_use_by_a_live_process_is_refused(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        (tmp_path / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": other.pid,
                                                      "since": "2026-12-08 01:00:00"}))
        with pytest.raises(ConfigError, match=f"in use by process {other.pid} on .* since 2026-12-08 01:00:00"):
            RunFolder(tmp_path).lock()
    finally:
        other.kill()
        other.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, capsys):
    import os
    import socket

    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid()}))
    folder = RunFolder(tmp_path)
    folder.lock()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert "taking over the lock" in capsys.readouterr().err
    folder.unlock()
    assert not (tmp_path / LOCK_FILE).exists()


def test_temporary_files_of_a_killed_write_are_removed_at_the_next_start(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    leftovers = [tmp_path / ".metrics.jsonl.1a2b3c.tmp", tmp_path / "checkpoints" / ".ckpt-000000010.pt.9f8e.tmp"]
    for p in leftovers:
        p.write_bytes(b"half")
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    removed = RunFolder(tmp_path).clean_temporaries()
    assert sorted(removed) == sorted(leftovers) and not any(p.exists() for p in leftovers)
    assert (tmp_path / "metrics.jsonl").exists()


def test_starting_over_moves_the_earlier_results_aside(tmp_path):
    for name in ("metrics.jsonl", "scores.csv", "summary.json", "error.txt", "report.md", "comparison.png"):
        (tmp_path / name).write_text(name)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt-000000010.pt").write_bytes(b"x")
    (tmp_path / ".hydra").mkdir()
    moved = RunFolder(tmp_path).move_aside()
    assert moved.parent == tmp_path / "previous"
    assert sorted(p.name for p in moved.iterdir()) == sorted(
        ["metrics.jsonl", "scores.csv", "summary.json", "error.txt", "report.md", "comparison.png", "checkpoints"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hydra", "previous"]
    assert RunFolder(tmp_path).move_aside() is None  # nothing left to move


def test_truncation_keeps_the_records_a_checkpoint_had_written(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("a\nb\nc\n")
    (tmp_path / "scores.csv").write_text("h\nr0\nr1\nr2\n")
    RunFolder(tmp_path).truncate(n_records=2, n_score_rows=1, n_details=0)
    assert (tmp_path / "metrics.jsonl").read_text() == "a\nb\n"
    assert (tmp_path / "scores.csv").read_text() == "h\nr0\n"


ARGS = ["stream=split_digits", "strategy=naive", "model.hidden=16", "log.console=false",
        "++stream.train_per_class=4", "++stream.test_per_class=3"]


@pytest.mark.slow
def test_a_refused_config_leaves_no_run_folder(tmp_path):
    r = run_continual(*ARGS, "strategy.lrr=0.1", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert r.returncode == 2 and "lrr" in r.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_finished_run_is_not_trained_again_and_resume_false_keeps_the_old_results(tmp_path):
    run = tmp_path / "run"
    (run).mkdir()
    (run / "error.txt").write_text("an earlier attempt failed\n")
    assert run_continual(*ARGS, f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0
    assert not (run / "error.txt").exists()  # the run succeeded: the old error no longer applies
    first = (run / "metrics.jsonl").read_bytes()
    again = run_continual(*ARGS, f"hydra.run.dir={run}", cwd=tmp_path)
    assert again.returncode == 0 and "holds a finished run" in again.stderr
    assert (run / "metrics.jsonl").read_bytes() == first
    over = run_continual(*ARGS, "resume=false", f"hydra.run.dir={run}", cwd=tmp_path)
    assert over.returncode == 0 and "moved to" in over.stderr
    (previous,) = (run / "previous").iterdir()
    assert (previous / "metrics.jsonl").read_bytes() == first and (run / "summary.json").exists()
