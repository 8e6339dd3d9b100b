"""Every setting of ``maskwatch serve`` in one typed place.

Layers, later ones win (:class:`maskwatch.core.settings.RootSettings`): these defaults, the YAML file
(``--config serve.yaml``; the commented example is ``configs/serve.yaml``), environment variables
(``MASKWATCH_SERVE_<SECTION>__<KEY>``, and the short ``MASKWATCH_DB`` / ``MASKWATCH_DATA_DIR``), then CLI flags.
Unknown keys are an error with a "did you mean" hint, as in every maskwatch configuration.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from maskwatch.core.errors import ConfigError
from maskwatch.core.names import MAX_NAME, is_name
from maskwatch.core.settings import RootSettings, Section

__all__ = [
    "AlertRuleConfig",
    "CameraConfig",
    "ServiceSettings",
    "load_settings",
]

ACTIVE_HOURS = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-4]):[0-5]\d$")


class ServerSettings(Section):
    host: str = "127.0.0.1"  # bind address (0.0.0.0 exposes the service on every interface)
    port: int = Field(8000, ge=0, le=65535)
    data_dir: str = "runs/serve"  # SQLite database, demo video, snapshots
    db: str | None = None  # SQLAlchemy URL; default sqlite:///DATA_DIR/maskwatch.db (WAL)
    log_level: str = "info"


class ModelSettings(Section):
    path: str | None = None  # classifier (.pt / .onnx); default: the bundled model ($MASKWATCH_MODEL)
    backend: str | None = None  # torch | onnx | onnx-int8; default: the runtime's choice
    infer_preset: Literal["fast", "balanced", "accurate"] = "accurate"  # POST /infer on still images
    threads: int = Field(2, ge=1, le=64)


class EngineSettings(Section):
    stats_interval: float = Field(60.0, gt=0)  # seconds per stats bucket
    classify_every: int | None = Field(5, ge=1)  # classification budget for decided tracks
    video_preset: Literal["fast", "balanced", "accurate"] = "fast"
    min_track_frames: int = Field(3, ge=1)
    stall_timeout: float = Field(10.0, gt=0)  # a camera with no frame this long is "lost"
    give_up_after: float = Field(30.0, gt=0)  # ... and "failed" after this long down
    backoff: float = Field(0.5, gt=0)
    max_backoff: float = Field(8.0, gt=0)


class CameraConfig(Section):
    name: str
    url: str  # rtsp://..., http(s)://..., webcam:N, a video file or a folder of images
    enabled: bool = True
    preset: Literal["fast", "balanced", "accurate"] | None = None
    target_fps: float | None = Field(None, gt=0)
    realtime: bool = False  # play a file as a camera would deliver it
    loop: bool = False  # start a file again at its end

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
    active_hours: str | None = None  # "08:00-18:00" (local time of the server); None: always
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


class LimitSettings(Section):
    upload_bytes: int = Field(10_000_000, ge=1024)  # POST /infer body
    upload_pixels: int = Field(40_000_000, ge=1024)  # decoded image size
    job_upload_bytes: int = Field(500_000_000, ge=1024)  # POST /jobs uploads
    # images analysed at once by /infer; None: physical cores // model.threads (each analysis already runs on
    # model.threads cores; on 2 cores a second one took the CPU from the cameras: /infer +40 %, camera FPS
    # -40 %, BENCHMARKS.md). Raise it to favour /infer over the cameras.
    infer_concurrency: int | None = Field(None, ge=1, le=64)
    infer_queue: int = Field(16, ge=0)  # more waiting than this: 503 at once
    request_timeout_s: float = Field(60.0, gt=0)
    rate_per_minute: float = Field(600.0, gt=0)  # requests per token
    rate_burst: int = Field(60, ge=1)
    ingest_buffer: int = Field(200_000, ge=100)  # events held in memory while the database is down


class AuthSettings(Section):
    session_hours: float = Field(12.0, gt=0)
    cookie_secure: bool = False  # set True behind HTTPS


class JobSettings(Section):
    allowed_dirs: list[str] = Field(default_factory=list)  # server folders POST /jobs may read from
    max_running: int = Field(1, ge=1)
    keep_events: int = Field(10_000, ge=0)  # events kept per job for GET /jobs/{id}/events


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
    engine: EngineSettings = Field(default_factory=EngineSettings)
    cameras: list[CameraConfig] = Field(default_factory=list)  # created at start when missing (by name)
    demo: DemoSettings = Field(default_factory=DemoSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir)

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
    return settings
