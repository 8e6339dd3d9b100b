"""Fleet fault tests on real processes: a real Mosquitto (password file, ACL), ``maskwatch serve --mqtt`` (the
control room, SQLite) and ``maskwatch agent`` (the bundled model and CenterFace on a short generated video,
played in real time). Each fault happens mid-stream; each test then asserts that the events the control room
stored are exactly the events the agent produced (its outbox journal), each once.

Slow (about 30 s each): ``pytest -m slow tests/test_fleet_faults.py``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("paho.mqtt")

from fakes import make_video

from maskwatch.fleet.broker import MosquittoBroker, find_mosquitto, free_port
from maskwatch.fleet.publisher import make_client
from maskwatch.fleet.topics import BrokerURL

pytestmark = pytest.mark.slow

USERS = {"agent": "agent-secret", "control": "control-secret", "viewer": "viewer-secret"}
ACL = {"viewer": ["topic read maskwatch/#"]}
STORED = ("track_ended", "stats")
CLI = [sys.executable, "-c", "from maskwatch.cli import main; main()"]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


class Fleet:
    """One broker, one control room, agents (``n1``, ``n2``, ...), all real processes, in ``root``."""

    def __init__(self, root: Path, frames: int = 120):
        self.root = root
        self.broker = MosquittoBroker(root / "broker", USERS, acl=ACL)
        self.broker.start()
        self.video = make_video(root / "door.mp4", frames, fps=10)
        self.serve_port = free_port()
        self.serve: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None  # the latest started
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.db = root / "control" / "control.db"
        (root / "agent.yaml").write_text(
            "journal: true\nengine:\n  stats_interval: 1.0\n  camera_defaults:\n    realtime: true\n"
        )

    def _log(self, name: str):
        return open(self.root / f"{name}.log", "ab")

    def start_serve(self) -> None:
        args = [
            *CLI,
            "serve",
            "--no-demo",
            "--port",
            str(self.serve_port),
            "--data-dir",
            str(self.root / "control"),
            "--db",
            f"sqlite:///{self.db}",
            "--mqtt",
            self.broker.url("control"),
            "--mqtt-id",
            "control-room",
        ]
        log = self._log("serve")
        token = "mw_fleet_faults_" + "0123456789abcdef" * 2  # a preset admin token must be strong
        self.serve = subprocess.Popen(args, stdout=log, stderr=log, env={**os.environ, "MASKWATCH_ADMIN_TOKEN": token})
        assert wait_until(lambda: (self.root / "control" / "fleet.json").exists(), 60), self.logs("serve")

    def start_agent(self, node: str = "n1") -> None:
        args = [
            *CLI,
            "agent",
            "--config",
            str(self.root / "agent.yaml"),
            "--broker",
            self.broker.url("agent"),
            "--node",
            node,
            "--camera",
            f"door={self.video}",
            "--data-dir",
            str(self.root / f"agent-{node}"),
        ]
        log = self._log(f"agent-{node}")
        self.agent = self.agents[node] = subprocess.Popen(args, stdout=log, stderr=log)

    def logs(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def produced(self) -> list[str]:
        keys = []
        for path in sorted(self.root.glob("agent-*/outbox.db")):
            with sqlite3.connect(path) as db:
                keys += [k for (k,) in db.execute("SELECT key FROM journal")]
        return [k.split(":", 1)[1] for k in keys if k.split(":", 1)[0] in STORED]

    def stored(self) -> list[str]:
        if not self.db.exists():
            return []
        try:
            with sqlite3.connect(self.db, timeout=5) as db:
                rows = db.execute("SELECT event_id FROM ingested UNION ALL SELECT event_id FROM events").fetchall()
        except sqlite3.OperationalError:
            return []
        return [r[0] for r in rows]

    def fleet_state(self) -> dict:
        try:
            return json.loads((self.root / "control" / "fleet.json").read_text())
        except (OSError, ValueError):
            return {}

    def finish(self, timeout: float = 90) -> None:
        """Wait for the agents to exit (every event acknowledged), then for the control room to store it all;
        assert exactly once."""
        assert self.agents
        for node, proc in self.agents.items():
            assert proc.wait(timeout) == 0, self.logs(f"agent-{node}")
        produced = self.produced()
        assert len(produced) >= 5 * len(self.agents), self.logs("agent-n1")
        wait_until(lambda: set(self.stored()) >= set(produced), 30)
        stored = self.stored()
        assert len(stored) == len(set(stored))
        assert sorted(stored) == sorted(produced), (
            f"missing {set(produced) - set(stored)}; extra {set(stored) - set(produced)}"
        )

    def close(self) -> None:
        for proc in (*self.agents.values(), self.serve):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        self.broker.stop()


@pytest.fixture
def fleet(tmp_path):
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto mosquitto-clients; scripts/setup.sh does)")
    f = Fleet(tmp_path)
    yield f
    f.close()


def _streaming(fleet: Fleet, n: int = 2) -> None:
    assert wait_until(lambda: len(fleet.stored()) >= n, 60), fleet.logs("agent-n1") + fleet.logs("serve")


def test_broker_stopped_and_restarted_while_two_agents_stream(fleet):
    fleet.start_serve()
    fleet.start_agent("n1")
    fleet.start_agent("n2")
    _streaming(fleet, 3)
    port = fleet.broker.port
    fleet.broker.stop()
    time.sleep(10)  # the agents keep analysing and queue in their outboxes
    assert all(proc.poll() is None for proc in fleet.agents.values())
    fleet.broker.port = port
    fleet.broker.start()
    fleet.finish()


def test_control_room_killed_and_restarted(fleet):
    fleet.start_serve()
    fleet.start_agent()
    _streaming(fleet)
    assert fleet.serve is not None
    fleet.serve.send_signal(signal.SIGKILL)
    fleet.serve.wait()
    time.sleep(4)  # the broker queues for the control room's persistent session
    (fleet.root / "control" / "fleet.json").unlink()
    fleet.start_serve()
    fleet.finish()


def test_agent_killed_and_restarted_outbox_resumes(fleet):
    fleet.start_serve()
    fleet.start_agent()
    _streaming(fleet)
    assert fleet.agent is not None
    fleet.agent.send_signal(signal.SIGKILL)
    fleet.agent.wait()
    before = len(fleet.produced())
    fleet.start_agent()  # same data dir: the outbox resumes, then the video is analysed again (new events)
    fleet.finish()
    assert len(fleet.produced()) > before  # both runs' events, each stored once


def test_network_cut_then_garbage_and_unauthorised_publishes(fleet):
    fleet.start_serve()
    fleet.start_agent()
    _streaming(fleet)
    fleet.broker.pause()  # SIGSTOP: connections stay open, nothing is answered
    time.sleep(12)
    assert fleet.agent is not None and fleet.agent.poll() is None
    fleet.broker.resume()
    url = BrokerURL.parse(fleet.broker.url("agent"))
    bad = make_client(url, "garbage-sender")
    bad.connect("127.0.0.1", fleet.broker.port)
    bad.loop_start()
    for payload in (b"\x00\xffgarbage", b'{"schema": "maskwatch.event/1", "id": "x", "type": "st', b"{}", b"[]"):
        bad.publish("maskwatch/n1/door/stats", payload, qos=1).wait_for_publish(5)
    bad.publish("maskwatch/n1/door/stats", b"{" + b" " * 300_000 + b"}", qos=1).wait_for_publish(5)
    bad.disconnect()
    bad.loop_stop()
    viewer = make_client(BrokerURL.parse(fleet.broker.url("viewer")), "viewer-sender")  # read-only by ACL
    viewer.connect("127.0.0.1", fleet.broker.port)
    viewer.loop_start()
    viewer.publish("maskwatch/n1/door/stats", b"{}", qos=1).wait_for_publish(5)
    viewer.disconnect()
    viewer.loop_stop()
    fleet.finish()
    state = wait_until(lambda: (s := fleet.fleet_state()) and s["rejected"]["json"] >= 3 and s, 10)
    assert state["rejected"]["json"] == 3 and state["rejected"]["schema"] == 1 and state["rejected"]["oversized"] == 1
    assert state["nodes"]["n1"]["state"] == "offline" and "door" in state["nodes"]["n1"]["cameras"]
