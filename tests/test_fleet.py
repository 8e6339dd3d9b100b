"""The fleet: outbox, topics, ingest validation (unit), then a real Mosquitto broker (started here on
127.0.0.1 with a password file): publisher drains in order after outages, an in-process agent on fake models
end to end with commands, and unauthorised publishes. Real-process fault tests: tests/test_fleet_faults.py."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer

pytest.importorskip("paho.mqtt")

import conftest_service
from conftest_service import wait_until
from fakes import fake_detector, make_video

from maskwatch.core.events import SourceStatus, StatsBucket, TrackEnded, parse_event
from maskwatch.core.names import check_name
from maskwatch.core.redaction import redact
from maskwatch.fleet import topics
from maskwatch.fleet.broker import MosquittoBroker, find_mosquitto
from maskwatch.fleet.ingest import FleetIngest
from maskwatch.fleet.outbox import Outbox
from maskwatch.fleet.publisher import Publisher, make_client
from maskwatch.fleet.topics import BrokerURL

db_url, pg_server = conftest_service.db_url, conftest_service.pg_server  # the fixtures

USERS = {"agent": "agent-secret", "control": "control-secret", "viewer": "viewer-secret"}
ACL = {"viewer": ["topic read maskwatch/#"]}


@pytest.fixture
def broker(tmp_path):
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto mosquitto-clients; scripts/setup.sh does)")
    b = MosquittoBroker(tmp_path / "broker", USERS, acl=ACL)
    b.start()
    yield b
    b.stop()


# -- outbox ------------------------------------------------------------------------------------------------


def test_outbox_fifo_ack_and_reopen(tmp_path):
    box = Outbox(tmp_path / "o.db")
    seqs = [box.put(f"t/{i}", f"m{i}") for i in range(10)]
    assert seqs == sorted(seqs) and len(box) == 10
    assert [m.payload for m in box.after(0, 3)] == [b"m0", b"m1", b"m2"]
    assert box.ack(seqs[0], seqs[2], 999_999) == 2
    box.close()
    again = Outbox(tmp_path / "o.db")  # a restart: what was not acknowledged is still there, in order
    assert [m.payload.decode() for m in again.after(0, 100)] == ["m1"] + [f"m{i}" for i in range(3, 10)]
    assert len(again) == 8 and again.bytes > 0
    assert again.put("t/x", "new") > seqs[-1]  # sequence numbers never go back
    assert again._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_outbox_budget_drops_oldest_stats_first(tmp_path):
    box = Outbox(tmp_path / "o.db", budget_bytes=12 * 165)  # 12 rows of 100 bytes (+ topic, overhead)
    for i in range(10):
        box.put("s", "x" * 100, kind="stats" if i % 2 else "event", key=f"k{i}")
    assert box.counters() == {"dropped_stats": 0, "dropped_events": 0}
    for i in range(6):
        box.put("e", "y" * 100, key=f"n{i}")
    left = box.after(0, 100)
    kinds = [m.kind for m in left]
    assert box.bytes <= box.budget_bytes
    dropped = box.counters()
    assert dropped["dropped_stats"] >= 1 and dropped["dropped_events"] == 0
    assert kinds.count("event") == 11  # every event kept while stats remained
    for _ in range(20):  # only events left: the oldest go, counted
        box.put("e", "z" * 100)
    assert box.counters()["dropped_stats"] == 5 and box.counters()["dropped_events"] > 0
    assert box.bytes <= box.budget_bytes
    with pytest.raises(ValueError, match="budget"):
        box.put("e", "w" * 10_000)


WRITER = """
import sys, time
from maskwatch.fleet.outbox import Outbox
box = Outbox(sys.argv[1], journal=True)
i = 0
while True:
    box.put("maskwatch/n/c/events", '{"n": %d}' % i, key=str(i))
    if i % 50 == 0:
        box.ack(*[m.seq for m in box.after(0, 10)])
    i += 1
    if i == 200:
        print("ready", flush=True)
"""


def test_outbox_survives_sigkill(tmp_path):
    path = tmp_path / "o.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    box = Outbox(path, journal=True)
    assert box._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    left = box.after(0, 1_000_000)
    numbers = [json.loads(m.payload)["n"] for m in left]
    journal = [int(k) for (k,) in box._db.execute("SELECT key FROM journal ORDER BY n")]
    assert numbers == sorted(numbers) and len(numbers) == len(set(numbers))
    assert journal == list(range(len(journal))) and len(journal) > 200  # every put committed, in order
    assert set(numbers) <= set(journal) and journal[-1] == numbers[-1]  # nothing half-written
    assert len(box) == len(left)


# -- topics and validation -----------------------------------------------------------------------------------


def test_topics_and_broker_urls():
    assert topics.event_topic("n1", "track_ended", "door") == "maskwatch/n1/door/events"
    assert topics.event_topic("n1", "stats", "door") == "maskwatch/n1/door/stats"
    assert topics.event_topic("n1", "frame", "door") is None
    assert topics.parse_topic("maskwatch/n1/status") == topics.ParsedTopic("n1", None, "status")
    assert topics.parse_topic("maskwatch/n1/door/stats") == topics.ParsedTopic("n1", "door", "stats")
    assert topics.parse_topic("maskwatch/n1/cmd/status") is None
    assert topics.parse_topic("other/n1/door/stats") is None
    assert "$share/maskwatch/maskwatch/+/+/events" in topics.ingest_subscriptions(shared=True)
    assert (
        "maskwatch/+/+/events" in topics.ingest_subscriptions()
        and "maskwatch/+/status" in topics.ingest_subscriptions()
    )
    url = BrokerURL.parse("mqtt://u%40x:p%3Ass@broker.local:1999")
    assert (url.host, url.port, url.username, url.password, url.tls) == ("broker.local", 1999, "u@x", "p:ss", False)
    assert BrokerURL.parse("mqtts://h").port == 8883 and BrokerURL.parse("mqtts://h").tls
    assert "p:ss" not in str(url) and "secret" not in redact("mqtt://a:secret@h:1")
    from maskwatch.fleet.ingest import parse_ingest_url

    assert parse_ingest_url("mqtt://u:p@h:1?shared=1") == (BrokerURL("h", 1, "u", "p"), True)
    assert parse_ingest_url("mqtts://h") == (BrokerURL("h", 8883, tls=True), False)
    with pytest.raises(ValueError, match="unknown"):
        parse_ingest_url("mqtt://h?sharde=1")
    for bad in ("http://h", "mqtt://", "mqtt://h:notaport"):
        with pytest.raises(ValueError):
            BrokerURL.parse(bad)
    for bad in ("a/b", "+", "#", "", "x" * 65, "n:c", "-x", ".hidden", "_x"):  # one rule: core.names
        with pytest.raises(ValueError):
            check_name(bad)
        if "/" not in bad:  # a topic level: a node or camera under that name is never ingested
            assert topics.parse_topic(f"maskwatch/{bad}/status") is None
            assert topics.parse_topic(f"maskwatch/n1/{bad}/stats") is None


def test_reconnect_waits_come_from_one_backoff():
    """paho's reconnection loop waits what the schedule arms before each try: doubling from 1 s to 5 s,
    jittered (nodes cut off together do not come back in lockstep), back to 1 s after a connection."""
    from maskwatch.core.backoff import Backoff
    from maskwatch.fleet.publisher import ReconnectSchedule

    class Delays:  # records what paho is told (paho's own client would sleep these)
        def __init__(self):
            self.set: list[tuple[float, float]] = []

        def reconnect_delay_set(self, min_delay, max_delay):
            self.set.append((min_delay, max_delay))

    client = Delays()
    schedule = ReconnectSchedule(client, Backoff(1.0, 5.0, jitter=0.2))
    for _ in range(5):
        schedule.arm()
    schedule.reset()
    schedule.arm()
    waits = [low for low, high in client.set if low == high]
    assert len(waits) == 6 and len(set(waits)) > 1
    assert all(0.79 <= w / b <= 1.21 for w, b in zip(waits, [1, 2, 4, 5, 5, 1], strict=True))
    paho = make_client(BrokerURL.parse("mqtt://127.0.0.1:1"), "delays")
    ReconnectSchedule(paho, Backoff(1.5, 5.0, jitter=0.0)).arm()  # paho takes a fractional wait
    assert (paho._reconnect_min_delay, paho._reconnect_max_delay) == (1.5, 1.5)


def _stats(source: str = "door") -> StatsBucket:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return StatsBucket(
        source=source,
        start=now,
        end=now,
        interval=1.0,
        people={"with_mask": 1},
        n_people=1,
        compliant_people=1,
        compliance=1.0,
        present_max=1,
        frames_analysed=5,
        frames_dropped=0,
        faces_classified=5,
        analysed_fps=4.5,
        lag={"p50": 0.1, "p95": 0.2, "max": 0.3},
    )


def test_ingest_validates_and_counts_without_stopping():
    got = []
    ingest = FleetIngest(got.append, BrokerURL.parse("mqtt://127.0.0.1:1"), max_bytes=4096)
    good = _stats()
    assert ingest.receive("maskwatch/n1/door/stats", good.to_json().encode()) == 0
    cases = {
        "json": [b"\xff\xfe garbage", good.to_json().encode()[:40], b"[1, 2]"],
        "oversized": [b"{" + b" " * 5000 + b"}"],
        "schema": [json.dumps({**good.to_dict(), "schema": "maskwatch.event/9"}).encode()],
        "invalid": [json.dumps({**good.to_dict(), "n_people": "many"}).encode()],
        "mismatch": [good.to_json().encode()],  # sent on another camera's topic below
        "topic": [good.to_json().encode()],
    }
    for reason, payloads in cases.items():
        for payload in payloads:
            topic = {"mismatch": "maskwatch/n1/hall/stats", "topic": "maskwatch/n1/door/x/stats"}.get(
                reason, "maskwatch/n1/door/stats"
            )
            ingest.receive(topic, payload)
    ingest.receive("maskwatch/n1/door/events", good.to_json().encode())  # stats on the events channel
    assert ingest.rejected == {"oversized": 1, "topic": 1, "json": 3, "schema": 1, "invalid": 1, "mismatch": 2,
                               "cap": 0, "remote": 0}  # fmt: skip
    ingest.receive("maskwatch/n1/door/stats", _stats().to_json().encode())  # still ingesting
    assert ingest.accepted == 2 and len(got) == 2
    assert got[0].id == good.id and got[0].source == "n1:door"  # renamed node:camera, id unchanged
    cam = ingest.state().nodes["n1"].cameras["door"]
    assert cam.fps == 4.5 and cam.lag_p95 == 0.2 and ingest.state().nodes["n1"].state == "online"


def test_node_last_will_marks_its_cameras_lost():
    got = []
    ingest = FleetIngest(got.append, BrokerURL.parse("mqtt://127.0.0.1:1"))
    online = {"schema": topics.NODE_SCHEMA, "node": "n1", "state": "online", "cameras": ["door", "hall"]}
    ingest.receive("maskwatch/n1/status", json.dumps(online).encode())
    ingest.receive("maskwatch/n1/status", json.dumps({**online, "node": "n2"}).encode())  # node mismatch
    assert ingest.rejected["mismatch"] == 1
    offline = {"schema": topics.NODE_SCHEMA, "node": "n1", "state": "offline", "reason": "connection lost"}
    ingest.receive("maskwatch/n1/status", json.dumps(offline).encode())
    lost = [e for e in got if isinstance(e, SourceStatus)]
    assert sorted(e.source for e in lost) == ["n1:door", "n1:hall"] and all(e.state == "lost" for e in lost)
    assert ingest.state().nodes["n1"].state == "offline"


# -- with a real broker ------------------------------------------------------------------------------------------


class Collector:
    """A plain subscriber recording (topic, payload) in arrival order. ``persistent``: its session outlives a
    lost connection (the broker keeps what arrives while it reconnects, as for the control room's ingest)."""

    def __init__(self, broker: MosquittoBroker, pattern: str, user: str = "control", persistent: bool = False):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.client = make_client(BrokerURL.parse(broker.url(user)), f"collector-{time.monotonic_ns()}",
                                  clean_session=not persistent)  # fmt: skip
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, m.payload, m.retain))
        self.client.on_connect = lambda c, *_: c.subscribe(pattern, qos=1)
        self.client.connect(broker.host if hasattr(broker, "host") else "127.0.0.1", broker.port)
        self.client.loop_start()

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_publisher_drains_in_order_after_outages(tmp_path, broker):
    box = Outbox(tmp_path / "o.db")
    port = broker.port
    broker.stop()  # the broker is down when the node starts
    for i in range(150):
        box.put("maskwatch/n1/door/events", f"{i}")
    publisher = Publisher(BrokerURL.parse(broker.url("agent")), box, client_id="pub-test", window=20)
    publisher.start()
    time.sleep(1.5)
    assert len(box) == 150 and not publisher.connected.is_set()
    broker.port = port
    broker.start()
    # persistent: after the outage below the publisher may reconnect before the collector (both back off)
    got = Collector(broker, "maskwatch/#", persistent=True)
    assert wait_until(publisher.connected.is_set, 10)
    for i in range(150, 300):
        box.put("maskwatch/n1/door/events", f"{i}")
        publisher.wake()
        if i == 200:
            broker.stop()  # an outage in the middle: nothing lost, order kept
            time.sleep(1.0)
            broker.start()
    assert publisher.wait_drained(30), f"{len(box)} left"
    wait_until(lambda: len(got.messages) >= 300, 10)
    numbers = [int(p) for _, p, _ in got.messages]
    publisher.stop()
    got.close()
    # every message arrived; the backlog drains in order. Only messages that were in flight (unacknowledged,
    # at most `window` of them) when the link dropped may be resent after newer ones: QoS 1 with a window keeps
    # order up to that window across an outage (strict order would need a window of 1)
    assert set(numbers) >= set(range(150, 300)) and len(box) == 0
    firsts = list(dict.fromkeys(numbers))
    highest = 0
    for n in firsts:
        assert n > highest - publisher.window, f"{n} arrived after {highest}: displaced beyond the window"
        highest = max(highest, n)


def test_agent_end_to_end_with_commands(tmp_path, broker):
    from maskwatch.fleet.agent import Agent, AgentConfig
    from maskwatch.stream import EngineConfig, StreamEngine

    video = make_video(tmp_path / "walk.mp4", 60, people=2)
    stored: list = []
    ingest = FleetIngest(stored.append, BrokerURL.parse(broker.url("control")), client_id="ingest-e2e")
    ingest.start()
    watch = Collector(broker, "maskwatch/#", user="viewer")
    assert wait_until(ingest.connected.is_set, 10)
    config = AgentConfig(
        broker=broker.url("agent"),
        node="n1",
        data_dir=str(tmp_path / "agent"),
        journal=True,
        engine={"stats_interval": 0.5, "camera_defaults": {"realtime": True}},
    )
    engine = StreamEngine(fake_detector(), EngineConfig(stats_interval=0.5, stop_when_done=True, min_track_frames=3))
    agent = Agent(config, engine)
    results: list[dict] = []
    runner = threading.Thread(target=lambda: results.append({"left": agent.run([("door", str(video))])}))
    runner.start()
    assert wait_until(agent.publisher.connected.is_set, 10)

    control = Collector(broker, "maskwatch/n1/cmd/result", user="control")
    time.sleep(0.5)  # the agent subscribes to its commands once connected

    def command(verb, **body):
        control.client.publish(f"maskwatch/n1/cmd/{verb}", json.dumps({"request_id": f"r-{verb}", **body}), qos=1)

    command("status")
    command("snapshot", name="door")
    command("add_camera", name="bad/name", source=str(video))
    command("remove_camera", name="nope")
    command("frobnicate")
    runner.join(60)
    assert not runner.is_alive() and results[-1]["left"] == 0  # exits once the last event is acknowledged
    wait_until(lambda: "n1" in ingest.state().nodes and ingest.state().nodes["n1"].state == "offline", 10)
    answers = {}
    for topic, payload, _ in control.messages:
        if topic == "maskwatch/n1/cmd/result":
            body = json.loads(payload)
            answers[body["request_id"]] = body
    assert answers["r-status"]["ok"] and "door" in answers["r-status"]["result"]["cameras"]
    assert not answers["r-snapshot"]["ok"] and "snapshots disabled" in answers["r-snapshot"]["error"]
    assert not answers["r-add_camera"]["ok"] and not answers["r-remove_camera"]["ok"]
    assert "unknown command" in answers["r-frobnicate"]["error"]
    journal = sqlite3.connect(tmp_path / "agent" / "outbox.db").execute("SELECT key FROM journal").fetchall()
    produced = [k.split(":", 1)[1] for (k,) in journal]
    ids = [e.id for e in stored if not isinstance(e, SourceStatus) or e.reason is None or "offline" not in e.reason]
    assert sorted(set(ids)) == sorted(produced)  # every event arrived (a resend would repeat an id, stored once)
    ended = [e for e in stored if isinstance(e, TrackEnded)]
    # both people reach the control room with their verdicts, each once (under load this once split people:
    # the decoder's end was lost with its exit, the file resumed in a new decoder; test_stream_decoders)
    assert sorted(e.label for e in ended) == ["with_mask", "without_mask"]
    assert all(e.source == "n1:door" for e in stored)
    kinds = {t.rsplit("/", 1)[-1] for t, _, _ in watch.messages if t.startswith("maskwatch/n1/door/")}
    assert kinds == set(topics.EVENT_CHANNELS)  # only what the control room reads: status, events, stats
    status = [json.loads(p) for t, p, _ in watch.messages if t == "maskwatch/n1/status"]
    assert status[0]["state"] == "online" and status[-1]["state"] == "offline"
    # retained: a newcomer reads the node's state at once (and nothing else is retained)
    late = Collector(broker, "maskwatch/n1/#", user="viewer")
    wait_until(lambda: late.messages, 5)
    time.sleep(0.3)
    retained = {t: json.loads(p) for t, p, r in late.messages if r}
    assert set(retained) == {"maskwatch/n1/status"} and retained["maskwatch/n1/status"]["state"] == "offline"
    for client in (late, watch, control):
        client.close()
    ingest.stop()
    for event in stored:
        parse_event(event.to_json())


def test_snapshot_is_blurred_and_only_when_enabled(tmp_path):
    import base64

    import cv2
    import numpy as np

    from maskwatch.fleet.agent import Agent, AgentConfig
    from maskwatch.stream import EngineConfig, SourceSpec, StreamEngine

    video = make_video(tmp_path / "walk.mp4", 20, people=1)
    engine = StreamEngine(fake_detector(), EngineConfig())
    config = AgentConfig(broker="mqtt://127.0.0.1:1", node="n1", data_dir=str(tmp_path / "a"), snapshots=True)
    agent = Agent(config, engine)
    engine.add_source(SourceSpec(str(video), name="door", realtime=True, loop=True))
    engine.start()
    assert wait_until(lambda: engine.latest("door") is not None and engine.latest("door").event.faces, 10)
    answer = agent.handle_command("snapshot", json.dumps({"request_id": "s1", "name": "door"}).encode())
    assert answer["ok"] and answer["request_id"] == "s1" and answer["result"]["faces_blurred"] == 1
    jpeg = np.frombuffer(base64.b64decode(answer["result"]["jpeg_base64"]), np.uint8)
    image = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    latest = engine.latest("door")
    x0, y0, x1, y1 = (int(v) for v in latest.event.faces[0].box)
    original = cv2.cvtColor(latest.frame.image, cv2.COLOR_RGB2BGR)[y0:y1, x0:x1].astype(float)
    assert np.abs(image[y0:y1, x0:x1].astype(float) - original).mean() > 5  # the face region was changed
    assert agent.handle_command("snapshot", b"not json")["ok"] is False
    engine.stop()
    agent.outbox.close()


def test_agent_snapshot_has_the_cameras_privacy_zones_black(tmp_path):
    import base64

    import cv2
    import numpy as np
    from fakes import GREEN, scene

    from maskwatch.fleet.agent import Agent, AgentConfig
    from maskwatch.stream import EngineConfig, StreamEngine

    video = tmp_path / "door.mp4"  # a face on the left, a lit wall on the right
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 240))
    for _ in range(10):
        frame = scene([(20, 20, 40, GREEN)])
        frame[:, 170:] = 120
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    engine = StreamEngine(fake_detector(), EngineConfig())
    right = [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]  # the camera's own zone, from the agent's config
    door = {"url": str(video), "realtime": True, "loop": True, "privacy_zones": [right]}
    config = AgentConfig(broker="mqtt://127.0.0.1:1", node="n1", data_dir=str(tmp_path / "a"), snapshots=True,
                         cameras={"door": door})  # fmt: skip
    agent = Agent(config, engine)
    agent.add_camera("door", str(video))
    engine.start()
    assert wait_until(lambda: engine.latest("door") is not None and engine.latest("door").event.faces, 10)
    answer = agent.handle_command("snapshot", json.dumps({"request_id": "s2", "name": "door"}).encode())
    image = cv2.imdecode(np.frombuffer(base64.b64decode(answer["result"]["jpeg_base64"]), np.uint8), cv2.IMREAD_COLOR)
    assert image[:, 164:].max() < 12  # the zone is black (JPEG noise aside) ...
    assert image[:, :150].max() > 100  # ... and only the zone
    assert answer["result"]["faces_blurred"] == 1  # the wall was never analysed (no second "face")
    engine.stop()
    agent.outbox.close()


def test_unauthorised_clients_are_refused(tmp_path, broker):
    stored: list = []
    ingest = FleetIngest(stored.append, BrokerURL.parse(broker.url("control")), client_id="ingest-auth")
    ingest.start()
    assert wait_until(ingest.connected.is_set, 10)
    wrong = make_client(BrokerURL("127.0.0.1", broker.port, "agent", "wrong"), "intruder")
    refused = threading.Event()
    wrong.on_connect = lambda _c, _u, _f, rc, _p: refused.set() if rc.is_failure else None
    wrong.connect("127.0.0.1", broker.port)
    wrong.loop_start()
    assert wait_until(refused.is_set, 5)
    wrong.loop_stop()
    viewer = make_client(BrokerURL.parse(broker.url("viewer")), "viewer-pub")  # may read, may not publish
    viewer.connect("127.0.0.1", broker.port)
    viewer.loop_start()
    viewer.publish("maskwatch/n1/door/stats", _stats().to_json(), qos=1).wait_for_publish(5)
    agent = make_client(BrokerURL.parse(broker.url("agent")), "agent-pub")
    agent.connect("127.0.0.1", broker.port)
    agent.loop_start()
    agent.publish("maskwatch/n1/door/stats", b"\x00garbage", qos=1).wait_for_publish(5)
    agent.publish("maskwatch/n1/door/stats", _stats().to_json()[:30], qos=1).wait_for_publish(5)
    good = _stats()
    agent.publish("maskwatch/n1/door/stats", good.to_json(), qos=1).wait_for_publish(5)
    assert wait_until(lambda: len(stored) == 1, 5)
    time.sleep(0.3)
    assert [e.id for e in stored] == [good.id] and ingest.rejected["json"] == 2  # viewer's publish never arrived
    for client in (viewer, agent):
        client.disconnect()
        client.loop_stop()
    ingest.stop()


def test_agent_cli_config_and_usage_errors(tmp_path):
    from typer.testing import CliRunner

    from maskwatch.cli import app
    from maskwatch.commands.agent import load_agent_config

    config = load_agent_config(Path("configs/agent.yaml"), {"node": "n1", "cameras": {"door": "a.mp4"}})
    assert config.node == "n1" and config.camera_sources() == [("door", "a.mp4")] and config.outbox_mb == 256
    assert not config.snapshots  # privacy by default
    # the engine block is the one shared with serve and detect; older top-level keys name their new place
    moved = tmp_path / "old.yaml"
    moved.write_text("stats_interval: 5\ncameras:\n  hall: {url: b.mp4, target_fps: 2}\n")
    with pytest.raises(typer.Exit):
        load_agent_config(moved, {})
    moved.write_text(
        "engine:\n  stats_interval: 5\n  camera_defaults: {realtime: true}\n"
        "cameras:\n  hall: {url: b.mp4, target_fps: 2}\n"
    )
    config = load_agent_config(moved, {"cameras": {"door": "a.mp4"}})
    assert config.engine.stats_interval == 5 and [n for n, _ in config.camera_sources()] == ["hall", "door"]
    hall = config.engine.source("b.mp4", "hall", config.cameras["hall"])
    assert (hall.target_fps, hall.realtime) == (2.0, True)  # its own setting, and the default it inherits
    runner = CliRunner()
    bad = tmp_path / "bad.yaml"
    bad.write_text("brokr: mqtt://x\n")
    result = runner.invoke(app, ["agent", "--config", str(bad), "--camera", "door=a.mp4"])
    assert result.exit_code == 2 and "did you mean 'broker'" in result.output
    assert runner.invoke(app, ["agent", "--node", "n1"]).exit_code == 2  # no camera
    result = runner.invoke(app, ["agent", "--camera", "door"])
    assert result.exit_code == 2 and "NAME=SOURCE" in result.output
    result = runner.invoke(app, ["agent", "--camera", "a=b", "--broker", "http://x"])
    assert result.exit_code == 2 and "mqtt://" in result.output
    assert "--broker" in runner.invoke(app, ["agent", "--help"]).output
    serve = ["serve", "--no-demo", "--data-dir", str(tmp_path / "s"), "--mqtt"]
    result = runner.invoke(app, [*serve, "mqtt://h?sharde=1"])
    assert result.exit_code == 2 and "unknown option" in result.output
    assert runner.invoke(app, [*serve, "http://h"]).exit_code == 2


def test_full_ingest_buffer_holds_messages_back_and_loses_nothing(tmp_path, broker):
    """The control room's ingest buffer (100 events) fills: its writer is slowed down while 600 person events
    and 60 stats buckets arrive over MQTT from the real outbox + publisher. The MQTT callback waits for room
    instead of dropping (nothing is acknowledged before it is written), and every event is stored exactly once."""
    from conftest_service import bucket, person, running_service
    from sqlalchemy import func, select

    from maskwatch.service.core import FleetLink
    from maskwatch.service.storage.models import Ingested, PersonEvent

    link = FleetLink(broker.url("control"), client_id="ingest-full", state_every=0.5)
    limits = {"ingest_buffer": 100, "remote_past_s": 10 * 365 * 86400}  # the events are dated 2026-03-02
    with running_service(tmp_path, limits=limits, fleet=link) as (_client, service):
        ingestor = service.ingestor
        ingestor.batch = 10
        write, peak = ingestor._write, [0]

        def slow_write(items):
            time.sleep(0.02)  # a slow database
            peak[0] = max(peak[0], len(ingestor._buffer))
            write(items)

        ingestor._write = slow_write
        assert wait_until(lambda: service.fleet is not None and service.fleet.connected.is_set(), 10)
        box = Outbox(tmp_path / "outbox.db")
        events = [person(f"cam{i % 4}", track_id=i) for i in range(600)]
        events += [bucket(f"cam{i % 4}", start=datetime(2026, 3, 2, 9, i, tzinfo=UTC)) for i in range(60)]
        for event in events:
            box.put(topics.event_topic("n1", event.type, event.source), event.to_json())
        publisher = Publisher(BrokerURL.parse(broker.url("agent")), box, client_id="pub-full", window=500)
        publisher.start()
        assert publisher.wait_drained(60), f"{len(box)} not acknowledged by the broker"

        def stored() -> tuple[int, int, int]:
            with service.storage.sessions() as s:
                people = s.scalar(select(func.count()).select_from(PersonEvent)) or 0
                distinct = s.scalar(select(func.count(func.distinct(PersonEvent.event_id)))) or 0
                stats = s.scalar(select(func.count()).select_from(Ingested).where(Ingested.type == "stats")) or 0
            return people, distinct, stats

        assert wait_until(lambda: stored() == (600, 600, 60), 60), stored()
        assert peak[0] >= ingestor.capacity - 1, f"the buffer never filled (peak {peak[0]})"
        assert ingestor.dropped == 0 and service.fleet.accepted == 660
        with service.storage.sessions() as s:
            ids = set(s.scalars(select(PersonEvent.event_id)))
        assert ids == {e.id for e in events if e.type == "track_ended"}
        assert wait_until(lambda: service.fleet.state().pending_acks == 0, 5)
        publisher.stop()
        box.close()


NODE = """
import json, sys, time
from maskwatch.fleet import topics
from maskwatch.fleet.publisher import make_client
from maskwatch.fleet.topics import BrokerURL

url, node = BrokerURL.parse(sys.argv[1]), sys.argv[2]
def status(state, reason=None):
    body = {"schema": topics.NODE_SCHEMA, "node": node, "state": state, "time": time.time(), "cameras": ["door"]}
    return json.dumps({**body, "reason": reason} if reason else body).encode()
client = make_client(url, "node-" + node, will=(topics.node_status(node), status("offline", "connection lost"), True))
client.connect(url.host, url.port, keepalive=5)
client.loop_start()
client.publish(topics.node_status(node), status("online"), qos=1, retain=True).wait_for_publish(5)
print("online", flush=True)
time.sleep(120)
"""


def _node(broker: MosquittoBroker, name: str) -> subprocess.Popen[bytes]:
    """A node process that publishes ``online`` with an ``offline`` last will (SIGKILL it to fire the will)."""
    proc = subprocess.Popen([sys.executable, "-c", NODE, broker.url("agent"), name], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"online"
    return proc


def test_node_offline_alert_fires_once_with_two_workers(tmp_path, broker, db_url, caplog):
    """Two control-room workers on the shared subscription and one database: a node's last will raises one
    node_offline alert (one row, one webhook, one log line), and its return resolves it once."""
    import logging

    from conftest_service import running_service
    from test_service_alerts import Receiver

    from maskwatch.service.core import FleetLink

    caplog.set_level(logging.WARNING, logger="maskwatch.service")
    receiver = Receiver()
    rule = {"name": "node offline", "kind": "node_offline", "for_s": 0.5, "cooldown_s": 60,
            "webhook_url": receiver.url}  # fmt: skip
    sections = {"alerts": {"rules": [rule], "evaluate_every": 0.1},
                "security": {"sources": {"hosts": ["fake"]}, "webhooks": {"hosts": ["127.0.0.1"]}}}  # fmt: skip
    node: subprocess.Popen[bytes] | None = None
    try:
        url = broker.url("control") + "?shared=1"
        links = [FleetLink(url, client_id=f"worker-{i}", state_every=0.5) for i in (0, 1)]
        with (
            running_service(tmp_path / "w1", db=db_url, fleet=links[0], **sections) as (client, one),
            running_service(tmp_path / "w2", db=db_url, fleet=links[1], **sections) as (_client2, two),
        ):
            workers = (one, two)
            assert wait_until(lambda: all(w.fleet is not None and w.fleet.connected.is_set() for w in workers), 10)
            node = _node(broker, "n1")

            def online(worker) -> bool:
                nodes = worker.fleet.state().nodes
                return "n1" in nodes and nodes["n1"].state == "online"

            assert wait_until(lambda: all(online(w) for w in workers), 10)

            def alerts() -> list[dict]:
                return [a for a in client.get("/api/v1/alerts").json()["items"] if a["kind"] == "node_offline"]

            node.kill()  # no DISCONNECT: the broker publishes the last will
            node.wait()
            assert wait_until(lambda: alerts(), 15)
            time.sleep(1.5)  # both workers have evaluated many times
            firing = alerts()
            assert [(a["camera"], a["state"]) for a in firing] == [("n1", "firing")], firing
            assert "offline" in firing[0]["message"] and "connection lost" in firing[0]["message"]
            assert caplog.text.count("ALERT node offline on n1") == 1
            node = _node(broker, "n1")  # back online: resolved once
            assert wait_until(lambda: [a["state"] for a in alerts()] == ["resolved"], 10), alerts()
            time.sleep(1.0)
            assert len(alerts()) == 1 and caplog.text.count("RESOLVED node offline on n1") == 1
            assert wait_until(lambda: len(receiver.requests) >= 2, 10)
            time.sleep(0.5)
            assert [json.loads(body)["transition"] for _, body in receiver.requests] == ["firing", "resolved"]
    finally:
        if node is not None:
            node.kill()
            node.wait()
        receiver.close()


def test_every_worker_of_a_shared_subscription_shows_a_node_camera_back_live(tmp_path, broker, db_url):
    """Each worker of a shared subscription receives only some of a node's messages: the one that saw the
    camera fail and missed its return showed it failed for good, in /cameras and /fleet, while it streamed
    (the chaos soak found it). Both now show the newer of what they saw and what is stored, and a late,
    older status changes nothing."""
    from conftest_service import running_service

    from maskwatch.service.core import FleetLink

    url = broker.url("control") + "?shared=1"
    links = [FleetLink(url, client_id=f"view-{i}") for i in (0, 1)]
    with (
        running_service(tmp_path / "w1", db=db_url, fleet=links[0]) as (client1, one),
        running_service(tmp_path / "w2", db=db_url, fleet=links[1]) as (client2, two),
    ):
        assert wait_until(lambda: all(w.fleet is not None and w.fleet.connected.is_set() for w in (one, two)), 10)
        failed = SourceStatus(source="hall", state="failed", kind="stream", reason="no frame for 30 s")
        back = SourceStatus(source="hall", state="live", kind="stream")  # later: its time is after the failure
        marks = [one.fleet.receive("maskwatch/n1/hall/status", failed.to_json().encode()),
                 two.fleet.receive("maskwatch/n1/hall/status", back.to_json().encode())]  # fmt: skip
        assert all(marks), marks  # both wait for the writer: neither is acknowledged before it is stored

        def states(client) -> tuple[str, str]:
            camera = client.get("/api/v1/cameras/n1:hall").json()["state"]
            (node,) = client.get("/api/v1/fleet").json()["nodes"]
            return camera, node["cameras"][0]["state"]

        assert wait_until(lambda: states(client2) == ("live", "live"), 5), states(client2)
        assert wait_until(lambda: states(client1) == ("live", "live"), 15), states(client1)
        older = SourceStatus(source="hall", state="reconnecting", kind="stream", time=failed.time)  # late, re-sent
        one.fleet.receive("maskwatch/n1/hall/status", older.to_json().encode())
        time.sleep(6.0)  # a read of the stored states (every 5 s) has come and gone
        assert states(client1) == ("live", "live") and states(client2) == ("live", "live")


def test_ingest_into_the_service_api_fleet_view_and_offline_alerts(tmp_path, broker):
    """FleetIngest bound to a running service (fake models): events stored once under NODE:CAMERA; the fleet
    on /api/v1/fleet (viewer role): node state, per-camera FPS, lag, compliance by camera and node; a node's
    offline status firing the camera_offline rule for its cameras and the node_offline rule for the node."""
    from conftest_service import bucket, running_service

    from maskwatch.service.core import FleetLink

    rules = [{"name": "camera down", "kind": "camera_offline", "for_s": 0},
             {"name": "node down", "kind": "node_offline", "for_s": 0}]  # fmt: skip
    link = FleetLink(broker.url("control"), client_id="ingest-api")  # connected; messages are handed in below
    with running_service(tmp_path, alerts={"rules": rules, "evaluate_every": 0.1}, fleet=link) as (client, service):
        ingest = service.fleet
        assert ingest is not None
        assert wait_until(ingest.connected.is_set, 10)
        body = client.get("/api/v1/fleet").json()
        assert body["enabled"] and body["nodes"] == [] and body["ingest"]["connected"]
        online = {"schema": topics.NODE_SCHEMA, "node": "n1", "state": "online", "cameras": ["door", "hall"],
                  "outbox": {"dropped_stats": 0, "dropped_events": 0}}  # fmt: skip
        ingest.receive("maskwatch/n1/status", json.dumps(online).encode())
        stats = _stats()
        marks = [ingest.receive("maskwatch/n1/door/stats", stats.to_json().encode()) for _ in range(2)]  # resent
        hall = bucket("hall", start=datetime.now(UTC).replace(microsecond=0), masked=1, unmasked=2, lag=0.5)
        marks.append(ingest.receive("maskwatch/n1/hall/stats", hall.to_json().encode()))
        assert marks[0] and marks[-1] and wait_until(lambda: ingest._written() >= marks[-1], 10)
        body = client.get("/api/v1/fleet").json()
        assert body["enabled"] and body["online"] == 1 and body["ingest"]["accepted"] == 4
        (node,) = body["nodes"]
        assert (node["name"], node["state"], node["outbox"]) == ("n1", "online", online["outbox"])
        door, hall_view = node["cameras"]
        assert (door["camera"], door["fps"], door["lag_p95"], door["people"], door["compliance"]) == (
            "n1:door", 4.5, 0.2, 1, 1.0)  # fmt: skip
        assert (hall_view["name"], hall_view["lag_p95"], hall_view["people"]) == ("hall", 0.5, 3)
        assert hall_view["compliance"] == pytest.approx(1 / 3, abs=1e-4)
        assert node["people"] == 4 and node["compliance"] == 0.5 and body["compliance"] == 0.5  # 2 of 4 masked
        assert node["last_seen"] >= door["last_seen"] > 0
        rows = client.get("/api/v1/stats/compliance", params={"camera": "n1:door", "bucket": "1m"}).json()
        assert rows, rows
        assert client.get("/api/v1/fleet", params={"window_s": 10}).status_code == 422
        offline = {"schema": topics.NODE_SCHEMA, "node": "n1", "state": "offline", "reason": "connection lost"}
        ingest.receive("maskwatch/n1/status", json.dumps(offline).encode())
        (node,) = client.get("/api/v1/fleet").json()["nodes"]
        assert (node["state"], node["reason"]) == ("offline", "connection lost")
        assert [c["state"] for c in node["cameras"]] == ["lost", "lost"]

        def firing():
            items = client.get("/api/v1/alerts?state=firing").json()["items"]
            return sorted((a["kind"], a["camera"]) for a in items)

        expected = [("camera_offline", "n1:door"), ("camera_offline", "n1:hall"), ("node_offline", "n1")]
        assert wait_until(lambda: firing() == expected, 10), firing()
        ingest.receive("maskwatch/n1/status", json.dumps(online).encode())
        assert wait_until(lambda: ("node_offline", "n1") not in firing(), 10)  # back: the node alert resolves


def _certificates(folder: Path) -> tuple[str, str, str]:
    """A throwaway CA and a broker certificate for 127.0.0.1 (openssl)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        str(folder / n) for n in ("ca.key", "ca.pem", "broker.key", "broker.csr", "broker.pem")
    )
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        ca_key,
        "-out",
        ca,
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
    )
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "1",
        "-extfile", str(ext))  # fmt: skip
    for path in (ca_key, key):
        os.chmod(path, 0o600)
    return ca, cert, key


def test_tls_broker(tmp_path):
    import shutil

    from maskwatch.fleet.publisher import TLSOptions

    if find_mosquitto() is None or shutil.which("openssl") is None:
        pytest.skip("mosquitto or openssl not installed")
    ca, cert, key = _certificates(tmp_path / "pki")
    broker = MosquittoBroker(tmp_path / "broker", USERS, tls=(ca, cert, key))
    broker.start()
    try:
        stored: list = []
        ingest = FleetIngest(stored.append, BrokerURL.parse(broker.url("control")), client_id="ingest-tls",
                             tls=TLSOptions(ca_certs=ca))  # fmt: skip
        ingest.start()
        box = Outbox(tmp_path / "o.db")
        good = _stats()
        box.put("maskwatch/n1/door/stats", good.to_json())
        publisher = Publisher(
            BrokerURL.parse(broker.url("agent")), box, client_id="pub-tls", tls=TLSOptions(ca_certs=ca)
        )
        publisher.start()
        assert broker.url("agent").startswith("mqtts://")
        assert publisher.wait_drained(15) and wait_until(lambda: len(stored) == 1, 10)
        assert stored[0].id == good.id
        untrusted = Publisher(
            BrokerURL.parse(broker.url("agent")), Outbox(tmp_path / "u.db"), client_id="pub-untrusted"
        )
        untrusted.start()  # the system CAs do not know this broker: no connection
        time.sleep(1.5)
        assert not untrusted.connected.is_set()
        for p in (publisher, untrusted):
            p.stop()
        ingest.stop()
    finally:
        broker.stop()
