"""``maskwatch agent``: an edge node. Runs its cameras on one stream engine and publishes the engine's events
to the broker through the durable outbox; answers commands.

Data flow (top-down): engine events -> :meth:`Agent.on_event` (topic per type, stored in the outbox) ->
:class:`~maskwatch.fleet.publisher.Publisher` (in order, QoS 1; deleted once the control room acknowledges
it on ``maskwatch/{node}/ack``). Commands arrive on ``maskwatch/{node}/cmd/{verb}`` and are answered on
``maskwatch/{node}/cmd/result`` with their request id.

The node's retained status (``maskwatch.node/1``) carries its cameras with their current state (a control
room puts back what the node's last will said when the node returns) and its outbox: messages waiting,
budget, what the budget dropped (counters and drop episodes); it is published again at once when a drop
episode begins or ends.

Privacy: no image leaves the node unless ``snapshots`` is enabled, and then every face is blurred
(:func:`maskwatch.detection.privacy.blur_faces`, recall-first: every candidate and held box, grown to the
head) and every privacy zone of the camera is black (the engine blacks zones out before analysis).
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from maskwatch.core.names import check_name
from maskwatch.core.settings import RootSettings
from maskwatch.fleet import topics
from maskwatch.fleet.outbox import Outbox, Outgoing
from maskwatch.fleet.publisher import Publisher, TLSOptions
from maskwatch.fleet.resume import FilePositions
from maskwatch.fleet.topics import BrokerURL
from maskwatch.stream.config import CameraSettings, EngineConfig

__all__ = ["Agent", "AgentCamera", "AgentConfig", "LoginRefusedError", "check_sources", "parse_camera"]

log = logging.getLogger("maskwatch.fleet")


class AgentCamera(CameraSettings):
    """One camera of a node: its source and its own settings (each unset one inherits
    ``engine.camera_defaults``). In YAML a bare source string stands for ``{url: SOURCE}``."""

    url: str = Field(min_length=1)  # a video file, a folder of images, rtsp://..., http(s)://..., webcam:N


#: top-level keys of older agent files, now inside the engine block (an error names the new place)
MOVED_KEYS = {
    "stats_interval": ("engine", "stats_interval"),
    "realtime": ("engine", "camera_defaults", "realtime"),
    "loop": ("engine", "camera_defaults", "loop"),
}


class AgentConfig(RootSettings):
    """Every setting of an edge agent (``configs/agent.yaml`` documents each). Environment overrides:
    ``MASKWATCH_AGENT_<KEY>`` (nested keys joined by ``__``), and ``MASKWATCH_MQTT_PASSWORD`` for the broker
    password."""

    model_config = SettingsConfigDict(env_prefix="MASKWATCH_AGENT_")
    legacy_env: ClassVar[dict[str, tuple[str, ...]]] = {"MASKWATCH_MQTT_PASSWORD": ("password",)}

    broker: str = "mqtt://127.0.0.1:1883"
    node: str = Field(default_factory=lambda: socket.gethostname().split(".")[0])
    cameras: dict[str, AgentCamera] = Field(default_factory=dict)  # name -> source (and its own settings)
    data_dir: str = "runs/agent"
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_insecure: bool = False
    outbox_mb: float = Field(256.0, gt=0)  # disk budget of the outbox
    durable: bool = False  # fsync every outbox write (survives power loss)
    window: int = Field(100, ge=1)  # messages in flight (published, not yet acknowledged by the broker)
    ack: bool = True  # delete a message when the control room has stored it (False: on the broker's PUBACK)
    ack_window: int = Field(1000, ge=1)  # messages published, not yet acknowledged by the control room, at most
    ack_timeout: float = Field(30.0, gt=0)  # seconds before a message the control room has not acked is sent again
    ack_timeout_max: float = Field(300.0, gt=0)  # the wait doubles per sending up to this
    resume: bool = True  # a restarted agent resumes video files where it stopped (never counting anyone twice)
    snapshots: bool = False  # allow the snapshot command (faces always blurred)
    model: str | None = None
    status_every: float = Field(30.0, gt=0)  # republish the retained node status this often (seconds)
    journal: bool = False  # keep "type:id" of every published event in the outbox's journal table (audits, tests)
    engine: EngineConfig = Field(default_factory=EngineConfig)  # the same block as serve's and detect's

    @field_validator("cameras", mode="before")
    @classmethod
    def _short_form(cls, cameras: Any) -> Any:
        """A camera given as a bare source string is ``{url: SOURCE}``."""
        if isinstance(cameras, dict):
            return {str(k): {"url": v} if isinstance(v, str) else v for k, v in cameras.items()}
        return cameras

    @classmethod
    def suggest(cls, key: str) -> str | None:
        return ".".join(MOVED_KEYS[key]) if key in MOVED_KEYS else None

    def camera_sources(self) -> list[tuple[str, str]]:
        """``(name, source)`` of every configured camera."""
        return [(name, camera.url) for name, camera in self.cameras.items()]

    def broker_url(self) -> BrokerURL:
        url = BrokerURL.parse(self.broker)
        if self.username is not None or self.password is not None:
            url = BrokerURL(url.host, url.port, self.username or url.username, self.password or url.password, url.tls)
        return url

    def tls(self) -> TLSOptions | None:
        if not (self.tls_ca or self.tls_cert or self.tls_insecure):
            return None
        return TLSOptions(self.tls_ca, self.tls_cert, self.tls_key, self.tls_insecure)


def parse_camera(text: str) -> tuple[str, str]:
    """``NAME=SOURCE`` -> (name, source)."""
    name, sep, source = text.partition("=")
    if not sep or not source:
        raise ValueError(f"--camera {text!r}: expected NAME=SOURCE (e.g. door=rtsp://cam/stream)")
    return check_name(name.strip(), "camera name"), source.strip()


class LoginRefusedError(ConnectionError):
    """The broker refused this node's credentials and every camera is a file (nothing to wait for)."""


def check_sources(cameras: Sequence[tuple[str, str]]) -> None:
    """Every camera's source before any work: a file must exist and be a readable video or image (folder);
    ``webcam:N`` must be well formed. Raises ValueError naming the camera. Live streams are only checked
    for their form: they may be down now and come back (the agent keeps trying)."""
    from maskwatch.stream.sources import SourceError, VideoSource, parse_source

    for name, source in cameras:
        try:
            kind, value = parse_source(source)
            if kind == "files" and not value:
                raise SourceError(f"{source}: no images or videos found there")
            if kind == "video":
                VideoSource(value).probe()
        except (SourceError, OSError) as exc:
            raise ValueError(f"camera {name}: {exc}") from exc


def _is_file_source(source: str) -> bool:
    from maskwatch.stream.sources import parse_source

    try:
        kind, _ = parse_source(source)
    except Exception:
        return False
    return kind in ("video", "image", "files")


class Agent:
    """One edge node. ``engine`` is a :class:`~maskwatch.stream.StreamEngine` (tests pass one on fake models)."""

    def __init__(self, config: AgentConfig, engine: Any) -> None:
        self.config = config
        self.node = check_name(config.node, "node name")
        self.engine = engine
        self.outbox = Outbox(
            Path(config.data_dir) / "outbox.db",
            budget_bytes=int(config.outbox_mb * 1024 * 1024),
            durable=config.durable,
            journal=config.journal,
            on_episode=lambda _episode: self._announce(),
        )
        offline = self._status_payload("offline", reason="connection lost (last will)", will=True)
        self.publisher = Publisher(
            config.broker_url(),
            self.outbox,
            client_id=f"maskwatch-agent-{self.node}",
            tls=config.tls(),
            will=(topics.node_status(self.node), offline, True),
            on_connect=self._on_connect,
            on_message=self._on_command,
            window=config.window,
            ack_topic=topics.ack_topic(self.node) if config.ack else None,
            ack_window=config.ack_window,
            ack_timeout=config.ack_timeout,
            ack_timeout_max=config.ack_timeout_max,
        )
        self.cameras: dict[str, str] = {}
        self.files = FilePositions(self.outbox) if config.resume else None  # looping files are never resumed
        self._commands: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._events_done = threading.Event()

    # -- payloads ------------------------------------------------------------------------------------------

    def _status_payload(self, state: str, reason: str | None = None, *, will: bool = False) -> bytes:
        body: dict[str, Any] = {"schema": topics.NODE_SCHEMA, "node": self.node, "state": state, "time": time.time()}
        if reason:
            body["reason"] = reason
        if will:
            body["will"] = True  # sent by the broker when this connection dies (the control room confirms it)
        if state == "online":
            body["cameras"] = sorted(self.cameras)
            body["camera_states"] = self.camera_states()
            body["outbox"] = self.outbox.status().to_wire()
        return json.dumps(body).encode()

    def camera_states(self) -> dict[str, str]:
        """Each camera's state now (``live``, ``reconnecting``, ...), as the engine reports it."""
        try:
            states = self.engine.source_states()
        except Exception:
            return {}
        return {name: str(states[name]) for name in self.cameras if name in states}

    # -- engine events -> outbox ------------------------------------------------------------------------

    def on_event(self, event: Any) -> None:
        """Store one engine event in the outbox, to be published in order (a file source's events together
        with its position: :mod:`maskwatch.fleet.resume`)."""
        batch = None if self.files is None else self.files.route(event)
        events = [event] if batch is None else batch.events
        messages = [m for m in (self._outgoing(e) for e in events) if m is not None]
        if not messages and (batch is None or batch.position is None):
            return
        self.outbox.put_many(messages, position=None if batch is None else batch.position)
        if messages:
            self.publisher.wake()

    def _outgoing(self, event: Any) -> Outgoing | None:
        topic = topics.event_topic(self.node, event.type, event.source)
        if topic is None:
            return None
        kind = "stats" if event.type == "stats" else "event"
        return Outgoing(topic, event.to_json(), kind, f"{event.type}:{event.id}", event.id, event.type)

    def _pump(self, subscription: Any) -> None:
        try:
            for event in subscription:
                try:
                    self.on_event(event)
                except Exception:
                    log.exception("event %s not stored in the outbox", getattr(event, "id", "?"))
        finally:
            self._events_done.set()

    # -- connection and commands ------------------------------------------------------------------------

    def _on_connect(self, client: Any) -> None:
        client.publish(topics.node_status(self.node), self._status_payload("online"), qos=1, retain=True)
        client.subscribe(topics.cmd_topic(self.node, "+"), qos=1)

    def _on_command(self, topic: str, payload: bytes) -> None:
        self._commands.put((topic, payload))

    def _command_loop(self) -> None:
        while not self._stop.is_set():
            try:
                topic, payload = self._commands.get(timeout=0.2)
            except queue.Empty:
                continue
            verb = topic.rsplit("/", 1)[-1]
            if verb == "result":
                continue
            self.publisher.publish_direct(
                topics.cmd_topic(self.node, "result"), json.dumps(self.handle_command(verb, payload))
            )

    def handle_command(self, verb: str, payload: bytes) -> dict[str, Any]:
        """Run one command; the answer carries its ``request_id``, ``ok`` and a ``result`` or ``error``."""
        try:
            body = json.loads(payload or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the command body must be a JSON object")
        except ValueError as exc:
            return {
                "schema": topics.CMD_SCHEMA,
                "request_id": None,
                "verb": verb,
                "ok": False,
                "error": f"bad JSON: {exc}",
            }
        answer: dict[str, Any] = {"schema": topics.CMD_SCHEMA, "request_id": body.get("request_id"), "verb": verb}
        try:
            answer["result"] = self._run_command(verb, body)
            answer["ok"] = True
        except Exception as exc:
            answer.update(ok=False, error=str(exc), code=exc.code if isinstance(exc, topics.CommandError) else "error")
        return answer

    def _run_command(self, verb: str, body: dict[str, Any]) -> Any:
        if verb == "status":
            return self.status()
        if verb == "add_camera":
            name, source = check_name(str(body.get("name", "")), "camera name"), str(body.get("source", ""))
            if not source:
                raise ValueError("add_camera needs 'name' and 'source'")
            self.add_camera(name, source)
            return {"camera": name}
        if verb == "remove_camera":
            name = str(body.get("name", ""))
            if name not in self.cameras:
                raise ValueError(f"no camera named {name!r}")
            self.engine.remove_source(name)
            self.cameras.pop(name, None)
            self._announce()
            return {"camera": name}
        if verb == "snapshot":
            return self.snapshot(str(body.get("name", "")))
        raise ValueError(f"unknown command {verb!r} (known: {', '.join(topics.VERBS)})")

    def snapshot(self, name: str) -> dict[str, Any]:
        """The camera's latest analysed frame as a JPEG (base64) with every face blurred; refused unless
        snapshots are enabled on this node."""
        if not self.config.snapshots:
            raise topics.CommandError(
                topics.SNAPSHOTS_DISABLED, "snapshots disabled on this node (enable with --snapshots)"
            )
        latest = self.engine.latest(name)
        if latest is None:
            raise topics.CommandError(topics.NO_FRAME, f"no analysed frame from camera {name!r} yet")
        from maskwatch.core.jpeg import encode_jpeg
        from maskwatch.detection.privacy import blur_faces, blur_regions

        boxes = blur_regions(latest.result)  # privacy zones were blacked out before the frame was analysed
        jpeg = encode_jpeg(blur_faces(latest.frame.image, latest.result), 80)
        return {
            "camera": name,
            "faces_blurred": len(boxes),
            "frame": latest.event.frame,
            "jpeg_base64": base64.b64encode(jpeg).decode(),
        }

    def status(self) -> dict[str, Any]:
        stats = {}
        for name, live in self.engine.source_stats().items():
            stats[name] = {
                "state": live.state,
                "frames": live.frames,
                "dropped": live.dropped,
                "fps": live.analysed_fps,
                "people_now": live.people_now,
            }
        return {
            "node": self.node,
            "cameras": stats,
            "outbox": self.outbox.status().to_wire(),
            "connected": self.publisher.connected.is_set(),
            "published": self.publisher.published,
            "republished": self.publisher.republished,
            "acknowledged": self.publisher.acknowledged,
            "outstanding": self.publisher.outstanding,
            "connections": self.publisher.connections,
        }

    def _announce(self) -> None:
        if self.publisher.connected.is_set():
            self.publisher.publish_direct(topics.node_status(self.node), self._status_payload("online"), retain=True)

    # -- cameras and life cycle ---------------------------------------------------------------------------

    def add_camera(self, name: str, source: str, settings: CameraSettings | None = None) -> None:
        """Run a camera: its own settings (those of the config file by default) over the engine's defaults."""
        check_name(name, "camera name")
        own = settings if settings is not None else self.config.cameras.get(name)
        spec = self.config.engine.source(source, name, own)
        if not spec.loop:
            start = self._start_frame(name, source)
            if start is None:
                return  # a file analysed to its end before
            spec.start_frame = start
        self.engine.add_source(spec)
        self.cameras[name] = source
        self._announce()

    def _start_frame(self, name: str, source: str) -> int | None:
        """Where a video file starts (resumed where this node stopped); None when it is done already."""
        if self.files is None:
            return 0
        start = self.files.open(name, source)
        if start is not None and not getattr(self.engine.config, "emit_frames", True):
            try:  # the frame events that say how far each file got
                self.engine.config.emit_frames = True
            except Exception:  # a frozen configuration: files start from their beginning
                log.warning("this engine does not send frame events: %s starts from its beginning", source)
                self.files = None
                return 0
        return start

    def run(self, cameras: Sequence[tuple[str, str]] | None = None, *, drain_timeout: float | None = None) -> int:
        """Run until stopped (:meth:`stop`) or, when every camera is a file, until the control room has
        acknowledged the last event. Returns the number of messages left in the outbox. Raises
        :class:`LoginRefusedError` when every camera is a file and the broker refuses this node's credentials
        (with a live camera the node keeps trying: its events wait in the outbox)."""
        cameras = list(cameras if cameras is not None else self.config.camera_sources())
        files_only = self.all_files(cameras)
        subscription = self.engine.events()
        pump = threading.Thread(target=self._pump, args=(subscription,), name="maskwatch-agent-events", daemon=True)
        pump.start()
        for name, source in cameras:
            self.add_camera(name, source)
        self.publisher.start()
        commands = threading.Thread(target=self._command_loop, name="maskwatch-agent-cmd", daemon=True)
        commands.start()
        self.engine.start()
        log.info(
            "node %s: %d camera(s), %d message(s) waiting in the outbox, broker %s",
            self.node,
            len(cameras),
            len(self.outbox),
            self.publisher.broker,
        )

        def refused() -> bool:
            return files_only and self.publisher.login_refused

        last_status = time.monotonic()
        while not self._stop.is_set() and not refused():
            if self._events_done.wait(0.5):
                break
            if time.monotonic() - last_status > self.config.status_every:
                last_status = time.monotonic()
                self._announce()
        self.engine.stop(timeout=5.0)
        self._events_done.wait(10.0)
        if not self._stop.is_set() and not refused():  # every source ended: wait until the control room has it
            log.info(
                "node %s: sources done; waiting for the control room to acknowledge %d message(s)",
                self.node,
                len(self.outbox),
            )
            deadline = None if drain_timeout is None else time.monotonic() + drain_timeout
            while not self._stop.is_set() and not self.publisher.drained() and not refused():
                if deadline is not None and time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        self._stop.set()
        self.publisher.stop(final=(topics.node_status(self.node), self._status_payload("offline", "stopped"), True))
        left = len(self.outbox)
        self.outbox.close()
        if refused():
            raise LoginRefusedError(
                f"the broker {self.publisher.broker} refused this node's login ({self.publisher.refused}); "
                f"{left} message(s) wait in the outbox for the next start"
            )
        return left

    def stop(self) -> None:
        """Stop now (SIGTERM): the engine ends open tracks; what is not acknowledged stays in the outbox."""
        self._stop.set()

    @staticmethod
    def all_files(cameras: Sequence[tuple[str, str]]) -> bool:
        return bool(cameras) and all(_is_file_source(source) for _, source in cameras)
