"""The run folder as one concept: every file a run writes, reads back on resume, cuts back, locks
and cleans up goes through ``RunFolder``; the runner and the command line ask it and never build
a path themselves.

What a folder holds (docs/configuration.md, "What a run writes"): ``metrics.jsonl`` and
``scores.csv`` (appended a line at a time), ``answers.jsonl`` (per-item results of streams that
report them), ``summary.json`` (written last: a folder with one holds a finished run),
``checkpoints/``, ``error.txt`` (why the last attempt failed; removed when a later one
succeeds), and while a run is in it, ``.continual.lock`` (who runs there).

- ``lock()``: one run at a time in a folder. The lock names the host, process and start time;
  a second run refuses with that, and a lock left by a killed process (same host, process gone)
  is taken over with a message.
- ``clean_temporaries()``: a process killed inside an atomic write leaves ``.<name>.*.tmp``
  behind; the next start removes them.
- ``move_aside()``: ``resume=false`` keeps the earlier results, in ``previous/<time>/``, instead
  of writing new records beside an old summary.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

from continual.errors import ConfigError

METRICS_FILE = "metrics.jsonl"
SCORES_FILE = "scores.csv"
SUMMARY_FILE = "summary.json"
DETAILS_FILE = "answers.jsonl"  # per-item eval results of streams that report them
ERROR_FILE = "error.txt"
LOCK_FILE = ".continual.lock"
CHECKPOINT_DIR = "checkpoints"
PREVIOUS_DIR = "previous"
#: what a run's results are: moved aside together by ``move_aside`` (with the report's figures);
#: the loggers' folders too, so that a new run's curves do not join the old run's
RESULT_FILES = (METRICS_FILE, SCORES_FILE, SUMMARY_FILE, DETAILS_FILE, ERROR_FILE, CHECKPOINT_DIR,
                "report.md", "report.csv", "report.html", "report.tex", "hparams.csv",
                "wandb", "wandb_run_id.txt", "tensorboard")
FIGURE_SUFFIXES = (".png", ".svg", ".pdf")
#: what Hydra writes into a run folder before the run starts
HYDRA_FILES = (".hydra", "continual.log")


class RunFolder:
    """One run's folder (``path``); ``checkpoints=False``: the run writes no checkpoints."""

    def __init__(self, path: str | os.PathLike, checkpoints: bool = True) -> None:
        self.path = Path(path)
        self.checkpoint_dir: Path | None = self.path / CHECKPOINT_DIR if checkpoints else None
        self._locked = False

    def file(self, name: str) -> Path:
        """The path of one of the folder's files (``METRICS_FILE``, ...)."""
        return self.path / name

    # ------------------------------------------------------------------ what is there
    def is_finished(self) -> bool:
        """A run finished here: ``summary.json`` was written (it is written last)."""
        return self.file(SUMMARY_FILE).is_file()

    def summary(self) -> dict[str, Any]:
        """The finished run's summary.json."""
        return json.loads(self.file(SUMMARY_FILE).read_text())

    def holds_only_hydra_files(self) -> bool:
        """Nothing but what Hydra wrote when the job started (``.hydra/``, the job's log)."""
        return self.path.is_dir() and all(p.name in HYDRA_FILES for p in self.path.iterdir())

    def remove(self) -> None:
        """Delete a folder that holds only Hydra's files (a refused config leaves no run folder)."""
        if self.holds_only_hydra_files():
            shutil.rmtree(self.path)

    # ------------------------------------------------------------------ the run's own files
    def start_details(self, append: bool) -> None:
        """A fresh run starts ``answers.jsonl`` empty; a resumed one keeps what it holds."""
        if not append:
            self.file(DETAILS_FILE).unlink(missing_ok=True)

    def append_details(self, details: list[dict[str, Any]], eval_point: int, kind: str, step: int) -> int:
        """Append a stream's per-item results of one eval point (e.g. every probe's generated
        answer) to ``answers.jsonl``, one JSON line each; returns the number of lines written."""
        with open(self.file(DETAILS_FILE), "a") as fh:
            fh.writelines(json.dumps({"eval_point": eval_point, "kind": kind, "step": step, **d}) + "\n"
                          for d in details)
        return len(details)

    def truncate(self, n_records: int, n_score_rows: int, n_details: int) -> None:
        """Cut the records back to what a checkpoint had written (a resumed run repeats the rest)."""
        _keep_lines(self.file(METRICS_FILE), n_records)
        _keep_lines(self.file(SCORES_FILE), 1 + n_score_rows)  # header + rows
        _keep_lines(self.file(DETAILS_FILE), n_details)

    def record_error(self, error: BaseException) -> None:
        """Why this attempt failed, with its traceback (``error.txt``)."""
        import traceback

        from continual.atomic import write_atomic

        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        write_atomic(self.file(ERROR_FILE), f"{type(error).__name__}: {error}\n\n{text}".encode())

    def clear_error(self) -> None:
        """The run succeeded: an earlier attempt's ``error.txt`` no longer describes the folder."""
        self.file(ERROR_FILE).unlink(missing_ok=True)

    # ------------------------------------------------------------------ starting over, cleaning up
    def move_aside(self) -> Path | None:
        """Move an earlier run's results into ``previous/<time>/`` (``resume=false``); returns
        where, or None when there was nothing to move."""
        present = [name for name in RESULT_FILES if self.file(name).exists()]
        present += sorted(p.name for p in self.path.glob("*") if p.suffix in FIGURE_SUFFIXES and p.is_file())
        if not present:
            return None
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        target = self.path / PREVIOUS_DIR / stamp
        n = 1
        while target.exists():
            n += 1
            target = self.path / PREVIOUS_DIR / f"{stamp}_{n}"
        target.mkdir(parents=True)
        for name in present:
            shutil.move(str(self.file(name)), str(target / name))
        return target

    def clean_temporaries(self) -> list[Path]:
        """Remove what a process killed inside an atomic write left (``.<name>.<hex>.tmp``)."""
        found = [p for folder in (self.path, self.checkpoint_dir) if folder is not None and folder.is_dir()
                 for p in folder.glob(".*.tmp") if p.is_file()]
        for p in found:
            p.unlink(missing_ok=True)
        return found

    # ------------------------------------------------------------------ one run at a time
    def lock(self) -> None:
        """Take the folder for this process, or refuse with who holds it (ConfigError); a lock
        whose process is gone (same host) is taken over with a message."""
        self.path.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.file(LOCK_FILE), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                holder = self._holder()
                if holder.get("host") == me["host"] and holder.get("pid") == me["pid"]:
                    self._locked = True  # this process already holds it (a job of an in-process sweep)
                    return
                if not self._stale(holder):
                    raise ConfigError(
                        f"run folder {self.path} is in use by process {holder.get('pid')} on "
                        f"{holder.get('host')} since {holder.get('since')}; wait for it to end or use "
                        "another folder (hydra.run.dir=...). If that process is gone, delete "
                        f"{self.file(LOCK_FILE)}") from None
                print(f"continual: taking over the lock of {self.path}: process {holder.get('pid')} "
                      "that held it is gone", file=sys.stderr)
                self.file(LOCK_FILE).unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self._locked = True
            return

    def unlock(self) -> None:
        if self._locked:
            self.file(LOCK_FILE).unlink(missing_ok=True)
            self._locked = False

    def _holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.file(LOCK_FILE).read_text())
        except (OSError, ValueError):
            return {}  # half-written by a process killed while taking it: stale

    @staticmethod
    def _stale(holder: dict[str, Any]) -> bool:
        """A lock is stale when it names no process, or a process of this host that is gone;
        one of another host (a shared file system) is trusted."""
        pid = holder.get("pid")
        if not isinstance(pid, int):
            return True
        if holder.get("host") != socket.gethostname():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, another user's
        return False


def _keep_lines(path: Path, n: int) -> None:
    """Keep the first n lines of a file (drop records written after the checkpoint)."""
    if not path.exists():
        return
    from continual.atomic import write_atomic

    lines = path.read_bytes().split(b"\n")
    kept = b"\n".join(lines[:n]) + (b"\n" if n else b"")
    write_atomic(path, kept)
