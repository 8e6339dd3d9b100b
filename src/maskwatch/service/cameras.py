"""Cameras: kept in the database, run by the stream engine. Every change goes to both, engine first (a
source that cannot exist is refused before anything is stored), and cameras are resumed at start.
A camera's URL may hold credentials: it is never logged (only the camera's name is)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from sqlalchemy import select

from maskwatch.core.redaction import redact
from maskwatch.service.errors import ApiError
from maskwatch.service.settings import CAMERA_NAME
from maskwatch.service.storage.models import Camera
from maskwatch.stream import SourceSpec

log = logging.getLogger("maskwatch.service")

FIELDS = ("url", "enabled", "preset", "target_fps", "realtime", "loop")


def spec_for(camera: Camera, hold: float = 4.0) -> SourceSpec:
    """A camera's engine source; still images played ``realtime`` are a slideshow, each held ``hold`` s."""
    return SourceSpec(
        hold=hold,
        uri=camera.url,
        name=camera.name,
        preset=camera.preset,
        target_fps=camera.target_fps,
        realtime=camera.realtime,
        loop=camera.loop,
    )


class CameraManager:
    def __init__(self, sessions: Any, engine: Any, live: Any, *, on_removed: Any = None, hold: float = 4.0):
        self.hold = hold
        self.sessions = sessions
        self.engine = engine
        self.live = live
        self.on_removed = on_removed
        self._lock = threading.RLock()

    # -- engine side -----------------------------------------------------------------------------------

    def _start(self, camera: Camera) -> None:
        """Add to the engine; a bad source is a 422 with the engine's reason (credentials hidden)."""
        try:
            self.engine.add_source(spec_for(camera, self.hold))
        except Exception as exc:  # SourceError, ValueError
            raise ApiError(422, "bad_source", f"camera {camera.name!r}: {redact(str(exc))}") from exc
        self.live.get(camera.name).state = "connecting"

    def _stop(self, name: str) -> None:
        with contextlib.suppress(KeyError):  # not running (disabled, ended or failed)
            self.engine.remove_source(name, wait=3.0)
        self.live.get(name).state = "disabled"

    def running(self, name: str) -> bool:
        return name in self.engine.sources or name in self.engine.source_states()

    # -- start-up --------------------------------------------------------------------------------------

    def seed(self, cameras: list[Any]) -> None:
        """Cameras of the config file that the database does not have yet (by name) are created."""
        now = time.time()
        with self.sessions() as s, s.begin():
            have = set(s.scalars(select(Camera.name)))
            for c in cameras:
                if c.name not in have:
                    s.add(
                        Camera(
                            name=c.name,
                            url=c.url,
                            enabled=c.enabled,
                            preset=c.preset,
                            target_fps=c.target_fps,
                            realtime=c.realtime,
                            loop=c.loop,
                            created_ts=now,
                            updated_ts=now,
                        )
                    )

    def resume(self) -> None:
        """Start every enabled camera; one that cannot start is reported (state failed), the rest go on."""
        with self.sessions() as s:
            cameras = list(s.scalars(select(Camera).order_by(Camera.id)))
        for camera in cameras:
            if not camera.enabled:
                self.live.get(camera.name).state = "disabled"
                continue
            try:
                self._start(camera)
            except ApiError as exc:
                live = self.live.get(camera.name)
                live.state, live.reason = "failed", exc.detail
                log.error("camera %s not started: %s", camera.name, exc.detail)

    # -- API -------------------------------------------------------------------------------------------

    def list(self) -> list[Camera]:
        with self.sessions() as s:
            return list(s.scalars(select(Camera).order_by(Camera.name)))

    def get(self, name: str) -> Camera:
        with self.sessions() as s:
            camera = s.scalars(select(Camera).where(Camera.name == name)).first()
        if camera is None:
            raise ApiError(404, "not_found", f"no camera named {name!r}")
        return camera

    def create(self, data: dict[str, Any]) -> Camera:
        name = data["name"]
        if not CAMERA_NAME.match(name):
            raise ApiError(422, "invalid", "camera names are 1-64 letters, digits, '.', '_' or '-'")
        now = time.time()
        camera = Camera(
            name=name, created_ts=now, updated_ts=now, **{k: data.get(k) for k in FIELDS if data.get(k) is not None}
        )
        camera.enabled = data.get("enabled", True) is not False
        camera.realtime, camera.loop = bool(data.get("realtime")), bool(data.get("loop"))
        with self._lock:
            with self.sessions() as s:
                if s.scalars(select(Camera).where(Camera.name == name)).first() is not None:
                    raise ApiError(409, "conflict", f"a camera named {name!r} exists")
            if camera.enabled:
                self._start(camera)
            try:
                with self.sessions() as s, s.begin():
                    s.add(camera)
            except Exception as exc:
                if camera.enabled:
                    self._stop(name)
                raise ApiError(503, "database_unavailable", "camera not saved: the database is unreachable") from exc
        log.info("camera %s added (%s)", name, "enabled" if camera.enabled else "disabled")
        return camera

    def update(self, name: str, changes: dict[str, Any]) -> Camera:
        with self._lock:
            old = self.get(name)
            new = Camera(**{k: getattr(old, k) for k in ("id", "name", "created_ts", *FIELDS)})
            for key, value in changes.items():
                if key in FIELDS:
                    setattr(new, key, value)
            new.updated_ts = time.time()
            restart = any(getattr(new, k) != getattr(old, k) for k in FIELDS)
            if restart:
                self._stop(name)
                if new.enabled:
                    try:
                        self._start(new)
                    except ApiError:
                        if old.enabled:  # put the old source back
                            self._start(old)
                        raise
            with self.sessions() as s, s.begin():
                row = s.get(Camera, old.id)
                for key in (*FIELDS, "updated_ts"):
                    setattr(row, key, getattr(new, key))
        log.info("camera %s updated", name)
        return self.get(name)

    def delete(self, name: str) -> None:
        with self._lock:
            camera = self.get(name)
            self._stop(name)
            with self.sessions() as s, s.begin():
                row = s.get(Camera, camera.id)
                if row is not None:
                    s.delete(row)
            self.live.forget(name)
            if self.on_removed is not None:
                self.on_removed(name)
        log.info("camera %s deleted", name)
