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
``alerts``        rules on what is stored, webhooks                      evaluation thread, webhook thread
``cameras``       cameras in the engine and the database together        run after each lease round
``jobs``          batch jobs (their own engines)                         a thread per job
``inference``     ``POST /infer``'s pool and queue limit                 pool threads on demand
``spool``         this worker's cameras' events on disk until stored     replay thread
``pipeline``      the one entry point for engine events                  the engine subscription's thread
``coordinator``   leases: who runs which camera, who evaluates alerts    lease thread (every 3 s)
``live``          live state, SSE hub, the 1 s live loop                 live thread
``retention``     purge of old data                                      purge thread
``dead_letters``  what cannot be stored, kept with the reason            -
``fleet``         MQTT ingest of edge nodes (``serve --mqtt``), or None  paho's thread, ack and state threads
``commander``     asks edge nodes (a remote camera's frame), or None     paho's thread
``camera_view``   one view of every camera, local and remote             -
================  =====================================================  ===================================

Data flow (top-down): the stream engine publishes typed events -> :class:`EventPipeline` (lease check,
metrics, live state, the spool, storage via the ingestor, SSE hub). The fleet's MQTT ingest feeds the same
pipeline. The elected worker's alert engine reads the database.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from maskwatch.core.credentials import env_secret, write_secret
from maskwatch.core.names import MAX_QUALIFIED_NAME
from maskwatch.core.timeutil import site_zone
from maskwatch.runtime.onnx_backend import physical_cores
from maskwatch.service.alerts import CAMERA_OFFLINE_RULE, FLEET_RULES, AlertEngine, WebhookSender
from maskwatch.service.auth import Auth, RateLimiter, check_token_strength
from maskwatch.service.camera_view import CameraView
from maskwatch.service.cameras import CameraManager
from maskwatch.service.dead_letters import DeadLetters
from maskwatch.service.inference import InferenceGate
from maskwatch.service.jobs import JobLimits, JobManager
from maskwatch.service.live import Hub, Live, LiveState
from maskwatch.service.media import Media
from maskwatch.service.metrics import Metrics
from maskwatch.service.pipeline import EventPipeline
from maskwatch.service.retention import Retention
from maskwatch.service.settings import ServiceSettings
from maskwatch.service.spool import Spool
from maskwatch.service.storage import Storage
from maskwatch.service.storage.ingest import Ingestor
from maskwatch.service.storage.models import Camera
from maskwatch.service.workers import Coordinator, DataDirLock, worker_id
from maskwatch.stream import StreamEngine

if TYPE_CHECKING:
    from maskwatch.detection.pipeline import MaskDetector
    from maskwatch.fleet.commands import FleetCommander
    from maskwatch.fleet.ingest import FleetIngest, FleetState
    from maskwatch.fleet.publisher import TLSOptions
    from maskwatch.stream.sources import CaptureFactory

__all__ = ["FleetLink", "Service", "demo_images"]

log = logging.getLogger("maskwatch.service")


@dataclass(frozen=True)
class FleetLink:
    """MQTT ingest of the fleet's edge nodes (``serve --mqtt URL [--mqtt-id ID]``): ``url`` is
    ``mqtt://USER@HOST:PORT`` (``mqtts://`` for TLS; ``?shared=1``: one worker of several on the shared
    subscription); ``password`` (``$MASKWATCH_MQTT_PASSWORD`` or ``_FILE``) replaces one in the URL. The fleet
    state goes to ``DATA_DIR/fleet.json`` every ``state_every`` seconds."""

    url: str
    client_id: str | None = None
    password: str | None = field(default=None, repr=False)
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
        self.engine_config = s.engine

        self.zone = site_zone(s.site.timezone)
        self.worker = worker_id(s.data_dir, s.workers.id)
        self.data_lock = DataDirLock(s.data_dir)
        self.metrics = Metrics(max_cameras=s.limits.metric_cameras)
        self.storage = Storage(s.db_url)
        preset = admin_token if admin_token is not None else env_secret("MASKWATCH_ADMIN_TOKEN")
        if preset:
            check_token_strength(preset, s.auth.min_token_bits)  # ValueError: refused before anything starts
        limiter = RateLimiter(s.limits.rate_per_minute, s.limits.rate_burst)
        self.auth = Auth(
            self.storage.tokens,
            limiter,
            s.auth.session_hours,
            admin_token=preset,
            failures=RateLimiter(s.auth.failed_per_minute, s.auth.failed_burst),
            token_days=s.auth.token_days,
            cache_s=s.auth.cache_s,
            outage_grace_s=s.auth.outage_grace_s,
        )
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
            on_done=self._stored,
            zone=self.zone,
            on_reject=self.dead_letters.record_event,
        )
        self.spool: Spool | None = None
        if s.spool.enabled:
            self.spool = Spool(
                s.data_dir / "spool.db",
                self.ingestor,
                budget_bytes=int(s.spool.budget_mb * 2**20),
                journal=s.spool.journal,
            )
        self.hub = Hub()
        self.live_state = LiveState()
        sender = WebhookSender(
            self.storage.alerts,
            timeout=s.alerts.webhook_timeout,
            attempts=s.alerts.webhook_attempts,
            backoff=s.alerts.webhook_backoff,
            on_attempt=lambda ok: self.metrics.webhooks.labels(str(ok).lower()).inc(),
            policy=s.security.webhooks.policy,  # read at every send
        )
        w = s.workers
        cameras_lock = threading.RLock()  # lease rounds and camera changes through the API, one at a time
        self.coordinator = Coordinator(
            self.storage.leases,
            self.storage.cameras,
            self.worker,
            ttl=w.lease_ttl_s,
            renew_every=w.renew_every_s,
            dead_after=w.dead_after_s,
            run_cameras=lambda owned: self.cameras.reconcile(owned),
            on_workers=self._workers_seen,
            lock=cameras_lock,
        )
        self.alerts = AlertEngine(
            self.storage.alerts,
            cameras=self.storage.cameras,
            events=self.storage.events,
            stats=self.storage.stats,
            publish=self.hub.publish,
            sender=sender,
            evaluate_every=s.alerts.evaluate_every,
            on_change=self.metrics.alerts_firing.set,
            leader=lambda: self.coordinator.leader,
            zone=self.zone,
        )
        demo_folder = demo_images(s)
        self.cameras = CameraManager(
            self.storage.cameras,
            self.engine,
            self.live_state,
            config=s.engine,
            demo=(s.demo.name, s.demo.seconds_per_image),
            policy=s.security.sources.policy(),
            trusted=[c.url for c in s.cameras] + ([str(demo_folder.resolve())] if demo_folder else []),
            leases=self.coordinator,
            lock=cameras_lock,
        )
        self.jobs = JobManager(
            self.storage.jobs,
            detector,
            self.engine_config,
            s.data_dir / "jobs",
            max_running=s.jobs.max_running,
            keep_events=s.jobs.keep_events,
            limits=JobLimits(
                archive_members=s.limits.archive_members,
                archive_bytes=s.limits.archive_bytes,
                archive_ratio=s.limits.archive_ratio,
                image_pixels=s.limits.upload_pixels,  # the same limit as POST /infer
                frame_pixels=s.limits.frame_pixels,
                max_queued=s.jobs.max_queued,
                max_queued_bytes=s.jobs.max_queued_bytes,
            ),
            owner=self.worker,
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
            hub=self.hub,
            spool=self.spool,
            admit=self.coordinator.admit,
            journal=s.data_dir / "journal.jsonl" if s.server.journal else None,
        )
        self.live = Live(
            self.engine,
            self.live_state,
            self.hub,
            self.metrics,
            firing=lambda: self.alerts.firing,
            ingest=self.ingestor,
            streams_per_token=s.limits.streams_per_token,
            stored=self.storage.cameras.statuses,
        )
        self.retention = Retention(self.storage, self.media, self.jobs, s.retention)
        self.fleet: FleetIngest | None = None if fleet is None else self._fleet(fleet)
        self.commander: FleetCommander | None = None if fleet is None else self._commander(fleet)
        self.camera_view = CameraView(
            self.cameras,
            self.live,
            self.storage.stats,
            fleet=self.fleet_state,
            commander=self.commander,
            zone=self.zone,
            owners=lambda: self.coordinator.owners,
        )

    def fleet_state(self) -> FleetState | None:
        """The fleet as this worker's MQTT ingest sees it now; None without MQTT ingest."""
        return None if self.fleet is None else self.fleet.state()

    def _commander(self, link: FleetLink) -> FleetCommander:
        import socket

        from maskwatch.fleet.commands import FleetCommander
        from maskwatch.fleet.ingest import parse_ingest_url

        broker, _ = parse_ingest_url(link.url)
        ingest_id = link.client_id or f"maskwatch-ingest-{socket.gethostname()}"
        return FleetCommander(broker, client_id=f"{ingest_id}-cmd", tls=link.tls)

    def _workers_seen(self, alive: set[str]) -> None:
        """After each lease round: jobs of workers gone for ``workers.dead_after_s`` are interrupted."""
        self.jobs.recover(alive)

    def _stored(self, events: list[object]) -> None:
        """The ingestor finished with ``events``: the spool forgets them."""
        if self.spool is not None:
            self.spool.done(events)

    def _fleet(self, link: FleetLink) -> FleetIngest:
        import socket

        from maskwatch.fleet.ingest import FleetIngest, parse_ingest_url
        from maskwatch.fleet.validation import RemoteLimits

        broker, shared = parse_ingest_url(link.url)
        if link.password:
            broker = replace(broker, password=link.password)
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
            limits=RemoteLimits(
                max_nodes=self.settings.limits.fleet_nodes,
                max_cameras_per_node=self.settings.limits.fleet_cameras_per_node,
                future_s=self.settings.limits.remote_future_s,
                past_s=self.settings.limits.remote_past_s,
            ),
        )

    # -- life cycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Storage first, then what reads it at start, then the flow of events from the inside out: the
        writer, the spool's replay, the pipeline's subscription, this worker's leases (its cameras join the
        engine), the engine, alerts and the loops; MQTT ingest last (remote events arrive once everything
        they reach runs)."""
        if self.stopped:
            raise RuntimeError("a stopped service cannot start again: build a new one")
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_lock.acquire()
        try:
            self.storage.start()
            self.auth.start()
            if self.auth.generated_admin_token:  # the first start: to a file only the service user reads
                write_secret(s.admin_token_path, self.auth.generated_admin_token + "\n")
            self.storage.alerts.add_missing_rules([rule.model_dump() for rule in s.alerts.rules], time.time())
            self.cameras.seed(s.cameras)
            self._seed_demo()

            self.ingestor.start()
            if self.spool is not None:
                self.spool.start()  # what the last run left on disk is stored first
            self.pipeline.start(self.engine)  # subscribes before the engine starts: nothing is missed
            self.coordinator.start()  # a first round: this worker's cameras, its previous run's jobs
            self.engine.start()
            self.alerts.ensure_rule(CAMERA_OFFLINE_RULE)
            self.alerts.start()
            self.retention.start()
            self.live.start()
            if self.fleet is not None:
                for rule in FLEET_RULES:
                    self.alerts.ensure_rule(rule)
                self.fleet.start()
            if self.commander is not None:
                self.commander.start()
        except BaseException:
            self.data_lock.release()
            raise
        self.started = True
        log.info("maskwatch service started (worker %s, database %s)", self.worker, self.storage.display_url)

    def stop(self, timeout: float = 10.0) -> bool:
        """Graceful, in the reverse order: MQTT ingest stops taking messages, the loops end, the engine ends
        open tracks and flushes its last buckets, those events are stored (what cannot be stays in the
        spool), this worker's leases are given up (other workers take its cameras at once), then everything
        closes. True when every event reached the database."""
        if not self.started:
            return True
        if self.commander is not None:
            self.commander.stop()
        if self.fleet is not None:
            self.fleet.stop(timeout=2.0)
        self.live.stop()
        self.retention.stop()
        self.inference.stop()
        self.jobs.stop()
        self.coordinator.pause()  # no more rounds: the cameras stay as they are while they stop
        self.engine.stop(timeout=min(5.0, timeout))
        self.pipeline.stop(min(5.0, timeout))
        stored = self.ingestor.stop(timeout)
        if self.spool is not None:
            self.spool.stop()
        self.alerts.stop()
        self.coordinator.stop(release=True)
        self.auth.stop()
        self.storage.stop()
        self.data_lock.release()
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
