"""A control room and its fleet for the console tests (``test_console_fleet.py``, ``test_console_browser.py``):
a real Mosquitto on 127.0.0.1, the service (fake models) ingesting it, and real edge agents in threads
(:class:`maskwatch.fleet.agent.Agent`, engines on fake models playing generated videos in real time):

* ``gate-a`` runs camera ``door`` with ``--snapshots`` (its frames can be asked for);
* ``gate-b`` runs camera ``hall`` without (privacy by default: no image leaves it);
* ``gate-c`` runs camera ``clip``, a short file played once: it ends, and the agent exits by itself.

Nodes are started and stopped by the tests (:meth:`FleetWorld.start_node`, :meth:`FleetWorld.stop_node`)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

NODES = {
    "gate-a": {"cameras": ("door",), "snapshots": True, "loop": True},
    "gate-b": {"cameras": ("hall",), "snapshots": False, "loop": True},
    "gate-c": {"cameras": ("clip",), "snapshots": False, "loop": False},
}


@dataclass
class FleetWorld:
    root: Path
    broker: Any
    app: Any
    service: Any
    agents: dict[str, Any] = field(default_factory=dict)
    threads: dict[str, threading.Thread] = field(default_factory=dict)

    def start_node(self, node: str) -> None:
        from fakes import fake_detector, make_video

        from maskwatch.fleet.agent import Agent, AgentConfig
        from maskwatch.stream import EngineConfig, StreamEngine

        spec = NODES[node]
        frames = 50 if spec["loop"] else 30  # 5 s loops: someone is in view most of the time
        video = make_video(self.root / f"{node}.mp4", frames, people=2)
        config = AgentConfig(broker=self.broker.url("agent"), node=node, data_dir=str(self.root / node),
                             engine={"stats_interval": 1.0,
                                     "camera_defaults": {"realtime": True, "loop": bool(spec["loop"])}},
                             snapshots=bool(spec["snapshots"]), status_every=2.0)  # fmt: skip
        engine = StreamEngine(fake_detector(), EngineConfig(stats_interval=1.0, stop_when_done=not spec["loop"]))
        agent = Agent(config, engine)
        cameras = [(name, str(video)) for name in spec["cameras"]]
        thread = threading.Thread(target=agent.run, args=(cameras,), kwargs={"drain_timeout": 20}, daemon=True)
        thread.start()
        self.agents[node], self.threads[node] = agent, thread

    def stop_node(self, node: str, timeout: float = 30.0) -> None:
        """A clean stop (SIGTERM): open tracks end, the node says it is offline ("stopped")."""
        self.agents[node].stop()
        self.threads[node].join(timeout)
        assert not self.threads[node].is_alive(), f"agent {node} did not stop"

    def close(self) -> None:
        for node, thread in self.threads.items():
            if thread.is_alive():
                self.agents[node].stop()
                thread.join(15)


@contextlib.contextmanager
def fleet_world(root: Path, *, nodes: tuple[str, ...] = tuple(NODES), **sections: Any) -> Iterator[FleetWorld]:
    """The broker, the service app (not started: serve it with a TestClient or uvicorn) and the nodes."""
    from conftest_service import ADMIN, fake_cameras, service_settings
    from fakes import fake_detector

    from maskwatch.fleet.broker import MosquittoBroker, find_mosquitto
    from maskwatch.service.app import create_app
    from maskwatch.service.core import FleetLink

    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto mosquitto-clients)")
    broker = MosquittoBroker(root / "broker", {"agent": "agent-secret", "control": "control-secret"})
    broker.start()
    limits = {"rate_per_minute": 1e6, "rate_burst": 100000}  # tests poll the API quickly
    settings = service_settings(root / "control", alerts={"evaluate_every": 0.2}, limits=limits, **sections)
    link = FleetLink(broker.url("control"), client_id=f"console-{time.monotonic_ns()}", state_every=0.5)
    app = create_app(settings, detector=fake_detector(), admin_token=ADMIN, fleet=link, capture_factory=fake_cameras())
    world = FleetWorld(root, broker, app, app.state.service)
    try:
        yield world
    finally:
        world.close()
        broker.stop()


def start_nodes(world: FleetWorld, nodes: tuple[str, ...] = tuple(NODES)) -> None:
    """Start the nodes once the control room listens (its ingest connected)."""
    from conftest_service import wait_until

    fleet, commander = world.service.fleet, getattr(world.service, "commander", None)  # (none before issue 22)
    assert wait_until(lambda: fleet.connected.is_set() and (commander is None or commander.connected.is_set()), 30)
    for node in nodes:
        world.start_node(node)
