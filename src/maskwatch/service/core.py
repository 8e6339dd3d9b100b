"""The composition root: :class:`Service` builds every component of the monitoring service in its
constructor (typed attributes, nothing running yet), starts them in dependency order and stops them in the
reverse order. It holds no logic of its own; each component does one job:

================  =====================================================  ===================================
attribute         job                                                    runs
================  =====================================================  ===================================
``storage``       the database and its repositories (all SQL)            start: migrate; stop: close pool
``auth``          tokens, sessions, roles, rate limit, last-used times   start: admin token, usage writer
``metrics``       Prometheus metrics of this instance                    -
``engine``        the stream engine (cameras -> typed events)            its own threads
``ingestor``      buffered, idempotent event writes                      writer thread
``media``         snapshots (store, serve, delete) and the blur policy   -
``alerts``        rules on the event flow, webhooks                      evaluation thread, webhook thread
``cameras``       cameras in the engine and the database together        resumed at start
``jobs``          batch jobs (their own engines)                         a thread per job
``inference``     ``POST /infer``'s pool and queue limit                 pool threads on demand
``pipeline``      the one entry point for engine events                  the engine subscription's thread
``live``          live state, SSE hub, the 1 s live loop                 live thread
``retention``     purge of old data                                      purge thread
``dead_letters``  what cannot be stored, kept with the reason            -
``fleet``         MQTT ingest of edge nodes (``serve --mqtt``), or None  paho's thread, ack and state threads
================  =====================================================  ===================================

Data flow (top-down): the stream engine publishes typed events -> :class:`EventPipeline` (metrics, live
state, storage via the ingestor, alerts, SSE hub). The fleet's MQTT ingest feeds the same pipeline.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from maskwatch.core.names import MAX_QUALIFIED_NAME
from maskwatch.runtime.onnx_backend import physical_cores
from maskwatch.service.alerts import FLEET_RULES, AlertEngine, WebhookSender
from maskwatch.service.auth import Auth, RateLimiter
from maskwatch.service.cameras import CameraManager
from maskwatch.service.dead_letters import DeadLetters
from maskwatch.service.inference import InferenceGate
from maskwatch.service.jobs import JobManager
from maskwatch.service.live import Hub, Live, LiveState
from maskwatch.service.media import Media
from maskwatch.service.metrics import Metrics
from maskwatch.service.pipeline import EventPipeline
from maskwatch.service.retention import Retention
from maskwatch.service.settings import ServiceSettings
from maskwatch.service.storage import Storage
from maskwatch.service.storage.ingest import Ingestor
from maskwatch.service.storage.models import Camera
from maskwatch.stream import EngineConfig, StreamEngine

if TYPE_CHECKING:
    from maskwatch.detection.pipeline import MaskDetector
    from maskwatch.fleet.ingest import FleetIngest
    from maskwatch.fleet.publisher import TLSOptions
    from maskwatch.stream.sources import CaptureFactory

__all__ = ["FleetLink", "Service", "demo_images"]

log = logging.getLogger("maskwatch.service")


@dataclass(frozen=True)
class FleetLink:
    """MQTT ingest of the fleet's edge nodes (``serve --mqtt URL [--mqtt-id ID]``): ``url`` is
    ``mqtt://USER:PASS@HOST:PORT`` (``mqtts://`` for TLS; ``?shared=1``: one worker of several on the shared
    subscription). The fleet state goes to ``DATA_DIR/fleet.json`` every ``state_every`` seconds."""

    url: str
    client_id: str | None = None
    tls: TLSOptions | None = None
    state_every: float = 2.0


def demo_images(settings: ServiceSettings) -> Path | None:
    """The demo camera's folder of still images (the shared scene images by default), played by the engine
    as a slow, tracked slideshow (``SourceSpec(realtime=True, loop=True, hold=...)``). None when the demo is
    off or the folder is missing."""
    demo = settings.demo
    if demo.enabled is False:
        return None
    if demo.images:
        folder = Path(demo.images)
    else:
        from maskwatch.paths import shared_data_dir

        folder = shared_data_dir() / "scenes" / "images"
    if not folder.is_dir():
        if demo.enabled:
            log.warning("demo camera: no images at %s", folder)
        return None
    from maskwatch.data.images import has_image_extension

    if not any(has_image_extension(p) for p in folder.iterdir()):
        return None
    return folder


def engine_config(settings: ServiceSettings) -> EngineConfig:
    """The stream engine's settings from the service's (``engine`` and ``privacy`` sections)."""
    e, privacy = settings.engine, settings.privacy
    return EngineConfig(
        stats_interval=e.stats_interval,
        classify_every=e.classify_every,
        video_preset=e.video_preset,
        min_track_frames=e.min_track_frames,
        stall_timeout=e.stall_timeout,
        give_up_after=e.give_up_after,
        backoff=e.backoff,
        max_backoff=e.max_backoff,
        snapshots=privacy.snapshots,
        snapshot_blur=privacy.blur_faces,  # unblurred only when an admin turned blurring off
    )


class Service:
    """Every component behind the API, wired. ``detector`` and ``capture_factory`` let tests use fake models
    and cameras; ``admin_token`` presets the admin token (default ``$MASKWATCH_ADMIN_TOKEN``); ``fleet``
    adds MQTT ingest. Loads the model (unless given one); starts nothing until :meth:`start`."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        detector: MaskDetector | None = None,
        capture_factory: CaptureFactory | None = None,
        admin_token: str | None = None,
        fleet: FleetLink | None = None,
    ) -> None:
        s = self.settings = settings
        self.started = False
        self.stopped = False  # components run once: a stopped service is not started again
        if detector is None:
            from maskwatch.detection.pipeline import MaskDetector

            detector = MaskDetector.load(
                s.model.path, backend=s.model.backend, preset=s.model.infer_preset, threads=s.model.threads
            )
        self.detector: MaskDetector = detector
        self.engine_config = engine_config(s)

        self.metrics = Metrics()
        self.storage = Storage(s.db_url)
        preset = admin_token if admin_token is not None else os.environ.get("MASKWATCH_ADMIN_TOKEN")
        limiter = RateLimiter(s.limits.rate_per_minute, s.limits.rate_burst)
        self.auth = Auth(self.storage.tokens, limiter, s.auth.session_hours, admin_token=preset)
        self.media = Media(s.data_dir / "snapshots", s.privacy)
        self.engine = StreamEngine(
            detector,
            self.engine_config,
            capture_factory=capture_factory,
            snapshot_sink=self.media.store if s.privacy.snapshots else None,
        )
        self.dead_letters = DeadLetters(self.storage.dead_letters, self.metrics)
        self.ingestor = Ingestor(
            self.storage.sessions,
            capacity=s.limits.ingest_buffer,
            on_error=lambda _exc: self.metrics.ingest_errors.inc(),
            on_reject=self.dead_letters.record_event,
        )
        self.hub = Hub()
        self.live_state = LiveState()
        sender = WebhookSender(
            self.storage.alerts,
            timeout=s.alerts.webhook_timeout,
            attempts=s.alerts.webhook_attempts,
            backoff=s.alerts.webhook_backoff,
            on_attempt=lambda ok: self.metrics.webhooks.labels(str(ok).lower()).inc(),
        )
        self.alerts = AlertEngine(
            self.storage.alerts,
            publish=self.hub.publish,
            sender=sender,
            evaluate_every=s.alerts.evaluate_every,
            on_change=self.metrics.alerts_firing.set,
        )
        self.cameras = CameraManager(
            self.storage.cameras,
            self.engine,
            self.live_state,
            on_removed=self.alerts.forget_camera,
            hold=s.demo.seconds_per_image,
        )
        self.jobs = JobManager(
            self.storage.jobs,
            detector,
            self.engine_config,
            s.data_dir / "jobs",
            max_running=s.jobs.max_running,
            keep_events=s.jobs.keep_events,
        )
        self.inference = InferenceGate(
            detector.configured(scales=s.model.infer_preset),
            self.metrics,
            # each analysis runs on model.threads cores already: more at once takes the CPU from the cameras
            concurrency=s.limits.infer_concurrency or max(1, physical_cores() // s.model.threads),
            queue=s.limits.infer_queue,
            max_pixels=s.limits.upload_pixels,
            timeout_s=s.limits.request_timeout_s,
        )
        self.pipeline = EventPipeline(
            metrics=self.metrics,
            live=self.live_state,
            ingestor=self.ingestor,
            media=self.media,
            alerts=self.alerts,
            hub=self.hub,
        )
        self.live = Live(
            self.engine,
            self.live_state,
            self.hub,
            self.metrics,
            firing=lambda: self.alerts.firing,
            ingest=self.ingestor,
        )
        self.retention = Retention(self.storage, self.media, self.jobs, s.retention)
        self.fleet: FleetIngest | None = None if fleet is None else self._fleet(fleet)

    def _fleet(self, link: FleetLink) -> FleetIngest:
        import socket

        from maskwatch.fleet.ingest import FleetIngest, parse_ingest_url

        broker, shared = parse_ingest_url(link.url)
        client_id = link.client_id or f"maskwatch-ingest-{socket.gethostname()}"
        return FleetIngest(
            functools.partial(self.pipeline.handle_event, block=True),  # a full buffer slows ingest, never drops
            broker,
            client_id=client_id,
            progress=self.ingestor,
            tls=link.tls,
            shared=shared,
            on_node=self.alerts.observe_node,
            dead_letter=self.dead_letters.record_message,
            on_broker=functools.partial(self.alerts.observe_broker, client_id[:MAX_QUALIFIED_NAME]),
            on_outbox=self.alerts.observe_outbox,
            state_file=self.settings.data_dir / "fleet.json",
            state_every=link.state_every,
        )

    # -- life cycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Storage first, then what reads it at start, then the flow of events from the inside out: the
        writer, the pipeline's subscription, the engine and its cameras, alerts and the loops; MQTT ingest
        last (remote events arrive once everything they reach runs)."""
        if self.stopped:
            raise RuntimeError("a stopped service cannot start again: build a new one")
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.storage.start()
        self.auth.start()
        self.storage.alerts.add_missing_rules([rule.model_dump() for rule in s.alerts.rules], time.time())
        self.jobs.recover()
        self.cameras.seed(s.cameras)
        self._seed_demo()

        self.ingestor.start()
        self.pipeline.start(self.engine)  # subscribes before the engine starts: nothing is missed
        self.engine.start()
        self.cameras.resume()
        self.alerts.start()
        self.retention.start()
        self.live.start()
        if self.fleet is not None:
            for rule in FLEET_RULES:
                self.alerts.ensure_rule(rule)
            self.fleet.start()
        self.started = True
        log.info("maskwatch service started (database %s)", self.storage.display_url)

    def stop(self, timeout: float = 10.0) -> bool:
        """Graceful, in the reverse order: MQTT ingest stops taking messages, the loops end, the engine ends
        open tracks and flushes its last buckets, those events are stored, then everything closes. True when
        every event reached the database."""
        if not self.started:
            return True
        if self.fleet is not None:
            self.fleet.stop(timeout=2.0)
        self.live.stop()
        self.retention.stop()
        self.inference.stop()
        self.jobs.stop()
        self.engine.stop(timeout=min(5.0, timeout))
        self.pipeline.stop(min(5.0, timeout))
        stored = self.ingestor.stop(timeout)
        self.alerts.stop()
        self.auth.stop()
        self.storage.stop()
        self.started, self.stopped = False, True
        log.info("maskwatch service stopped%s", "" if stored else " (some events were not stored)")
        return stored

    # -- start-up helpers ------------------------------------------------------------------------------

    def _seed_demo(self) -> None:
        """Add the demo camera once (a slideshow of the scene images); a demo camera of an older version
        (a generated ``demo.mp4`` in the data dir) is switched to the slideshow."""
        marker = self.settings.data_dir / "demo.seeded"
        folder = demo_images(self.settings)
        if folder is None:
            return
        demo, now = self.settings.demo, time.time()
        camera = self.storage.cameras.get(demo.name)
        if camera is not None and camera.url == str((self.settings.data_dir / "demo.mp4").resolve()):
            camera.url, camera.target_fps, camera.updated_ts = str(folder.resolve()), demo.fps, now
            self.storage.cameras.save(camera, ("url", "target_fps", "updated_ts"))
        elif camera is None and not marker.exists():
            self.storage.cameras.add(
                Camera(
                    name=demo.name,
                    url=str(folder.resolve()),
                    enabled=True,
                    preset=None,
                    target_fps=demo.fps,
                    realtime=True,
                    loop=True,
                    created_ts=now,
                    updated_ts=now,
                )
            )
        marker.write_text("the demo camera was added once; delete this file to add it again\n")
