"""Fleet fault tests on real processes: a real Mosquitto (password file, ACL), ``maskwatch serve --mqtt`` (the
control room, SQLite) and ``maskwatch agent`` (the bundled model and CenterFace on a short generated video,
played in real time). Each fault happens mid-stream; each test then asserts that the events the control room
stored are exactly the events the agent produced (its outbox journal), each once.

Slow (about 30 s each): ``pytest -m slow tests/test_fleet_faults.py``.
"""

from __future__ import annotations

import contextlib
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

from conftest_service import wait_until
from fakes import make_video

from maskwatch.fleet.broker import MosquittoBroker, find_mosquitto, free_port
from maskwatch.fleet.publisher import make_client
from maskwatch.fleet.topics import BrokerURL

pytestmark = pytest.mark.slow

USERS = {"agent": "agent-secret", "control": "control-secret", "viewer": "viewer-secret"}
ACL = {"viewer": ["topic read maskwatch/#"]}
STORED = ("track_ended", "stats")
CLI = [sys.executable, "-c", "from maskwatch.cli import main; main()"]


#: the broker as docs/deploy.md configures it: persistence saved every 60 s, a node's MQTT user is its name
DOCS_USERS = {"control": "control-secret", "n1": "n1-secret", "n2": "n2-secret", "viewer": "viewer-secret"}
DOCS_ACL = {"control": ["topic readwrite maskwatch/#"], "viewer": ["topic read maskwatch/#"],
            "n1": [], "n2": []}  # fmt: skip
DOCS_PATTERNS = ["pattern write maskwatch/%u/#", "pattern read maskwatch/%u/cmd/#", "pattern read maskwatch/%u/ack"]


class Fleet:
    """One broker, one control room, agents (``n1``, ``n2``, ...), all real processes, in ``root``. ``docs``:
    the broker configured as docs/deploy.md says (``autosave_interval 60``, ACL patterns, node users)."""

    def __init__(self, root: Path, frames: int = 120, *, docs: bool = False, agent_yaml: str = ""):
        self.root = root
        self.docs = docs
        if docs:
            self.broker = MosquittoBroker(root / "broker", DOCS_USERS, acl=DOCS_ACL, patterns=DOCS_PATTERNS,
                                          autosave_interval=60)  # fmt: skip
        else:
            self.broker = MosquittoBroker(root / "broker", USERS, acl=ACL)
        self.broker.start()
        self.video = make_video(root / "door.mp4", frames, fps=10)
        self.serve_port = free_port()
        self.serve: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None  # the latest started
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.db = root / "control" / "control.db"
        (root / "agent.yaml").write_text(
            "journal: true\nengine:\n  stats_interval: 1.0\n  camera_defaults:\n    realtime: true\n" + agent_yaml
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
            self.broker.url(node if self.docs else "agent"),
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

    def restart_broker(self, kill: bool = True, down: float = 0.0) -> None:
        """SIGKILL (or stop) the broker, then start it again on the same port after ``down`` seconds."""
        port = self.broker.port
        self.broker.kill() if kill else self.broker.stop()
        time.sleep(down)
        self.broker.port = port
        self.broker.start()

    def kill_serve(self) -> None:
        assert self.serve is not None
        self.serve.send_signal(signal.SIGKILL)
        self.serve.wait()
        (self.root / "control" / "fleet.json").unlink(missing_ok=True)

    def dropped(self) -> list[str]:
        """What the agents' outbox budgets dropped, as they recorded it (their outbox.db)."""
        ids = []
        for path in sorted(self.root.glob("agent-*/outbox.db")):
            # (an outbox of a version that records no drops has no such table)
            with sqlite3.connect(path) as db, contextlib.suppress(sqlite3.OperationalError):
                ids += [(t, i) for t, i in db.execute("SELECT type, event_id FROM dropped")]
        return [i for t, i in ids if t in STORED]

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
        assert exactly once: everything the agents produced, but what their outbox budgets dropped (and
        recorded), is stored once; nothing dropped is stored."""
        assert self.agents
        for node, proc in self.agents.items():
            assert proc.wait(timeout) == 0, self.logs(f"agent-{node}")
        dropped = set(self.dropped())
        produced = [i for i in self.produced() if i not in dropped]
        assert len(produced) >= 5 * len(self.agents), self.logs("agent-n1")
        wait_until(lambda: set(self.stored()) >= set(produced), 30)
        stored = self.stored()
        assert len(stored) == len(set(stored))
        assert not dropped & set(stored), f"recorded as dropped yet stored: {dropped & set(stored)}"
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
    def settled() -> dict | None:  # the state file is written every few seconds: wait for the node's own stop too
        s = fleet.fleet_state()
        return s if s and s["rejected"]["json"] >= 3 and s["nodes"]["n1"]["state"] == "offline" else None

    state = wait_until(settled, 15)
    assert state["rejected"]["json"] == 3 and state["rejected"]["schema"] == 1 and state["rejected"]["oversized"] == 1
    assert state["nodes"]["n1"]["state"] == "offline" and "door" in state["nodes"]["n1"]["cameras"]


# -- end-to-end acknowledgement (issue 18): the broker may crash at any moment ----------------------------------


def test_broker_killed_while_the_control_room_is_down_loses_nothing(tmp_path):
    """The broker as docs/deploy.md configures it (persistence saved every 60 s) holds what the agents sent
    while the control room is down, and is SIGKILLed: it loses all of it. A node deletes a message only when
    the control room says it stored it, so the agents send it again and every event is stored once."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    fleet = Fleet(tmp_path, frames=200, docs=True, agent_yaml="ack_timeout: 2\nack_timeout_max: 4\n")
    try:
        fleet.start_serve()
        fleet.start_agent("n1")
        fleet.start_agent("n2")
        _streaming(fleet, 3)
        fleet.kill_serve()
        time.sleep(6)  # the agents publish; the broker acknowledges and keeps it for the control room, in memory
        fleet.restart_broker(kill=True, down=2)
        time.sleep(3)  # the agents are back before the control room: what they send again meanwhile is dropped
        fleet.start_serve()
        fleet.finish()
    finally:
        fleet.close()


def test_broker_killed_again_and_again_while_the_fleet_runs(tmp_path):
    """SIGKILL of the broker three times while two agents stream to a running control room."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    fleet = Fleet(tmp_path, frames=200, docs=True, agent_yaml="ack_timeout: 2\nack_timeout_max: 4\n")
    try:
        fleet.start_serve()
        fleet.start_agent("n1")
        fleet.start_agent("n2")
        _streaming(fleet, 3)
        for down in (0.0, 1.0, 3.0):
            fleet.restart_broker(kill=True, down=down)
            time.sleep(3)
        fleet.finish()
    finally:
        fleet.close()


def test_outbox_budget_exceeded_during_a_broker_outage_is_reported_exactly(tmp_path):
    """A tiny outbox budget (3 KB) and a broker down for 10 s: the agent drops its oldest messages, records
    each (outbox.db, table dropped) and says so in its status; the control room stores everything else
    once, nothing it was told was dropped, and raises the node's outbox_dropped alert."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    fleet = Fleet(tmp_path, frames=300, agent_yaml="outbox_mb: 0.003\n")
    try:
        fleet.start_serve()
        fleet.start_agent("n1")
        _streaming(fleet, 2)
        fleet.restart_broker(kill=False, down=10)
        fleet.finish()
        assert fleet.dropped(), "the budget never filled: make the outage longer"
        state = wait_until(lambda: (s := fleet.fleet_state()) and s["nodes"].get("n1", {}).get("outbox") and s, 10)
        outbox = state["nodes"]["n1"]["outbox"]
        assert outbox["drop_episodes"] >= 1 and outbox["dropped_stats"] + outbox["dropped_events"] >= 1
        with sqlite3.connect(fleet.db) as db:
            alerts = db.execute("SELECT camera, message FROM alerts WHERE kind = 'outbox_dropped'").fetchall()
        assert [camera for camera, _ in alerts] == ["n1"] and "dropped" in alerts[0][1]
        assert "outbox" in fleet.logs("agent-n1") and fleet.logs("agent-n1").count("dropping the oldest") == 1
    finally:
        fleet.close()


RESUMING_AGENT = """
import logging, sys
logging.basicConfig(level=logging.INFO)
sys.path.insert(0, sys.argv[3])
from fakes import fake_detector
from maskwatch.fleet.agent import Agent, AgentConfig
from maskwatch.stream import EngineConfig, StreamEngine

engine = StreamEngine(fake_detector(), EngineConfig(stats_interval=1.0, stop_when_done=True, min_track_frames=3))
config = AgentConfig(broker="mqtt://127.0.0.1:1", node="n1", data_dir=sys.argv[2], journal=True)
agent = Agent(config, engine)
import signal
signal.signal(signal.SIGTERM, lambda *_: agent.stop())
print("left", agent.run([("door", sys.argv[1])], drain_timeout=0.5), flush=True)
"""


def _people_video(path: Path, people: int, span: int = 12, gap: int = 8) -> Path:
    """People one after the other: person k in frames [k*(span+gap), k*(span+gap)+span), alone in view."""
    import cv2
    from fakes import GREEN, RED, scene

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 240))
    for i in range(people * (span + gap)):
        k, t = divmod(i, span + gap)
        squares = [(20 + 8 * t, 80, 40, GREEN if k % 2 == 0 else RED)] if t < span else []
        writer.write(cv2.cvtColor(scene(squares), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_a_restarted_agent_resumes_its_file_and_counts_nobody_twice(tmp_path):
    """An agent analysing a recording of 40 people (one after the other) is SIGKILLed, restarted, stopped with
    SIGTERM, restarted to the end, then started once more: every person it stored is a different one (none
    replayed from the start under a new id), at most one per interruption missed (in view at that moment)."""
    people = 40
    video = _people_video(tmp_path / "people.mp4", people)
    data = tmp_path / "agent"
    tests = str(Path(__file__).parent)

    def start() -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return subprocess.Popen([sys.executable, "-c", RESUMING_AGENT, str(video), str(data), tests],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)  # fmt: skip

    def ended() -> list[dict]:
        try:
            with sqlite3.connect(data / "outbox.db", timeout=10) as db:
                keys = [k for (k,) in db.execute("SELECT key FROM journal")]
                rows = {json.loads(p)["id"]: p for (p,) in db.execute("SELECT payload FROM outbox")}
        except sqlite3.OperationalError:  # not made yet
            return []
        return [json.loads(rows[k.split(":", 1)[1]]) for k in keys if k.startswith("track_ended:")]

    for interrupt, at in ((signal.SIGKILL, 10), (signal.SIGTERM, 22)):
        proc = start()
        assert wait_until(lambda at=at: len(ended()) >= at, 60, 0.02), proc.communicate(timeout=5)[0].decode()[-3000:]
        proc.send_signal(interrupt)
        proc.wait(30)
    for _ in range(2):  # to the end; then once more: the file is done, nothing is analysed again
        proc = start()
        out = proc.communicate(timeout=120)[0].decode()
        assert proc.returncode == 0, out[-3000:]
    persons = sorted(e["first_frame"] // 20 for e in ended())
    assert len(persons) == len(set(persons)), f"counted twice: {[p for p in persons if persons.count(p) > 1]}"
    assert people - 2 <= len(persons) <= people, f"missed {sorted(set(range(people)) - set(persons))}"
    assert "analysed to its end before" in out
