"""The cameras table: what the service runs. A camera's URL may hold credentials: it is stored as given,
shown to admins only and never logged."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import delete, select

from maskwatch.service.storage.db import Sessions
from maskwatch.service.storage.models import Camera, CameraStatus

__all__ = ["CAMERA_FIELDS", "CameraRepository", "CameraSource", "StoredStatus", "zones_json"]

#: the fields of a camera that its source is made of (a change restarts it)
CAMERA_FIELDS = ("url", "enabled", "preset", "target_fps", "realtime", "loop", "privacy_zones")


class CameraSource(Protocol):
    """A camera as configured (``CameraConfig`` of the settings, or an API body)."""

    @property
    def name(self) -> str: ...

    @property
    def url(self) -> str: ...

    @property
    def enabled(self) -> bool: ...

    @property
    def preset(self) -> str | None: ...

    @property
    def target_fps(self) -> float | None: ...

    @property
    def realtime(self) -> bool | None: ...  # None: the engine's camera default

    @property
    def loop(self) -> bool | None: ...

    @property
    def privacy_zones(self) -> list[list[list[float]]] | None: ...  # None: the engine's camera default


def zones_json(zones: Sequence[Sequence[Sequence[float]]] | None) -> list[list[list[float]]] | None:
    """Privacy zones as the JSON column holds them (lists of [x, y]); None stays None (inherit)."""
    return None if zones is None else [[[float(x), float(y)] for x, y in zone] for zone in zones]


@dataclass(frozen=True)
class StoredStatus:
    """A camera's latest state as stored (whichever worker's engine or node reported it)."""

    camera: str
    state: str
    reason: str | None
    since: float  # when it turned good or bad
    ts: float  # the status event's time


class CameraRepository:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def all(self, *, by: str = "name") -> list[Camera]:
        """Every camera, by name (lists) or by id (the order they were added: resuming)."""
        order = Camera.id if by == "id" else Camera.name
        with self.sessions() as s:
            return list(s.scalars(select(Camera).order_by(order)))

    def get(self, name: str) -> Camera | None:
        with self.sessions() as s:
            return s.scalars(select(Camera).where(Camera.name == name)).first()

    def add(self, camera: Camera) -> None:
        with self.sessions() as s, s.begin():
            s.add(camera)

    def save(self, camera: Camera, fields: Iterable[str]) -> None:
        """Write ``fields`` of ``camera`` (a detached copy) to its row."""
        with self.sessions() as s, s.begin():
            row = s.get(Camera, camera.id)
            if row is not None:
                for key in fields:
                    setattr(row, key, getattr(camera, key))

    def delete(self, camera_id: int) -> None:
        """Remove a camera and its stored state (its events and stats are kept)."""
        with self.sessions() as s, s.begin():
            row = s.get(Camera, camera_id)
            if row is not None:
                s.delete(row)
                s.execute(delete(CameraStatus).where(CameraStatus.camera == row.name))

    def statuses(self) -> dict[str, StoredStatus]:
        """Every camera's latest stored state (local and fleet cameras), by name."""
        with self.sessions() as s:
            rows = s.scalars(select(CameraStatus))
            return {r.camera: StoredStatus(r.camera, r.state, r.reason, r.since_ts, r.ts) for r in rows}

    def add_missing(self, cameras: Iterable[CameraSource], now: float) -> list[str]:
        """Create the cameras whose names the table does not have yet; returns their names."""
        added = []
        with self.sessions() as s, s.begin():
            have = set(s.scalars(select(Camera.name)))
            for c in cameras:
                if c.name in have:
                    continue
                s.add(
                    Camera(
                        name=c.name,
                        url=c.url,
                        enabled=c.enabled,
                        preset=c.preset,
                        target_fps=c.target_fps,
                        realtime=c.realtime,
                        loop=c.loop,
                        privacy_zones=zones_json(c.privacy_zones),
                        created_ts=now,
                        updated_ts=now,
                    )
                )
                added.append(c.name)
        return added
