"""Real ``serve`` worker processes for the multi-process tests (``tests/serve_fake.py``: fake models and
cameras, the real service, uvicorn and signals), and database outages: PostgreSQL stopped, or a SQLite file
whose write lock another connection holds."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from conftest_service import ADMIN, wait_until

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    """One ``serve`` process with its own data dir and port, on a shared database."""

    def __init__(self, root: Path, name: str, db: str, config: Path) -> None:
        self.name, self.db, self.config = name, db, config
        self.data = root / name
        self.port = free_port()
        self.log = root / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: float = 60.0) -> None:
        cmd = [sys.executable, str(HERE / "serve_fake.py"), "--config", str(self.config), "--data-dir",
               str(self.data), "--db", self.db, "--port", str(self.port)]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
        assert wait_until(self.healthy, wait, 0.3), f"{self.name} did not start: {self.log.read_text()[-3000:]}"

    def healthy(self) -> bool:
        import httpx

        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str) -> Any:
        import httpx

        r = httpx.get(f"http://127.0.0.1:{self.port}/api/v1{path}", headers={"Authorization": f"Bearer {ADMIN}"},
                      timeout=10)  # fmt: skip
        return r.json()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def stop(self) -> int:
        """SIGTERM, then the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def journal(self) -> list[dict[str, Any]]:
        """Every event this worker's engine reported and counted (``server.journal``), all its runs."""
        path = self.data / "journal.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def runs(self) -> set[str]:
        """The cameras this worker runs now (its own view)."""
        me = self.get("/readyz")["worker"]
        return {c["name"] for c in self.get("/cameras") if c.get("worker") == me and c["state"] == "live"}


@contextlib.contextmanager
def sqlite_locked(path: Path) -> Iterator[None]:
    """Another connection holds the SQLite file's write lock: every write waits (busy timeout) and fails."""
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    value = wait_until(predicate, timeout, 0.5)
    assert value, f"{what} (waited {timeout:g} s)"
    return value


def stored_person_ids(db: str) -> list[str]:
    from sqlalchemy import select

    from maskwatch.service.storage.db import open_db, session_factory
    from maskwatch.service.storage.models import PersonEvent

    engine = open_db(db)
    try:
        with session_factory(engine)() as s:
            return list(s.scalars(select(PersonEvent.event_id)))
    finally:
        engine.dispose()


def stored_stats_ids(db: str) -> list[str]:
    from sqlalchemy import select

    from maskwatch.service.storage.db import open_db, session_factory
    from maskwatch.service.storage.models import Ingested

    engine = open_db(db)
    try:
        with session_factory(engine)() as s:
            return list(s.scalars(select(Ingested.event_id)))
    finally:
        engine.dispose()


def now() -> float:
    return time.time()
