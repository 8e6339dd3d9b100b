"""Fixtures for the service tests (imported by ``tests/test_service*.py``): a real, throwaway PostgreSQL
server (Debian's binaries, started with initdb + pg_ctl on 127.0.0.1 and a free port, as the ``postgres``
user when the tests run as root), database URLs for SQLite and PostgreSQL, and engine events to store."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from maskwatch.core.events import LagStats, SourceStatus, StatsBucket, TrackEnded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PgServer:
    """A throwaway PostgreSQL cluster; ``url(db)`` for SQLAlchemy, ``stop()`` / ``start()`` for outages."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="mw-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.sock.mkdir()
        self.log = self.root / "server.log"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sock, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.sock} -F -c fsync=off -c synchronous_commit=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w", "-t", "30", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def create_db(self) -> str:
        import psycopg

        name = "mw_" + uuid.uuid4().hex[:10]
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:  # fmt: skip
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)")
    pytest.importorskip("psycopg", reason="psycopg 3 is needed for PostgreSQL (pip install 'psycopg[binary]')")
    server = PgServer(bindir)
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh database: a SQLite file, or a new database on the throwaway PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'maskwatch.db'}"
    return request.getfixturevalue("pg_server").create_db()


# -- events -------------------------------------------------------------------------------------------------

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def person(camera: str = "door", *, compliant: bool = True, at: datetime = T0, event_id: str | None = None,
           track_id: int = 1) -> TrackEnded:  # fmt: skip
    label = "with_mask" if compliant else "without_mask"
    p = 0.95
    return TrackEnded(
        id=event_id or uuid.uuid4().hex, source=camera, time=at, track_id=track_id, label=label, probability=p,
        probabilities={"with_mask": p if compliant else 1 - p, "without_mask": 1 - p if compliant else p},
        compliant=compliant, votes={label: 4}, n_frames=12, n_classified=4, first_frame=0, last_frame=11,
        first_timestamp=None, last_timestamp=None, first_seen=at - timedelta(seconds=3), last_seen=at,
        best_score=0.9, best_box=(10.0, 10.0, 50.0, 50.0),
    )  # fmt: skip


def bucket(camera: str = "door", *, start: datetime = T0, interval: float = 60.0, masked: int = 3,
           unmasked: int = 1, event_id: str | None = None, frames: int = 100, lag: float | None = 0.1,
           final: bool = False) -> StatsBucket:  # fmt: skip
    n = masked + unmasked
    return StatsBucket(
        id=event_id or uuid.uuid4().hex, source=camera, time=start + timedelta(seconds=interval), start=start,
        end=start + timedelta(seconds=interval), interval=interval,
        people={"with_mask": masked, "without_mask": unmasked}, n_people=n, compliant_people=masked,
        compliance=None if n == 0 else round(masked / n, 4), present_max=n, frames_analysed=frames,
        frames_dropped=2, faces_classified=n * 3, analysed_fps=frames / interval,
        lag=LagStats(p50=lag, p95=lag, max=lag), final=final,
    )  # fmt: skip


def status(camera: str = "door", state: str = "live", reason: str | None = None) -> SourceStatus:
    return SourceStatus(source=camera, state=state, kind="stream", reason=reason)  # type: ignore[arg-type]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


# -- a running service with fake models -----------------------------------------------------------------------

ADMIN = "mw_test_admin_token_0123456789"


class NoisyCamera:
    """A live camera stand-in: one textured square (a "face", noisy so that blurring shows) moving slowly;
    green = mask, red = no mask, switching every ``period`` frames. ``read`` paces frames at ``fps``."""

    def __init__(self, fps: float = 20.0, period: int = 40, unmasked: bool = False):
        import numpy as np

        self.fps, self.period, self.unmasked = fps, period, unmasked
        self.start = time.monotonic()
        self.index = 0
        self.rng = np.random.default_rng(0)

    def isOpened(self):
        return True

    def read(self):
        import cv2
        import numpy as np

        due = self.start + self.index / self.fps
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        i = self.index
        self.index += 1
        image = np.zeros((240, 320, 3), np.uint8)
        x = 20 + (i % self.period) * 3
        green = not self.unmasked and (i // self.period) % 2 == 0
        patch = self.rng.integers(60, 256, size=(80, 80, 3)).astype(np.uint8)
        patch[..., 0 if green else 1] //= 4
        patch[..., 2] //= 4
        image[60:140, x : x + 80] = patch
        return True, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)

    def grab(self):
        return True

    def get(self, prop):
        import cv2

        return self.fps if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        pass


def fake_cameras(**kinds):
    """A capture factory: ``rtsp://fake/NAME`` opens ``kinds[NAME]()``, or a NoisyCamera for other names."""
    from urllib.parse import urlsplit

    import cv2

    def factory(target):
        if isinstance(target, str) and target.startswith("rtsp://") and urlsplit(target).hostname == "fake":
            name = target.rsplit("/", 1)[1]
            return kinds[name]() if name in kinds else NoisyCamera()
        return cv2.VideoCapture(target)

    return factory


def service_settings(tmp_path: Path, db: str | None = None, **sections):
    from maskwatch.service.settings import load_settings

    overrides = {"server": {"data_dir": str(tmp_path / "data"), "db": db}, "demo": {"enabled": False},
                 "engine": {"stats_interval": 0.5, "stall_timeout": 2.0, "failed_after": 5.0},
                 "security": {"sources": {"hosts": ["fake"]}}}  # the fake cameras' host  # fmt: skip
    for key, value in sections.items():
        overrides[key] = {**overrides.get(key, {}), **value} if isinstance(value, dict) else value
    return load_settings(env={}, overrides=overrides)


@contextlib.contextmanager
def running_service(tmp_path: Path, *, db: str | None = None, cameras=None, fleet=None, **sections):
    """(TestClient, service) of an app on fake models and fake cameras, admin token :data:`ADMIN`; ``fleet``:
    a :class:`~maskwatch.service.core.FleetLink` (MQTT ingest)."""
    from fakes import fake_detector
    from fastapi.testclient import TestClient

    from maskwatch.service.app import create_app

    app = create_app(service_settings(tmp_path, db, **sections), detector=fake_detector(),
                     capture_factory=fake_cameras(**(cameras or {})), admin_token=ADMIN, fleet=fleet)  # fmt: skip
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN}"
        yield client, app.state.service


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}
