"""Cameras: kept in the database, run by the stream engine of the one worker that holds each camera's lease
(:mod:`maskwatch.service.workers`). Every change goes to both, engine first when this worker runs the camera
(a source that cannot exist is refused before anything is stored); a camera run by another worker is
restarted there at its next lease round (``leases.renew_every`` seconds). A camera's URL may hold
credentials: it is never logged (only the camera's name is)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

from maskwatch.core.names import check_name
from maskwatch.core.netpolicy import NetPolicy, RefusedError, check_source
from maskwatch.core.redaction import redact
from maskwatch.service.errors import ApiError
from maskwatch.service.storage.cameras import CAMERA_FIELDS, CameraRepository, CameraSource, zones_json
from maskwatch.service.storage.models import Camera
from maskwatch.stream.config import CameraSettings, EngineConfig, SourceSpec
from maskwatch.stream.sources import SourceError, parse_source

if TYPE_CHECKING:
    from maskwatch.service.live import LiveState
    from maskwatch.stream import StreamEngine

__all__ = ["CameraLeases", "CameraManager", "spec_for"]

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


class CameraLeases(Protocol):
    """Who runs which camera (:class:`maskwatch.service.workers.Coordinator`)."""

    def claim(self, camera: str) -> bool: ...

    def release(self, camera: str) -> None: ...


class CameraManager:
    """Adds, changes and removes cameras in the engine and the database together, and runs the cameras this
    worker holds the lease of (:meth:`reconcile`, after each lease round). ``leases``: None runs every
    enabled camera here (a service without leases: tests). ``policy``: where a source written through the
    API may point (:mod:`maskwatch.core.netpolicy`); every write path checks it, enabled or not, except for
    the ``trusted`` sources (those of the config file and the demo camera, which the operator chose)."""

    def __init__(
        self,
        cameras: CameraRepository,
        engine: StreamEngine,
        live: LiveState,
        *,
        config: EngineConfig | None = None,
        demo: tuple[str, float] | None = None,
        policy: NetPolicy | None = None,
        trusted: Iterable[str] = (),
        leases: CameraLeases | None = None,
        lock: threading.RLock | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self.demo = demo  # (name, seconds per image) of the demo slideshow camera
        self.policy = policy
        self.trusted = frozenset(trusted)  # the config file's own sources (and the demo's): the operator's choice
        self.cameras = cameras
        self.engine = engine
        self.live = live
        self.leases = leases
        self._running: dict[str, float] = {}  # cameras run here -> updated_ts of the settings they run with
        # changes through the API and lease rounds one at a time (the service gives both the same lock)
        self._lock = lock or threading.RLock()

    # -- checks ----------------------------------------------------------------------------------------

    def check(self, url: str) -> None:
        """A source given through the API: allowed by the policy, and one the engine can read (a missing file
        is refused even for a disabled camera); 422 ``bad_source`` with the reason otherwise."""
        if self.policy is not None and url not in self.trusted:
            try:
                check_source(url, self.policy)
            except RefusedError as exc:
                raise ApiError(422, "bad_source", f"source refused: {exc}") from exc
        try:
            parse_source(url)
        except (SourceError, ValueError) as exc:
            raise ApiError(422, "bad_source", redact(str(exc))) from exc

    # -- engine side -----------------------------------------------------------------------------------

    def _start(self, camera: Camera) -> None:
        """Add to the engine; a bad source is a 422 with the engine's reason (credentials hidden)."""
        try:
            self.engine.add_source(spec_for(camera, self.config, self._hold(camera.name)))
        except Exception as exc:  # SourceError, ValueError
            raise ApiError(422, "bad_source", f"camera {camera.name!r}: {redact(str(exc))}") from exc
        self.live.set_state(camera.name, "connecting")
        self._running[camera.name] = camera.updated_ts

    def _hold(self, name: str) -> float | None:
        return self.demo[1] if self.demo is not None and self.demo[0] == name else None

    def _stop(self, name: str) -> None:
        self._running.pop(name, None)
        with contextlib.suppress(KeyError):  # not running (disabled, ended or failed)
            self.engine.remove_source(name, wait=3.0)

    def runs(self, name: str) -> bool:
        """This worker runs camera ``name``."""
        return name in self._running

    # -- start-up and lease rounds ----------------------------------------------------------------------

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

    def reconcile(self, owned: Mapping[str, Camera]) -> None:
        """Run exactly the cameras in ``owned`` (name -> row): start the new ones, stop the others, restart
        those whose settings changed. One that cannot start is reported (state failed); the rest go on."""
        with self._lock:
            for name in list(self._running):
                if name not in owned:
                    self._stop(name)
                    self.live.forget(name)  # another worker runs it now, or nobody (disabled, removed)
            for name, camera in owned.items():
                if self._running.get(name) == camera.updated_ts:
                    continue
                if name in self._running:
                    self._stop(name)
                try:
                    self._start(camera)
                except ApiError as exc:
                    self._running[name] = camera.updated_ts  # not again until its settings change
                    self.live.set_state(name, "failed", exc.detail)
                    log.error("camera %s not started: %s", name, exc.detail)

    def resume(self) -> None:
        """Without leases: start every enabled camera here."""
        self.reconcile({c.name: c for c in self.cameras.all(by="id") if c.enabled})

    # -- API -------------------------------------------------------------------------------------------

    def list(self) -> list[Camera]:
        return self.cameras.all()

    def get(self, name: str) -> Camera:
        camera = self.cameras.get(name)
        if camera is None:
            raise ApiError(404, "not_found", f"no camera named {name!r}")
        return camera

    def _claim(self, name: str) -> bool:
        """This worker may run ``name`` now (its lease taken, or no leases)."""
        if self.leases is None:
            return True
        try:
            return self.leases.claim(name)
        except Exception as exc:
            raise ApiError(503, "database_unavailable", "the database is unreachable") from exc

    def _release(self, name: str) -> None:
        if self.leases is not None:
            with contextlib.suppress(Exception):  # expires by itself
                self.leases.release(name)

    def create(self, source: CameraSource) -> Camera:
        source = self._resolved(source)
        try:
            name = check_name(source.name, "camera name")
        except ValueError as exc:
            raise ApiError(422, "invalid", str(exc)) from exc
        self.check(source.url)
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
            # its lease first (this worker counts nothing it does not hold), then the engine: a source that
            # cannot exist is refused before anything is stored
            here = camera.enabled and self._claim(name)
            if here:
                try:
                    self._start(camera)
                except ApiError:
                    self._release(name)
                    raise
            try:
                self.cameras.add(camera)
            except Exception as exc:
                if here:
                    self._stop(name)
                    self._release(name)
                raise ApiError(503, "database_unavailable", "camera not saved: the database is unreachable") from exc
        log.info("camera %s added (%s)", name, "enabled" if camera.enabled else "disabled")
        return camera

    def update(self, name: str, changes: Mapping[str, object]) -> Camera:
        """Change a camera's source fields (``url``, ``enabled``, ...). Run here, its source restarts when
        they change, and the old one is put back when the new one cannot start; run by another worker, it
        restarts there at that worker's next lease round. Enabling a camera run here that is enabled but not
        live (failed, lost, reconnecting, or ended) restarts it too: a fresh decoder, tried now."""
        with self._lock:
            old = self.get(name)
            new = Camera(**{k: getattr(old, k) for k in ("id", "name", "created_ts", *CAMERA_FIELDS)})
            for key, value in changes.items():
                if key in CAMERA_FIELDS:
                    setattr(new, key, value)
            if "url" in changes or (new.enabled and not old.enabled):  # a new source, or one started again
                self.check(new.url)
            new.updated_ts = time.time()
            restart = any(getattr(new, k) != getattr(old, k) for k in CAMERA_FIELDS)
            if changes.get("enabled") is True and old.enabled and self.engine.source_states().get(name) != "live":
                restart = True  # "enable" on a failed camera: start it again now
            here = name in self._running or (new.enabled and not old.enabled and self._claim(name))
            if restart and here:
                self._stop(name)
                if new.enabled:
                    try:
                        self._start(new)
                    except ApiError:
                        if old.enabled:  # put the old source back
                            self._start(old)
                        raise
            self.cameras.save(new, (*CAMERA_FIELDS, "updated_ts"))
            if restart and not new.enabled and here:
                self._release(name)
        log.info("camera %s updated", name)
        return self.get(name)

    def delete(self, name: str) -> None:
        with self._lock:
            camera = self.get(name)
            self._stop(name)
            self.cameras.delete(camera.id)
            self._release(name)
            self.live.forget(name)
        log.info("camera %s deleted", name)


class _Resolved:
    """A camera source with ``realtime`` and ``loop`` filled in from the engine's camera defaults."""

    def __init__(self, source: CameraSource, realtime: bool, loop: bool) -> None:
        self.name, self.url, self.enabled = source.name, source.url, source.enabled
        self.preset, self.target_fps = source.preset, source.target_fps
        self.realtime, self.loop = realtime, loop
        self.privacy_zones = source.privacy_zones
