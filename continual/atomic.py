"""Atomic file writes: a temporary file beside the target, fsync, rename - a crash never leaves a
half-written file behind, and a killed write leaves only a ``.<name>.<hex>.tmp`` that
``RunFolder.clean_temporaries`` removes."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def _create_temporary(folder: Path, name: str) -> tuple[int, str]:
    """A new file beside ``name`` in ``folder``, opened for writing, with the permissions the
    umask gives (``tempfile.mkstemp`` makes 0600 files: collaborators on a shared file system
    could not read the run, and ``continual report`` by another user would fail)."""
    while True:
        tmp = str(folder / f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


def write_atomic(path: str | os.PathLike, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync (unless told not to) and rename.

    Without fsync the file is still never half-written after a process crash (the rename
    is atomic), only after a power loss; files rewritten at every eval point skip it. The
    file gets the permissions of any file the process creates (0666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
