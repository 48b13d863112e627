"""The vector store's file format: a checked header, then an ``.npz`` payload (no pickles).

Header: magic ``CVSTORE\\0``, format version (uint32), payload length (uint64) and the
sha256 of the payload. Payload: named arrays (columns, vectors, raw inputs as bytes, the
index's own arrays) and ``meta``, a JSON record (configuration, clock, counters,
generator state) stored as bytes. ``decode`` checks the whole file (length and sha256)
before anything is parsed, so a truncated or altered file never yields a half-built store.
What the arrays and the record hold is the store's business (``VectorStore.to_bytes``).
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
from typing import Any

import numpy as np

from continual.types import ConfigError

__all__ = ["FORMAT_VERSION", "StoreFileError", "decode", "encode"]

FORMAT_VERSION = 1
_MAGIC = b"CVSTORE\x00"
_HEADER = struct.Struct("<8sIQ32s")  # magic, format version, payload length, sha256(payload)
#: what a damaged payload raises while it is parsed or rebuilt
DAMAGED = (KeyError, ValueError, TypeError, RuntimeError, OSError, zipfile.BadZipFile)


class StoreFileError(ConfigError):
    """A saved store that cannot be read back: truncated, altered, or another format."""


def encode(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """The file's bytes for a JSON-able ``meta`` record and named arrays (kept in order)."""
    arrays = {**arrays, "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).digest()
    return _HEADER.pack(_MAGIC, FORMAT_VERSION, len(payload), digest) + payload


def decode(data: bytes, source: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays) of a file's bytes; StoreFileError naming ``source`` if damaged."""
    if len(data) < _HEADER.size:
        raise StoreFileError(
            f"{source}: {len(data)} bytes is too short for a VectorStore file (truncated?)"
        )
    magic, version, length, digest = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise StoreFileError(f"{source} is not a VectorStore file (bad magic bytes)")
    if version != FORMAT_VERSION:
        raise StoreFileError(
            f"{source} has format version {version}; this code reads version {FORMAT_VERSION}"
        )
    payload = memoryview(data)[_HEADER.size :]
    if len(payload) != length:
        raise StoreFileError(
            f"{source} is truncated or padded: header says {length} payload bytes, "
            f"found {len(payload)}"
        )
    if hashlib.sha256(payload).digest() != digest:
        raise StoreFileError(
            f"{source} failed its sha256 check: the data was altered or damaged"
        )
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        return json.loads(arrays.pop("meta").tobytes()), arrays
    except DAMAGED as err:
        raise StoreFileError(f"{source}: inconsistent VectorStore contents ({err})") from err
