"""Secrets from the environment or from files, and files that hold secrets.

A secret given on the command line is in every process listing (``ps``, ``/proc/PID/cmdline``) and often in
shell history; one in the environment is readable by the same user and root only; one in a file is
readable by whoever the file's mode allows. So each secret maskwatch takes (the admin token, the database
URL, the broker password) can come from ``NAME`` or from a file named by ``NAME_FILE`` (as systemd's
``LoadCredential=`` or Docker secrets provide), and the secrets maskwatch makes are written with mode 600.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["env_secret", "write_secret"]


def env_secret(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """``$NAME``, else the content of the file ``$NAME_FILE`` (surrounding whitespace removed), else None.
    ValueError when the file cannot be read (the message names the variable, not the secret)."""
    env = os.environ if environ is None else environ
    value = env.get(name)
    if value:
        return value
    path = env.get(f"{name}_FILE")
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"${name}_FILE: cannot read {path} ({exc.strerror or exc})") from exc
    return text or None


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (mode 600 from the start: the file is never
    readable by others, not even for a moment), replacing what was there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
