"""The running service: database, models, stream engine, ingest, alerts, live state, jobs.

Data flow (top-down): the stream engine publishes typed events -> one subscription thread ->
:meth:`Service.handle_event` (metrics, live state, storage via :class:`Ingestor`, alerts, SSE hub). Anything
else that produces engine events (the fleet's MQTT ingest) calls :meth:`Service.handle_event` too.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, text, update

from maskwatch.runtime.onnx_backend import physical_cores
from maskwatch.service.alerts import AlertEngine, WebhookSender
from maskwatch.service.auth import Auth, RateLimiter, ensure_admin
from maskwatch.service.cameras import CameraManager
from maskwatch.service.jobs import JobManager
from maskwatch.service.live import SSE_TYPES, Hub, LiveState, event_for_client
from maskwatch.service.metrics import Metrics
from maskwatch.service.settings import ServiceSettings
from maskwatch.service.storage.db import migrate, open_db, session_factory
from maskwatch.service.storage.ingest import STORED_TYPES, Ingestor
from maskwatch.service.storage.models import (
    AlertRule,
    AuditEntry,
    Camera,
    Ingested,
    PersonEvent,
    StatsBucket,
    StatsRollup,
    WebhookDelivery,
)
from maskwatch.service.storage.models import Session as SessionRow

if TYPE_CHECKING:
    from maskwatch.fleet.ingest import FleetIngest

log = logging.getLogger("maskwatch.service")

#: what ``engine.journal`` keeps of this service's own cameras (what it stores, and their states)
JOURNAL_TYPES = ("track_ended", "stats", "source_status")


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
    """Everything behind the API. ``detector`` and ``capture_factory`` let tests use fake models/cameras."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        detector: Any = None,
        capture_factory: Any = None,
        admin_token: str | None = None,
    ) -> None:
        self.settings = settings
        self._detector = detector
        self._capture_factory = capture_factory
        self._admin_preset = admin_token if admin_token is not None else os.environ.get("MASKWATCH_ADMIN_TOKEN")
        self.generated_admin_token: str | None = None
        self.started = False
        self.stopping = threading.Event()
        self.metrics = Metrics()
        self.hub = Hub()
        self.live = LiveState()
        self._threads: list[threading.Thread] = []
        self.started_at = time.time()
        self.fleet: FleetIngest | None = None  # MQTT ingest of edge nodes (``serve --mqtt``), set by its attach()

    # -- life cycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = open_db(s.db_url)
        migrate(self.db)
        self.sessions = session_factory(self.db)
        self.generated_admin_token = ensure_admin(self.sessions, self._admin_preset)
        self.auth = Auth(
            self.sessions, RateLimiter(s.limits.rate_per_minute, s.limits.rate_burst), s.auth.session_hours
        )

        from maskwatch.stream import EngineConfig, StreamEngine

        if self._detector is None:
            from maskwatch.detection.pipeline import MaskDetector

            self._detector = MaskDetector.load(
                s.model.path, backend=s.model.backend, preset=s.model.infer_preset, threads=s.model.threads
            )
        self.detector = self._detector
        self.infer_detector = self.detector.configured(scales=s.model.infer_preset)
        e = s.engine
        self.engine_config = EngineConfig(
            stats_interval=e.stats_interval,
            classify_every=e.classify_every,
            video_preset=e.video_preset,
            min_track_frames=e.min_track_frames,
            stall_timeout=e.stall_timeout,
            give_up_after=e.give_up_after,
            backoff=e.backoff,
            max_backoff=e.max_backoff,
            snapshots=s.privacy.snapshots,
            snapshot_blur=s.privacy.blur_faces,  # unblurred only when an admin turned blurring off
        )
        self.snapshots_dir = s.data_dir / "snapshots"
        self.engine = StreamEngine(
            self.detector,
            self.engine_config,
            capture_factory=self._capture_factory,
            snapshot_sink=self.store_snapshot if s.privacy.snapshots else None,
        )
        self.ingestor = Ingestor(
            self.sessions, capacity=s.limits.ingest_buffer, on_error=lambda _exc: self.metrics.ingest_errors.inc()
        )
        sender = WebhookSender(
            self.sessions,
            timeout=s.alerts.webhook_timeout,
            attempts=s.alerts.webhook_attempts,
            backoff=s.alerts.webhook_backoff,
            on_attempt=lambda ok: self.metrics.webhooks.labels(str(ok).lower()).inc(),
        )
        self.alerts = AlertEngine(
            self.sessions,
            publish=self.hub.publish,
            sender=sender,
            evaluate_every=s.alerts.evaluate_every,
            on_change=lambda n: self.metrics.alerts_firing.set(n),
        )
        self.cameras = CameraManager(
            self.sessions, self.engine, self.live, on_removed=self.alerts.forget_camera, hold=s.demo.seconds_per_image
        )
        self.jobs = JobManager(
            self.sessions,
            self.detector,
            self.engine_config,
            s.data_dir / "jobs",
            max_running=s.jobs.max_running,
            keep_events=s.jobs.keep_events,
        )
        # each analysis runs on model.threads cores already: more at once takes the CPU from the cameras
        self.infer_concurrency = s.limits.infer_concurrency or max(1, physical_cores() // s.model.threads)
        self.infer_pool = ThreadPoolExecutor(self.infer_concurrency, thread_name_prefix="maskwatch-infer")
        self.infer_waiting = 0
        self._infer_lock = threading.Lock()

        self._seed_rules()
        self.jobs.recover()
        self.cameras.seed(s.cameras)
        self._seed_demo()

        subscription = self.engine.events()  # before start: nothing is missed
        self._pump = threading.Thread(target=self._consume, args=(subscription,), name="maskwatch-events", daemon=True)
        self._pump.start()
        self.ingestor.start()
        self.engine.start()
        self.cameras.resume()
        self.alerts.start()
        for target, name in ((self._purge_loop, "retention"), (self._live_loop, "live")):
            thread = threading.Thread(target=target, name=f"maskwatch-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.started = True
        log.info("maskwatch service started (database %s)", self.db.url.render_as_string(hide_password=True))

    def stop(self, timeout: float = 10.0) -> bool:
        """Graceful: the engine ends open tracks and flushes its last buckets, those events are stored, then
        everything closes. True when every event reached the database."""
        if not self.started:
            return True
        self.stopping.set()
        self.jobs.stop()
        self.engine.stop(timeout=min(5.0, timeout))
        self._pump.join(min(5.0, timeout))
        stored = self.ingestor.stop(timeout)
        self.alerts.stop()
        self.infer_pool.shutdown(wait=False, cancel_futures=True)
        for thread in self._threads:
            thread.join(1.0)
        self.db.dispose()
        self.started = False
        log.info("maskwatch service stopped%s", "" if stored else " (some events were not stored)")
        return stored

    # -- the one entry point for engine events ----------------------------------------------------------

    def handle_event(self, event: Any, *, block: bool = False) -> bool:
        """Take one engine event (this service's engine, or a remote one): metrics, live state, storage
        (buffered, idempotent), alerts, and the dashboard's live stream. False when an event to store was
        not queued (buffer full; with ``block``, which waits for room instead, only when stopping), so a
        producer that can resend (MQTT ingest) does not acknowledge it."""
        if not hasattr(event, "type"):
            from maskwatch.stream import parse_event

            event = parse_event(event)
        if event.type in ("frame", "summary"):
            return True
        self.metrics.observe(event)
        self.live.observe(event)
        queued = self.ingestor.ingest(event, block=block) or event.type not in STORED_TYPES
        if not queued and getattr(event, "snapshot", None):
            self.delete_snapshots([event.snapshot])  # its event was refused: no snapshot left without an event
        self.alerts.observe(event)
        if event.type in SSE_TYPES:
            self.hub.publish(event.type, event_for_client(event))
        return queued

    def _consume(self, subscription: Any) -> None:
        journal = None
        if self.settings.engine.journal:  # line-buffered: each event reaches the OS before it is handled
            journal = open(self.settings.data_dir / "journal.jsonl", "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        try:
            for event in subscription:
                try:
                    if journal is not None and event.type in JOURNAL_TYPES:
                        journal.write(event.to_json() + "\n")
                    self.handle_event(event)
                except Exception:
                    log.exception("event %s not handled", getattr(event, "type", "?"))
        finally:
            if journal is not None:
                journal.close()

    # -- start-up helpers ------------------------------------------------------------------------------

    def _seed_rules(self) -> None:
        now = time.time()
        with self.sessions() as s, s.begin():
            have = set(s.scalars(select(AlertRule.name)))
            for rule in self.settings.alerts.rules:
                if rule.name not in have:
                    s.add(AlertRule(**rule.model_dump(), created_ts=now, updated_ts=now))

    def _seed_demo(self) -> None:
        """Add the demo camera once (a slideshow of the scene images); a demo camera of an older version
        (a generated ``demo.mp4`` in the data dir) is switched to the slideshow."""
        marker = self.settings.data_dir / "demo.seeded"
        folder = demo_images(self.settings)
        if folder is None:
            return
        name, now = self.settings.demo.name, time.time()
        with self.sessions() as s, s.begin():
            camera = s.scalars(select(Camera).where(Camera.name == name)).first()
            if camera is not None and camera.url == str((self.settings.data_dir / "demo.mp4").resolve()):
                camera.url, camera.target_fps, camera.updated_ts = str(folder.resolve()), self.settings.demo.fps, now
            elif camera is None and not marker.exists():
                s.add(
                    Camera(
                        name=name,
                        url=str(folder.resolve()),
                        enabled=True,
                        preset=None,
                        target_fps=self.settings.demo.fps,
                        realtime=True,
                        loop=True,
                        created_ts=now,
                        updated_ts=now,
                    )
                )
        marker.write_text("the demo camera was added once; delete this file to add it again\n")

    # -- snapshots (privacy.snapshots) -----------------------------------------------------------------

    def store_snapshot(self, source: str, track_id: int, rgb: Any) -> str | None:
        """The engine's snapshot sink: a person's best view (every face blurred unless an admin turned
        blurring off) as a JPEG under ``DATA_DIR/snapshots/CAMERA/DAY/``; returns its path relative to
        the snapshots folder (kept in the event). Unblurred views are named ``*.unblurred.jpg``."""
        import cv2

        day = time.strftime("%Y%m%d", time.gmtime())
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in source)[:64] or "camera"
        blurred = self.engine_config.snapshot_blur
        name = f"{uuid.uuid4().hex}{'' if blurred else '.unblurred'}.jpg"
        rel = Path(safe) / day / name
        path = self.snapshots_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            return None
        path.write_bytes(data.tobytes())
        return rel.as_posix()

    def delete_snapshots(self, refs: list[str]) -> int:
        root = self.snapshots_dir.resolve()
        n = 0
        for ref in refs:
            path = (root / ref).resolve()
            if path.is_relative_to(root) and path.is_file():
                path.unlink(missing_ok=True)
                n += 1
        return n

    # -- background loops ------------------------------------------------------------------------------

    def purge(self, now: float | None = None) -> dict[str, int]:
        """Retention: delete what is older than its period; returns rows deleted per table."""
        now = time.time() if now is None else now
        r = self.settings.retention
        day = 86400.0
        plan = [
            (PersonEvent, PersonEvent.ts, r.events_days),
            (Ingested, Ingested.ts, r.buckets_days),
            (StatsBucket, StatsBucket.start_ts, r.buckets_days),
            (StatsRollup, StatsRollup.start_ts, r.rollups_days),
            (AuditEntry, AuditEntry.ts, r.audit_days),
            (WebhookDelivery, WebhookDelivery.ts, r.audit_days),
        ]
        counts: dict[str, int] = {}
        # snapshots go first: after retention.media_days, or with their events after events_days
        media_cutoff = now - min(r.media_days, r.events_days) * day
        with self.sessions() as s, s.begin():
            rows = s.execute(
                select(PersonEvent.id, PersonEvent.snapshot).where(
                    PersonEvent.snapshot.is_not(None), PersonEvent.ts < media_cutoff
                )
            ).all()
            counts["snapshots"] = self.delete_snapshots([ref for _, ref in rows])
            ids = [row_id for row_id, _ in rows]
            for i in range(0, len(ids), 500):
                s.execute(update(PersonEvent).where(PersonEvent.id.in_(ids[i : i + 500])).values(snapshot=None))
            for model, column, days in plan:
                result = s.execute(delete(model).where(column < now - days * day))
                counts[model.__tablename__] = max(0, result.rowcount or 0)
            s.execute(delete(SessionRow).where(SessionRow.expires_ts < now))
        counts["jobs"] = self.jobs.purge(now - r.events_days * day)  # with their event files
        return counts

    def _purge_loop(self) -> None:
        while not self.stopping.wait(min(60.0, self.settings.retention.purge_every_s)):
            if time.time() - getattr(self, "_last_purge", 0.0) < self.settings.retention.purge_every_s:
                continue
            self._last_purge = time.time()
            try:
                deleted = self.purge()
                if any(deleted.values()):
                    log.info("retention purge: %s", deleted)
            except Exception:
                log.exception("retention purge failed")

    def refresh_live(self) -> dict[str, Any]:
        """The engine's live figures (last 10 s) into the live state and the Prometheus gauges."""
        stats = self.engine.source_stats()
        self.live.apply_live(stats)
        self.metrics.observe_live(stats)
        return stats

    def now_snapshot(self) -> dict[str, Any]:
        """Each camera now (the engine's figures over the last 10 s): state, people in view, FPS, lag p95,
        compliance of its latest frame."""
        stats = self.refresh_live()
        cameras = {}
        for name, live in list(self.live.cameras.items()):
            source = stats.get(name)
            latest = self.engine.latest(name)
            compliance = None
            if latest is not None and time.time() - latest.event.time.timestamp() < 10:
                compliance = latest.event.compliance
            cameras[name] = {
                **live.to_dict(),
                "present": 0 if source is None else source.people_now,
                "lag_now": None if source is None else source.lag_p95,
                "fps_now": None if source is None else source.analysed_fps,
                "compliance_now": compliance,
            }
        return {
            "time": time.time(),
            "cameras": cameras,
            "alerts_firing": self.alerts.firing,
            "ingest_backlog": self.ingestor.backlog,
            "database_ok": self.ingestor.healthy,
        }

    def _live_loop(self) -> None:
        while not self.stopping.wait(1.0):
            try:
                self.metrics.ingest_backlog.set(self.ingestor.backlog)
                self.metrics.ingest_dropped.set(self.ingestor.dropped)
                if self.hub.clients:
                    self.hub.publish("live", self.now_snapshot())
                else:
                    self.refresh_live()
            except Exception:
                log.exception("live update failed")

    def database_ok(self) -> bool:
        try:
            with self.db.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False
