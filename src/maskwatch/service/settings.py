"""Every setting of ``maskwatch serve`` in one typed place.

Layers, later ones win (:class:`maskwatch.core.settings.RootSettings`): these defaults, the YAML file
(``--config serve.yaml``; the commented example is ``configs/serve.yaml``), environment variables
(``MASKWATCH_SERVE_<SECTION>__<KEY>``, and the short ``MASKWATCH_DB`` / ``MASKWATCH_DATA_DIR``), then CLI flags.
Unknown keys are an error with a "did you mean" hint, as in every maskwatch configuration.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from maskwatch.core.errors import ConfigError
from maskwatch.core.names import MAX_NAME, is_name
from maskwatch.core.netpolicy import NetPolicy, parse_allowed
from maskwatch.core.settings import RootSettings, Section
from maskwatch.stream.config import CameraSettings, EngineConfig

__all__ = [
    "AlertRuleConfig",
    "CameraConfig",
    "NetworkPolicy",
    "SecuritySettings",
    "ServiceSettings",
    "SourcePolicySettings",
    "load_settings",
]

ACTIVE_HOURS = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-4]):[0-5]\d$")


class ServerSettings(Section):
    host: str = "127.0.0.1"  # bind address (0.0.0.0 exposes the service on every interface)
    # append every track_ended, stats and source_status of this service's own cameras to DATA_DIR/journal.jsonl
    # before handling it: what the engine reported, for audits and the chaos soak (benchmarks/soak.py)
    journal: bool = False
    port: int = Field(8000, ge=0, le=65535)
    data_dir: str = "runs/serve"  # SQLite database, demo video, snapshots
    db: str | None = None  # SQLAlchemy URL; default sqlite:///DATA_DIR/maskwatch.db (WAL)
    log_level: str = "info"


class ModelSettings(Section):
    path: str | None = None  # classifier (.pt / .onnx); default: the bundled model ($MASKWATCH_MODEL)
    backend: str | None = None  # torch | onnx | onnx-int8; default: the runtime's choice
    infer_preset: Literal["fast", "balanced", "accurate"] = "accurate"  # POST /infer on still images
    threads: int = Field(2, ge=1, le=64)


class CameraConfig(CameraSettings):
    """A camera of the config file: its name and source, and its own settings (each unset one inherits
    ``engine.camera_defaults``: ``preset``, ``target_fps``, ``hold`` and ``track`` at every start,
    ``realtime`` and ``loop`` when the camera is created)."""

    name: str
    url: str  # rtsp://..., http(s)://..., webcam:N, a video file or a folder of images
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not is_name(value):  # names appear in URLs, metrics labels and MQTT topics
            raise ValueError(
                f"camera names are 1-{MAX_NAME} letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        return value


class DemoSettings(Section):
    enabled: bool | None = None  # None: when the images folder exists
    images: str | None = None  # default: $MASKWATCH_SHARED_DATA/scenes/images (../shared/data/scenes/images)
    name: str = "demo"
    seconds_per_image: float = Field(4.0, gt=0)  # each image's hold in the slideshow
    fps: float = Field(5.0, gt=0)  # slideshow frames per second


RuleKind = Literal[
    "compliance_below",
    "unmasked_person",
    "camera_offline",
    "camera_lagging",
    "node_offline",
    "outbox_dropped",
    "broker_lost",
]


class AlertRuleConfig(Section):
    name: str = Field(min_length=1, max_length=100)
    kind: RuleKind
    camera: str | None = None  # None: every camera
    threshold: float | None = None  # compliance_below: fraction 0..1; camera_lagging: seconds of lag (p95)
    window_s: float = Field(600.0, gt=0)  # compliance_below: sliding window; unmasked_person: stays firing
    min_people: int = Field(5, ge=1)  # compliance_below: no alert on fewer people in the window
    for_s: float = Field(60.0, ge=0)  # camera_offline / camera_lagging / node_offline: must hold this long
    hysteresis: float = Field(0.05, ge=0)  # resolve only when this far back on the good side
    cooldown_s: float = Field(300.0, ge=0)  # after resolving, no new alert of this rule+camera this long
    active_hours: str | None = None  # "08:00-18:00" in the site's time zone (site.timezone); None: always
    enabled: bool = True
    webhook_url: str | None = None
    webhook_secret: str | None = None  # HMAC-SHA256 key for the X-Maskwatch-Signature header

    @field_validator("active_hours")
    @classmethod
    def _hours(cls, value: str | None) -> str | None:
        if value is not None and not ACTIVE_HOURS.match(value):
            raise ValueError("active_hours is 'HH:MM-HH:MM', e.g. '08:00-18:00'")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s]+$", value):
            raise ValueError("webhook_url must be an http(s) URL")
        return value


class AlertSettings(Section):
    rules: list[AlertRuleConfig] = Field(default_factory=list)  # created at start when missing (by name)
    evaluate_every: float = Field(1.0, gt=0)  # seconds between rule evaluations
    webhook_timeout: float = Field(5.0, gt=0)
    webhook_attempts: int = Field(4, ge=1, le=20)  # tries per delivery
    webhook_backoff: float = Field(1.0, gt=0)  # first retry wait, doubling


class PrivacySettings(Section):
    blur_faces: bool = True  # every face in every streamed or stored image; False only for admins, audited
    snapshots: bool = False  # keep a snapshot (best view, faces blurred) per person event


class RetentionSettings(Section):
    events_days: float = Field(30.0, gt=0)  # person events (and their snapshots)
    media_days: float = Field(7.0, gt=0)  # snapshots (their events stay until events_days)
    buckets_days: float = Field(90.0, gt=0)  # raw stats buckets
    rollups_days: float = Field(730.0, gt=0)  # hourly / daily rollups
    audit_days: float = Field(365.0, gt=0)
    purge_every_s: float = Field(3600.0, gt=0)
    batch_rows: int = Field(2000, ge=1)  # rows deleted per transaction (writers wait for one batch at most)
    batch_pause_s: float = Field(0.02, ge=0)  # between batches: writers get the database


class LimitSettings(Section):
    upload_bytes: int = Field(10_000_000, ge=1024)  # POST /infer body
    upload_pixels: int = Field(40_000_000, ge=1024)  # decoded image size
    job_upload_bytes: int = Field(500_000_000, ge=1024)  # POST /jobs uploads
    body_bytes: int = Field(1_000_000, ge=1024)  # any other request body (JSON of cameras, rules, ...)
    # images analysed at once by /infer; None: physical cores // model.threads (each analysis already runs on
    # model.threads cores; on 2 cores a second one took the CPU from the cameras: /infer +40 %, camera FPS
    # -40 %, BENCHMARKS.md). Raise it to favour /infer over the cameras.
    infer_concurrency: int | None = Field(None, ge=1, le=64)
    infer_queue: int = Field(16, ge=0)  # more waiting than this: 503 at once
    request_timeout_s: float = Field(60.0, gt=0)
    rate_per_minute: float = Field(600.0, gt=0)  # requests per token
    rate_burst: int = Field(60, ge=1)
    ingest_buffer: int = Field(200_000, ge=100)  # events held in memory while the database is down
    # archives (POST /jobs zip uploads): checked from the zip's directory before anything is extracted
    archive_members: int = Field(10_000, ge=1)  # image members per archive
    archive_bytes: int = Field(2_000_000_000, ge=1024)  # their total size once extracted
    archive_ratio: float = Field(100.0, ge=1)  # per member: extracted size / compressed size (zip bombs)
    frame_pixels: int = Field(33_177_600, ge=1024)  # a video's frame size (8K UHD), checked before decoding
    streams_per_token: int = Field(8, ge=1)  # live MJPEG + SSE streams one token may hold open at once (429 past)
    metric_cameras: int = Field(500, ge=1)  # cameras with their own Prometheus series; later ones share "_other"
    # the fleet's MQTT ingest: what remote nodes may create, and which times they may report
    fleet_nodes: int = Field(1000, ge=1)  # nodes tracked; messages of further nodes are rejected ("cap")
    fleet_cameras_per_node: int = Field(64, ge=1)  # cameras per node; events of further cameras are rejected
    remote_future_s: float = Field(300.0, ge=0)  # a remote event's time may be this far ahead of ours (clocks)
    remote_past_s: float = Field(30 * 86400.0, gt=0)  # ... and this far back (an outbox emptied after an outage)


class AuthSettings(Section):
    session_hours: float = Field(12.0, gt=0)
    cookie_secure: bool = False  # set True behind HTTPS
    scrape_token: str | None = Field(None, min_length=16)  # Prometheus: GET /metrics with Bearer <this>
    scrape_allow: list[str] = Field(default_factory=list)  # addresses or networks GET /metrics needs no token from

    @field_validator("scrape_allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"scrape_allow: {item!r} is not an IP address or network (10.0.0.0/8)") from exc
        return value

    # the admin token made at the first start (when no admin token exists and none is preset): written to this
    # file (mode 600), never to the log; null: DATA_DIR/admin-token
    admin_token_file: str | None = None
    min_token_bits: float = Field(128.0, ge=0)  # a preset token ($MASKWATCH_ADMIN_TOKEN) weaker than this: refused
    token_days: float | None = Field(365.0, gt=0)  # tokens made through the API expire after this; null: never
    # failed or unknown credentials per client address: this many per minute, this many at once, then 429
    # without a database lookup (login included)
    failed_per_minute: float = Field(10.0, gt=0)
    failed_burst: int = Field(20, ge=1)
    # a token or session checked against the database at most this long ago is trusted: a revocation (or a
    # logout) through any worker reaches every worker within this many seconds
    cache_s: float = Field(2.0, ge=0, le=60)
    # while the database is unreachable (nobody can revoke anything then), a token checked within this
    # many seconds keeps working, so the dashboard and /fleet answer from memory
    outage_grace_s: float = Field(3600.0, ge=0)


class JobSettings(Section):
    allowed_dirs: list[str] = Field(default_factory=list)  # server folders POST /jobs may read from
    max_running: int = Field(1, ge=1)
    max_queued: int = Field(20, ge=1)  # jobs queued or running at once; more: 429
    max_queued_bytes: int = Field(5_000_000_000, ge=1024)  # their uploads on disk together; more: 429
    keep_events: int = Field(10_000, ge=0)  # events kept per job for GET /jobs/{id}/events


class NetworkPolicy(Section):
    """Where the service may connect to: URL schemes, and hosts that are allowed although they are loopback,
    link-local, private or otherwise not public (every other host must resolve to public addresses only)."""

    schemes: list[str] = Field(default_factory=lambda: ["http", "https"])
    hosts: list[str] = Field(default_factory=list)  # names ("cam1.local"), addresses or networks ("10.2.0.0/16")

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        parse_allowed(value)  # raises ValueError with the bad entry
        return value

    def policy(self, folders: Iterable[str | Path] = ()) -> NetPolicy:
        """The guard these settings describe (:mod:`maskwatch.core.netpolicy`), with extra ``folders``."""
        own = getattr(self, "folders", [])
        return NetPolicy.of(self.schemes, self.hosts, [*own, *folders])


class SourcePolicySettings(NetworkPolicy):
    """Camera sources given through the API (create, change, enable)."""

    schemes: list[str] = Field(default_factory=lambda: ["rtsp", "rtsps", "http", "https"])  # add "webcam" for webcam:N
    folders: list[str] = Field(default_factory=list)  # local videos / image folders cameras may read (none: no files)


class SecuritySettings(Section):
    sources: SourcePolicySettings = Field(default_factory=SourcePolicySettings)
    webhooks: NetworkPolicy = Field(default_factory=NetworkPolicy)  # checked when a rule is saved and at each send
    docs: bool = True  # /docs: Swagger UI from the installed fastapi-offline assets, strict content policy


class SiteSettings(Section):
    # the site's time zone (IANA name, e.g. Europe/Paris): what "today", daily rollups (1d points), alert
    # active hours and the dashboard's clock mean. UTC by default (set it: the server's own zone is never used)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from maskwatch.core.timeutil import site_zone

        site_zone(value)  # raises with the reason
        return value


class WorkerSettings(Section):
    # this worker's name in leases and jobs; default: made once and kept in DATA_DIR/worker-id
    id: str | None = Field(None, min_length=1, max_length=100)
    lease_ttl_s: float = Field(10.0, ge=2)  # a camera (or the alert rules) moves this long after its worker died
    renew_every_s: float = Field(3.0, gt=0)  # under half of lease_ttl_s
    dead_after_s: float = Field(120.0, gt=0)  # a worker silent this long is gone: its jobs are interrupted


class SpoolSettings(Section):
    enabled: bool = True  # this worker's cameras' events on disk (DATA_DIR/spool.db) until stored
    budget_mb: float = Field(1024.0, gt=0)  # beyond it the oldest stats, then the oldest events, are dropped
    journal: bool = False  # also keep the id of every event spooled (audits, tests)


class ServiceSettings(RootSettings):
    """Every setting of ``maskwatch serve``; environment overrides: ``MASKWATCH_SERVE_<SECTION>__<KEY>``
    (``MASKWATCH_SERVE_RETENTION__EVENTS_DAYS=14``), plus ``MASKWATCH_DB`` and ``MASKWATCH_DATA_DIR``."""

    model_config = SettingsConfigDict(env_prefix="MASKWATCH_SERVE_")
    legacy_env: ClassVar[dict[str, tuple[str, ...]]] = {
        "MASKWATCH_DB": ("server", "db"),
        "MASKWATCH_DATA_DIR": ("server", "data_dir"),
    }

    server: ServerSettings = Field(default_factory=ServerSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    engine: EngineConfig = Field(default_factory=EngineConfig)  # the engine's settings (shared with detect, agent)
    cameras: list[CameraConfig] = Field(default_factory=list)  # created at start when missing (by name)
    demo: DemoSettings = Field(default_factory=DemoSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)

    @model_validator(mode="after")
    def _privacy_drives_the_engine(self) -> ServiceSettings:
        """Snapshots and their blurring are privacy settings: the ``privacy`` section decides them for the
        engine (``engine.snapshots`` / ``engine.snapshot_blur`` are not set separately in serve)."""
        engine = self.engine
        if (engine.snapshots, engine.snapshot_blur) != (self.privacy.snapshots, self.privacy.blur_faces):
            object.__setattr__(
                self,
                "engine",
                engine.model_copy(
                    update={"snapshots": self.privacy.snapshots, "snapshot_blur": self.privacy.blur_faces}
                ),
            )
        return self

    site: SiteSettings = Field(default_factory=SiteSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir)

    def redacted(self) -> dict[str, Any]:
        """Every setting, with every credential hidden (``serve --check``): passwords in URLs and
        ``password=``/``token=`` values (:func:`maskwatch.core.redaction.redact`, on each value), webhook
        secrets, the metrics scrape token, and webhook URLs past their host (a chat webhook's path is its
        credential)."""
        from urllib.parse import urlsplit

        from maskwatch.core.redaction import REDACTED, redact

        def hide(value: Any, key: str = "") -> Any:
            if isinstance(value, dict):
                return {k: hide(v, str(k)) for k, v in value.items()}
            if isinstance(value, list):
                return [hide(v, key) for v in value]
            if isinstance(value, str):
                if key in ("webhook_secret", "scrape_token"):
                    return REDACTED
                if key == "webhook_url":
                    try:
                        parts = urlsplit(value)
                        return f"{parts.scheme}://{parts.hostname or ''}/{REDACTED}"
                    except ValueError:
                        return REDACTED
                return redact(value)
            return value

        data: dict[str, Any] = hide(self.model_dump(mode="json"))
        return data

    @property
    def admin_token_path(self) -> Path:
        return Path(self.auth.admin_token_file) if self.auth.admin_token_file else self.data_dir / "admin-token"

    @property
    def db_url(self) -> str:
        return self.server.db or f"sqlite:///{(self.data_dir / 'maskwatch.db').resolve()}"


# -- loading --------------------------------------------------------------------------------------------


def load_settings(
    path: str | Path | None = None,
    *,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> ServiceSettings:
    """Defaults, then ``path`` (YAML), then ``env`` (``os.environ``), then ``overrides`` (nested dicts, e.g.
    ``{"server": {"port": 8001}}``; None values are ignored). Raises :class:`ConfigError` with the reason."""
    settings = ServiceSettings.load(path, env=env, overrides=overrides)
    names = [c.name for c in settings.cameras]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"cameras: duplicate name(s) {', '.join(dupes)}")
    w = settings.workers
    if w.renew_every_s * 2 >= w.lease_ttl_s:
        raise ConfigError("workers: renew_every_s must be under half of lease_ttl_s")
    return settings
