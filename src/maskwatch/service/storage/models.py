"""The service's tables (SQLAlchemy 2). Times are UTC epoch seconds (``*_ts``, double precision): the same
arithmetic on SQLite and PostgreSQL, and bucket grouping is integer maths on both.

Changing a table means a new Alembic revision in ``migrations/versions`` (``tests/test_service_storage.py``
checks the models and the migrations agree).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from maskwatch.core.names import MAX_NAME, MAX_QUALIFIED_NAME

#: what the compliance query reads besides the time: its indexes carry these, so it never visits the table
SERIES_COLUMNS = ("camera", "n_people", "compliant_people", "frames_analysed", "present_max")


class Base(DeclarativeBase):
    pass


class Camera(Base):
    __tablename__ = "cameras"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(Text)  # may hold credentials: admins only, never logged
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    preset: Mapped[str | None] = mapped_column(String(16), nullable=True)
    target_fps: Mapped[float | None] = mapped_column(Double, nullable=True)
    realtime: Mapped[bool] = mapped_column(Boolean, default=False)
    loop: Mapped[bool] = mapped_column(Boolean, default=False)
    # polygons of [x, y] in fractions of the frame, blacked out before analysis; NULL: the engine's default
    privacy_zones: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    created_ts: Mapped[float] = mapped_column(Double)
    updated_ts: Mapped[float] = mapped_column(Double)


class PersonEvent(Base):
    """One person (the engine's ``track_ended`` event); ``data`` is the event as published."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_camera_ts", "camera", "ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(32))
    camera: Mapped[str] = mapped_column(String(MAX_QUALIFIED_NAME), index=True)  # node:camera (migration 0008)
    ts: Mapped[float] = mapped_column(Double, index=True)  # when the person was last seen
    label: Mapped[str] = mapped_column(String(64))
    compliant: Mapped[bool] = mapped_column(Boolean)
    probability: Mapped[float] = mapped_column(Double)
    n_frames: Mapped[int] = mapped_column(Integer)
    false_positive: Mapped[bool] = mapped_column(Boolean, default=False)
    snapshot: Mapped[str | None] = mapped_column(String(255), nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class Ingested(Base):
    """Ids of stored stats events: a stats event re-sent after a database outage merges once."""

    __tablename__ = "ingested"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    ts: Mapped[float] = mapped_column(Double, index=True)


class StatsBucket(Base):
    """A camera's stats interval as the engine flushed it (a restart inside an interval merges into it)."""

    __tablename__ = "stats_buckets"
    __table_args__ = (
        UniqueConstraint("camera", "start_ts", name="uq_stats_camera_start"),
        # covering the compliance query: a time range read from the index alone (migration 0003)
        Index("ix_stats_buckets_series", "start_ts", *SERIES_COLUMNS),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    camera: Mapped[str] = mapped_column(String(MAX_QUALIFIED_NAME))
    start_ts: Mapped[float] = mapped_column(Double)
    end_ts: Mapped[float] = mapped_column(Double)
    interval: Mapped[float] = mapped_column(Double)
    n_people: Mapped[int] = mapped_column(Integer, default=0)
    compliant_people: Mapped[int] = mapped_column(Integer, default=0)
    people: Mapped[dict[str, int]] = mapped_column(JSON)
    present_max: Mapped[int] = mapped_column(Integer, default=0)
    frames_analysed: Mapped[int] = mapped_column(Integer, default=0)
    frames_dropped: Mapped[int] = mapped_column(Integer, default=0)
    faces_classified: Mapped[int] = mapped_column(Integer, default=0)
    analysed_fps: Mapped[float] = mapped_column(Double, default=0.0)
    lag_p50: Mapped[float | None] = mapped_column(Double, nullable=True)
    lag_p95: Mapped[float | None] = mapped_column(Double, nullable=True)
    lag_max: Mapped[float | None] = mapped_column(Double, nullable=True)


class StatsRollup(Base):
    """Hourly (grain 3600) and daily (86400, UTC days) sums of the buckets, kept at ingest so that queries
    over months read a few thousand rows."""

    __tablename__ = "stats_rollups"
    __table_args__ = (
        UniqueConstraint("grain", "camera", "start_ts", name="uq_rollup_grain_camera_start"),
        Index("ix_rollup_series", "grain", "start_ts", *SERIES_COLUMNS),  # covering, like the buckets' (0003)
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    grain: Mapped[int] = mapped_column(Integer)
    camera: Mapped[str] = mapped_column(String(MAX_QUALIFIED_NAME))
    start_ts: Mapped[int] = mapped_column(BigInteger)
    n_people: Mapped[int] = mapped_column(Integer, default=0)
    compliant_people: Mapped[int] = mapped_column(Integer, default=0)
    frames_analysed: Mapped[int] = mapped_column(Integer, default=0)
    frames_dropped: Mapped[int] = mapped_column(Integer, default=0)
    present_max: Mapped[int] = mapped_column(Integer, default=0)
    lag_p95_max: Mapped[float | None] = mapped_column(Double, nullable=True)


class AlertRule(Base):
    __tablename__ = "alert_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    camera: Mapped[str | None] = mapped_column(String(MAX_QUALIFIED_NAME), nullable=True)
    threshold: Mapped[float | None] = mapped_column(Double, nullable=True)
    window_s: Mapped[float] = mapped_column(Double)
    min_people: Mapped[int] = mapped_column(Integer)
    for_s: Mapped[float] = mapped_column(Double)
    hysteresis: Mapped[float] = mapped_column(Double)
    cooldown_s: Mapped[float] = mapped_column(Double)
    active_hours: Mapped[str | None] = mapped_column(String(16), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_ts: Mapped[float] = mapped_column(Double)
    updated_ts: Mapped[float] = mapped_column(Double)


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_state_started", "state", "started_ts"),
        # at most one firing alert per rule and camera: several workers fire it once (migration 0002)
        Index(
            "ux_alerts_firing",
            "rule_id",
            "camera",
            unique=True,
            postgresql_where=text("state = 'firing'"),
            sqlite_where=text("state = 'firing'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("alert_rules.id", ondelete="SET NULL"), nullable=True)
    rule_name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(32))
    camera: Mapped[str] = mapped_column(String(MAX_QUALIFIED_NAME))  # a camera, a node, or a worker (broker_lost)
    state: Mapped[str] = mapped_column(String(16))  # firing | resolved
    # the last transition announced (log, webhook) by the elected worker; behind ``state`` until it is
    # (migration 0006): a worker that dies before announcing leaves it for the next one
    announced: Mapped[str | None] = mapped_column(String(16), nullable=True)
    message: Mapped[str] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Double, nullable=True)
    started_ts: Mapped[float] = mapped_column(Double)
    resolved_ts: Mapped[float | None] = mapped_column(Double, nullable=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    acknowledged_ts: Mapped[float | None] = mapped_column(Double, nullable=True)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    rule_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    url: Mapped[str] = mapped_column(Text)
    transition: Mapped[str] = mapped_column(String(16))  # firing | resolved | test
    attempt: Mapped[int] = mapped_column(Integer)
    ok: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    ts: Mapped[float] = mapped_column(Double)
    duration_ms: Mapped[float] = mapped_column(Double)


class ApiToken(Base):
    """An API token: only its SHA-256 is stored (tokens are 32 random bytes, so a fast hash is enough)."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))  # viewer | operator | admin
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to recognise a token in lists
    created_ts: Mapped[float] = mapped_column(Double)
    last_used_ts: Mapped[float | None] = mapped_column(Double, nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_ts: Mapped[float | None] = mapped_column(Double, nullable=True)  # None: never


class Session(Base):
    """A browser session (cookie), made by logging in with a token; CSRF-checked on every change."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_ts: Mapped[float] = mapped_column(Double)
    expires_ts: Mapped[float] = mapped_column(Double)


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[float] = mapped_column(Double, index=True)
    actor: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(255), nullable=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)


class JobRecord(Base):
    """A batch job (``POST /jobs``): its state, progress and summary, kept across restarts; its events are
    a JSON Lines file (``events_file``, relative to the data dir). A job still queued or running when the
    service starts was interrupted by a stop or a crash, and is marked so (migration 0004)."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), index=True)  # queued | running | done | failed | ...
    created_ts: Mapped[float] = mapped_column(Double, index=True)
    started_ts: Mapped[float | None] = mapped_column(Double, nullable=True)
    finished_ts: Mapped[float | None] = mapped_column(Double, nullable=True)
    frames: Mapped[int] = mapped_column(Integer, default=0)
    expected_frames: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    n_events: Mapped[int] = mapped_column(Integer, default=0)
    events_file: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # the worker running it (migration 0006): only a worker that is gone has its jobs marked interrupted
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True)


class Lease(Base):
    """A named lease held by one worker until ``expires_ts`` (database clock), renewed by its holder:
    ``camera:NAME`` (who runs a local camera), ``alerts`` (who evaluates the rules), ``worker:ID`` (a
    worker's heartbeat). ``epoch`` grows at each change of holder (migration 0006)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_ts: Mapped[float] = mapped_column(Double)
    acquired_ts: Mapped[float] = mapped_column(Double)
    renewed_ts: Mapped[float] = mapped_column(Double)
    epoch: Mapped[int] = mapped_column(Integer, default=1)


class CameraStatus(Base):
    """Each camera's latest state as its engine reported it (``source_status`` events, stored by the
    ingestor whichever worker received them): what every worker shows and what the elected worker's
    ``camera_offline`` rules read (migration 0006). ``since_ts``: when it turned good or bad."""

    __tablename__ = "camera_status"

    camera: Mapped[str] = mapped_column(String(MAX_QUALIFIED_NAME), primary_key=True)  # widened: migration 0008
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    since_ts: Mapped[float] = mapped_column(Double)
    ts: Mapped[float] = mapped_column(Double)  # the latest status event's time (older ones never overwrite)


class DeadLetter(Base):
    """A message the control room could not store (unreadable, invalid, refused by the database), kept with
    the reason instead of being acknowledged into nothing (migration 0007). The same message again (a node
    resends what was not acknowledged) counts in ``count``: one row per reason, topic and payload."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 of reason, topic and payload
    reason: Mapped[str] = mapped_column(String(32), index=True)
    topic: Mapped[str | None] = mapped_column(Text, nullable=True)  # None: refused by storage (no topic kept)
    node: Mapped[str | None] = mapped_column(String(MAX_NAME), nullable=True)
    event_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # as received (an oversized one: its first 4 KiB)
    size: Mapped[int] = mapped_column(Integer)  # the payload's full size in bytes
    count: Mapped[int] = mapped_column(Integer)  # times it arrived
    first_ts: Mapped[float] = mapped_column(Double)
    last_ts: Mapped[float] = mapped_column(Double, index=True)
