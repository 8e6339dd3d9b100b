"""Cameras: kept in the database, run by the stream engine. Every change goes to both, engine first (a
source that cannot exist is refused before anything is stored), and cameras are resumed at start.
A camera's URL may hold credentials: it is never logged (only the camera's name is)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from maskwatch.core.names import check_name
from maskwatch.core.redaction import redact
from maskwatch.service.errors import ApiError
from maskwatch.service.storage.cameras import CAMERA_FIELDS, CameraRepository, CameraSource, zones_json
from maskwatch.service.storage.models import Camera
from maskwatch.stream.config import CameraSettings, EngineConfig, SourceSpec

if TYPE_CHECKING:
    from maskwatch.service.live import LiveState
    from maskwatch.stream import StreamEngine

__all__ = ["CameraManager", "spec_for"]

log = logging.getLogger("maskwatch.service")


def spec_for(camera: Camera, config: EngineConfig, hold: float | None = None) -> SourceSpec:
    """A camera's engine source: its own settings over ``config.camera_defaults`` (still images played
    ``realtime`` are a slideshow, each held ``hold`` s: the demo camera's, else the defaults')."""
    own = CameraSettings(
        preset=camera.preset,
        target_fps=camera.target_fps,
        realtime=camera.realtime,
        loop=camera.loop,
        hold=hold,
        privacy_zones=camera.privacy_zones,
    )
    return config.source(camera.url, camera.name, own)


class CameraManager:
    """Adds, changes and removes cameras in the engine and the database together; ``on_removed(name)`` is
    told about each camera removed (the alert engine forgets it)."""

    def __init__(
        self,
        cameras: CameraRepository,
        engine: StreamEngine,
        live: LiveState,
        *,
        on_removed: Callable[[str], None] | None = None,
        config: EngineConfig | None = None,
        demo: tuple[str, float] | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self.demo = demo  # (name, seconds per image) of the demo slideshow camera
        self.cameras = cameras
        self.engine = engine
        self.live = live
        self.on_removed = on_removed
        self._lock = threading.RLock()

    # -- engine side -----------------------------------------------------------------------------------

    def _start(self, camera: Camera) -> None:
        """Add to the engine; a bad source is a 422 with the engine's reason (credentials hidden)."""
        try:
            self.engine.add_source(spec_for(camera, self.config, self._hold(camera.name)))
        except Exception as exc:  # SourceError, ValueError
            raise ApiError(422, "bad_source", f"camera {camera.name!r}: {redact(str(exc))}") from exc
        self.live.set_state(camera.name, "connecting")

    def _hold(self, name: str) -> float | None:
        return self.demo[1] if self.demo is not None and self.demo[0] == name else None

    def _stop(self, name: str) -> None:
        with contextlib.suppress(KeyError):  # not running (disabled, ended or failed)
            self.engine.remove_source(name, wait=3.0)
        self.live.set_state(name, "disabled")

    # -- start-up --------------------------------------------------------------------------------------

    def seed(self, cameras: Iterable[CameraSource]) -> None:
        """Cameras of the config file that the database does not have yet (by name) are created."""
        self.cameras.add_missing([self._resolved(c) for c in cameras], time.time())

    def _resolved(self, source: CameraSource) -> CameraSource:
        """``realtime`` and ``loop`` are fixed when a camera is created: unset ones take the defaults now."""
        defaults = self.config.camera_defaults
        realtime = defaults.realtime if source.realtime is None else source.realtime
        loop = defaults.loop if source.loop is None else source.loop
        if (realtime, loop) == (source.realtime, source.loop):
            return source
        return _Resolved(source, realtime, loop)

    def resume(self) -> None:
        """Start every enabled camera; one that cannot start is reported (state failed), the rest go on."""
        for camera in self.cameras.all(by="id"):
            if not camera.enabled:
                self.live.set_state(camera.name, "disabled")
                continue
            try:
                self._start(camera)
            except ApiError as exc:
                self.live.set_state(camera.name, "failed", exc.detail)
                log.error("camera %s not started: %s", camera.name, exc.detail)

    # -- API -------------------------------------------------------------------------------------------

    def list(self) -> list[Camera]:
        return self.cameras.all()

    def get(self, name: str) -> Camera:
        camera = self.cameras.get(name)
        if camera is None:
            raise ApiError(404, "not_found", f"no camera named {name!r}")
        return camera

    def create(self, source: CameraSource) -> Camera:
        source = self._resolved(source)
        try:
            name = check_name(source.name, "camera name")
        except ValueError as exc:
            raise ApiError(422, "invalid", str(exc)) from exc
        now = time.time()
        camera = Camera(
            name=name,
            url=source.url,
            enabled=source.enabled,
            preset=source.preset,
            target_fps=source.target_fps,
            realtime=source.realtime,
            loop=source.loop,
            privacy_zones=zones_json(source.privacy_zones),
            created_ts=now,
            updated_ts=now,
        )
        with self._lock:
            if self.cameras.get(name) is not None:
                raise ApiError(409, "conflict", f"a camera named {name!r} exists")
            if camera.enabled:
                self._start(camera)
            try:
                self.cameras.add(camera)
            except Exception as exc:
                if camera.enabled:
                    self._stop(name)
                raise ApiError(503, "database_unavailable", "camera not saved: the database is unreachable") from exc
        log.info("camera %s added (%s)", name, "enabled" if camera.enabled else "disabled")
        return camera

    def update(self, name: str, changes: Mapping[str, object]) -> Camera:
        """Change a camera's source fields (``url``, ``enabled``, ...); its source restarts when they change,
        and the old one is put back when the new one cannot start."""
        with self._lock:
            old = self.get(name)
            new = Camera(**{k: getattr(old, k) for k in ("id", "name", "created_ts", *CAMERA_FIELDS)})
            for key, value in changes.items():
                if key in CAMERA_FIELDS:
                    setattr(new, key, value)
            new.updated_ts = time.time()
            restart = any(getattr(new, k) != getattr(old, k) for k in CAMERA_FIELDS)
            if restart:
                self._stop(name)
                if new.enabled:
                    try:
                        self._start(new)
                    except ApiError:
                        if old.enabled:  # put the old source back
                            self._start(old)
                        raise
            self.cameras.save(new, (*CAMERA_FIELDS, "updated_ts"))
        log.info("camera %s updated", name)
        return self.get(name)

    def delete(self, name: str) -> None:
        with self._lock:
            camera = self.get(name)
            self._stop(name)
            self.cameras.delete(camera.id)
            self.live.forget(name)
            if self.on_removed is not None:
                self.on_removed(name)
        log.info("camera %s deleted", name)


class _Resolved:
    """A camera source with ``realtime`` and ``loop`` filled in from the engine's camera defaults."""

    def __init__(self, source: CameraSource, realtime: bool, loop: bool) -> None:
        self.name, self.url, self.enabled = source.name, source.url, source.enabled
        self.preset, self.target_fps = source.preset, source.target_fps
        self.realtime, self.loop = realtime, loop
        self.privacy_zones = source.privacy_zones
