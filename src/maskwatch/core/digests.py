"""sha256 of a file: the one home for the content hashes that model files, exports, split lists and training
images are named and checked by."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

__all__ = ["file_sha256", "file_sha256_cached"]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of the file's bytes, read in chunks (a model file need not fit in memory twice)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def file_sha256_cached(path: str | os.PathLike[str]) -> str:
    """:func:`file_sha256`, hashed once per (path, mtime, size): every model load checks its file, and a
    changed file is hashed again."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return _digest_of(str(resolved), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=32)
def _digest_of(path: str, mtime_ns: int, size: int) -> str:
    return file_sha256(path)
