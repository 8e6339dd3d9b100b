"""`maskwatch serve` as a real process (bundled model): starts, serves, keeps its cameras and jobs across a restart,
and on SIGTERM ends open tracks and stores the last stats bucket before exiting 0."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("edgefirst.tracker", reason="tracking needs the video extra")

from conftest_service import ADMIN, wait_until

pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(config: Path, data: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "MASKWATCH_ADMIN_TOKEN": ADMIN, "MASKWATCH_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "maskwatch.cli", "serve", "--config", str(config), "--data-dir", str(data),
           "--port", str(port), "--no-demo"]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_serve_process_sigterm_flushes_and_cameras_resume(tmp_path):
    import httpx
    from fakes import make_video

    video = make_video(tmp_path / "walk.mp4", 200, fps=10, people=2)
    config = tmp_path / "serve.yaml"
    config.write_text(f"engine:\n  stats_interval: 3600\ncameras:\n  - name: walk\n    url: {video}\n"
                      f"    realtime: true\n    loop: true\n")  # fmt: skip
    data, port = tmp_path / "data", _port()
    base = f"http://127.0.0.1:{port}/api/v1"
    headers = {"Authorization": f"Bearer {ADMIN}"}
    proc = _start(config, data, port)
    try:
        def up():
            try:
                return httpx.get(f"{base}/cameras/walk", headers=headers, timeout=2).json().get("state") == "live"
            except Exception:
                return False

        assert wait_until(up, 90, 0.5), "service did not come up"
        db = data / "maskwatch.db"
        with sqlite3.connect(db) as conn:
            assert conn.execute("select count(*) from stats_buckets").fetchone()[0] == 0  # hourly buckets: none yet
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        with sqlite3.connect(db) as conn:
            frames = conn.execute("select sum(frames_analysed) from stats_buckets where camera='walk'").fetchone()[0]
        assert frames and frames > 0  # the last bucket was flushed and written at shutdown
    finally:
        if proc.poll() is None:
            proc.kill()
        output = proc.stdout.read() if proc.stdout else ""
    assert "Traceback" not in output, output
    # the camera lives in the database now: a start without it in the config resumes it
    config.write_text("engine:\n  stats_interval: 3600\n")
    proc = _start(config, data, port)
    try:
        assert wait_until(up, 90, 0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_jobs_survive_a_crash_of_the_process(tmp_path):
    """SIGKILL with a job running: after the restart its record says interrupted; a finished job is intact."""
    import httpx
    from fakes import make_video

    allowed = tmp_path / "allowed"
    allowed.mkdir()
    make_video(allowed / "short.mp4", 10, fps=10, people=2)
    make_video(allowed / "long.mp4", 3000, fps=10, people=1)
    config = tmp_path / "serve.yaml"
    config.write_text(f"jobs:\n  allowed_dirs: [{allowed}]\n  max_running: 2\n")
    data, port = tmp_path / "data", _port()
    base = f"http://127.0.0.1:{port}/api/v1"
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)

    def up():
        try:
            return client.get("/jobs").status_code == 200
        except httpx.HTTPError:
            return False

    proc = _start(config, data, port)
    try:
        assert wait_until(up, 90, 0.5), "service did not come up"
        done = client.post("/jobs", json={"path": "short.mp4"}).json()["id"]
        assert wait_until(lambda: client.get(f"/jobs/{done}").json()["state"] == "done", 60, 0.5)
        cut = client.post("/jobs", json={"path": "long.mp4"}).json()["id"]
        assert wait_until(lambda: client.get(f"/jobs/{cut}").json()["frames"] > 0, 60, 0.5)
        before = client.get(f"/jobs/{done}/events").json()
        time.sleep(1.5)  # a progress write (once a second)
        proc.kill()  # a crash: nothing runs at exit
        proc.wait(30)
        proc = _start(config, data, port)
        assert wait_until(up, 90, 0.5), "service did not come back"
        info = client.get(f"/jobs/{cut}").json()
        assert info["state"] == "interrupted" and 0 < info["frames"] < 3000, info
        assert client.get(f"/jobs/{done}").json()["state"] == "done"
        assert client.get(f"/jobs/{done}/events").json() == before
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
