"""Several ``maskwatch serve`` workers on one database: who runs which local camera, who evaluates the alert
rules, and which workers are alive, through leases in the database (:mod:`maskwatch.service.storage.leases`).

* **A worker** is one process with its own data dir, which holds its identity (``DATA_DIR/worker-id``, made
  once) and its durable spool; a lock file (``DATA_DIR/worker.lock``, ``flock``) refuses a second process on
  the same data dir. So a worker restarted on its data dir is the same worker: it keeps its leases (no wait
  for them to expire) and stores what its spool holds. Its heartbeat is the lease ``worker:ID``.
* **Cameras**: each enabled local camera is run by the one worker holding the lease ``camera:NAME``. Every
  ``renew_every`` seconds the :class:`Coordinator` renews its leases and takes free or expired ones (up to
  its fair share of the cameras among the live workers; any camera nobody took within ``ttl``), then tells
  the :class:`~maskwatch.service.cameras.CameraManager` which cameras to run. A dead (SIGKILL) or stalled
  (SIGSTOP) worker's cameras move to another one at most ``ttl + renew_every`` seconds after its last
  renewal. A worker that finds a lease taken stops that camera at once, and :meth:`Coordinator.admit`
  drops every event of a camera whose lease it does not hold for sure (after a stall it asks the database
  first), so no camera is counted by two workers.
* **Alert rules** are evaluated by the worker holding the lease ``alerts`` (one elected worker).
* **Database outage**: leases cannot be renewed, but nobody can take them either; a worker keeps running
  its cameras (their events wait in the spool) and holds on to its leases. Not covered: a worker cut off
  from the database while the others still reach it keeps its cameras, and another worker takes them over
  after ``ttl``: both count them until the first one reaches the database again and stops (docs/deploy.md).

Leases use the database's clock; renewals are measured on this worker's monotonic clock from *before* the
request, so this worker always considers a lease lost before the database lets another worker take it.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from maskwatch.service.storage.cameras import CameraRepository
from maskwatch.service.storage.leases import Lease, LeaseRepository
from maskwatch.service.storage.models import Camera

__all__ = ["ALERTS_LEASE", "Coordinator", "DataDirLock", "camera_lease", "worker_id", "worker_lease"]

log = logging.getLogger("maskwatch.service")

ALERTS_LEASE = "alerts"
CAMERA_PREFIX = "camera:"
WORKER_PREFIX = "worker:"


def camera_lease(name: str) -> str:
    return CAMERA_PREFIX + name


def worker_lease(worker: str) -> str:
    return WORKER_PREFIX + worker


def worker_id(data_dir: Path, configured: str | None = None) -> str:
    """This worker's name: ``configured`` (``workers.id``), else the one kept in ``DATA_DIR/worker-id``,
    made once as ``HOST-RANDOM``."""
    if configured:
        return configured
    path = data_dir / "worker-id"
    try:
        kept = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        kept = ""
    if kept:
        return kept
    made = f"{socket.gethostname()[:48]}-{secrets.token_hex(4)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(made + "\n", encoding="utf-8")
    return made


class DataDirLock:
    """An exclusive ``flock`` on ``DATA_DIR/worker.lock`` for the life of the process (released by the
    kernel when it dies, even on SIGKILL): a second worker on the same data dir is refused."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "worker.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise RuntimeError(
                f"another maskwatch serve uses the data dir {self.path.parent} (each worker needs its own --data-dir)"
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class Coordinator:
    """This worker's leases, renewed on a thread; see the module docstring.

    Args:
        leases, cameras: the repositories.
        worker: this worker's id.
        ttl: a lease not renewed for this long may be taken by another worker.
        renew_every: seconds between rounds (renewals, take-overs, the cameras to run).
        run_cameras: told after every round which cameras this worker holds (name -> row), to start, stop
            or restart them (``CameraManager.reconcile``).
        on_workers: told after every round the workers heard of within ``dead_after`` seconds (the job
            manager interrupts the jobs of the others).
        lock: held for a round's leases and cameras; the camera manager holds it for each API change, so
            the two never interleave.
        clock: monotonic seconds (tests).
    """

    def __init__(
        self,
        leases: LeaseRepository,
        cameras: CameraRepository,
        worker: str,
        *,
        ttl: float = 10.0,
        renew_every: float = 3.0,
        dead_after: float = 120.0,
        run_cameras: Callable[[Mapping[str, Camera]], None] | None = None,
        on_workers: Callable[[set[str]], None] | None = None,
        lock: threading.RLock | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if renew_every * 2 >= ttl:
            raise ValueError("leases: renew_every must be under half of ttl")
        self.leases = leases
        self.cameras = cameras
        self.worker = worker
        self.ttl = ttl
        self.renew_every = renew_every
        self.dead_after = dead_after
        self.run_cameras = run_cameras
        self.on_workers = on_workers
        self.clock = clock
        self._round_lock = lock or threading.RLock()  # shared with the camera manager's API changes
        self._held: dict[str, float] = {}  # lease -> confirmed until (monotonic)
        self._outage_at: float | None = None  # the last round could not reach the database (monotonic)
        self._round_started: float | None = None  # a round waiting for the database since (monotonic)
        self._free_since: dict[str, float] = {}
        self._rounds = 0
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._stop = threading.Event()  # no more rounds (pause or stop)
        self._thread: threading.Thread | None = None
        self.owners: dict[str, str] = {}  # camera -> worker running it (as of the last round)
        self.workers: set[str] = set()  # live workers (as of the last round)
        self.last_error: str | None = None

    # -- what other components ask -----------------------------------------------------------------------

    def holds(self, name: str) -> bool:
        """This worker holds lease ``name`` for sure (renewed less than ``ttl`` ago)."""
        with self._cond:
            until = self._held.get(name)
            return until is not None and self.clock() < until

    @property
    def leader(self) -> bool:
        """This worker evaluates the alert rules."""
        return self.holds(ALERTS_LEASE)

    def admit(self, camera: str) -> bool:
        """Whether an event of local camera ``camera`` may be counted: this worker holds its lease (or
        cannot reach the database, where nobody else can take it). A lease not renewed in time (the worker
        was stalled) is checked with the database first: waits for the next round (at most ``ttl``)."""
        name = camera_lease(camera)
        deadline = self.clock() + self.ttl
        with self._cond:
            while True:
                until = self._held.get(name)
                if until is None:
                    return False
                now = self.clock()
                if now < until or self._database_slow(now, until) or self._stop.is_set():
                    return True  # (stopping: no round will come; the leases are given up after the last events)
                if now >= deadline:
                    return False
                self._wake.set()
                self._cond.wait_for(functools.partial(self._round_after, self._rounds), deadline - now)

    def _round_after(self, rounds: int) -> bool:
        return self._rounds > rounds or self._stop.is_set()

    def _database_slow(self, now: float, until: float) -> bool:
        """This worker kept renewing in time but the database has not answered: a renewal begun before the
        lease lapsed is still waiting, or rounds keep failing (an outage). Nobody can take the lease from
        the database meanwhile, so this worker's cameras keep counting (into the spool). After a stall
        (SIGSTOP), neither holds: the next round decides."""
        started = self._round_started
        if started is not None and (started <= until or self._outage_at is not None):
            return True
        return self._outage_at is not None and now - self._outage_at < 2 * self.renew_every + 1.0

    def claim(self, camera: str) -> bool:
        """Take the lease of ``camera`` now (a camera added or enabled through this worker's API); True when
        this worker holds it."""
        t0 = self.clock()
        with self._round_lock:
            got = self.leases.acquire(camera_lease(camera), self.worker, self.ttl)
        if got is None:
            return False
        with self._cond:
            self._held[got.name] = t0 + self.ttl
            self.owners[camera] = self.worker
        return True

    def release(self, camera: str) -> None:
        """Give up the lease of ``camera`` (removed or disabled through this worker's API)."""
        with self._cond:
            self._held.pop(camera_lease(camera), None)
            self.owners.pop(camera, None)
        self.leases.release(self.worker, [camera_lease(camera)])

    # -- rounds --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """One round now (this worker's cameras start before this returns), then one every ``renew_every``."""
        self._stop.clear()
        self.round()
        self._thread = threading.Thread(target=self._run, name="maskwatch-leases", daemon=True)
        self._thread.start()

    def pause(self) -> None:
        """No more rounds (the service is stopping: its cameras stay as they are while they end)."""
        self._stop.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def stop(self, release: bool = True) -> None:
        """Stop renewing; ``release``: give every lease up so that other workers take over at once."""
        self.pause()
        if release:
            try:
                self.leases.release(self.worker)
            except Exception as exc:
                log.warning("leases not released (%s): other workers take over when they expire", type(exc).__name__)
        with self._cond:
            self._held.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.renew_every)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.round()
            except Exception:
                log.exception("lease round failed")

    def round(self) -> None:
        """Renew, take what is free, release what is gone, then tell the cameras and the jobs."""
        with self._round_lock:
            recent = self._round()
        if recent is not None and self.on_workers is not None:
            self.on_workers(recent)

    def _round(self) -> set[str] | None:
        t0 = self.clock()
        with self._cond:
            self._round_started = t0
        try:
            owned, recent = self._exchange(t0)
        except Exception as exc:
            with self._cond:
                self._round_started = None
                if self._outage_at is None:
                    log.error(
                        "leases not renewed (database unreachable: %s); keeping this worker's cameras",
                        type(exc).__name__,
                    )
                self._outage_at = t0
                self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:240]
                self._rounds += 1
                self._cond.notify_all()
            return None
        with self._cond:
            if self._outage_at is not None:
                log.warning("leases renewed again")
            self._outage_at, self.last_error, self._round_started = None, None, None
            self._rounds += 1
            self._cond.notify_all()
        if self.run_cameras is not None:
            self.run_cameras(owned)
        return recent

    def _exchange(self, t0: float) -> tuple[dict[str, Camera], set[str]]:
        """The database part of a round; returns (the cameras this worker holds, the workers heard of
        within ``dead_after``)."""
        me = worker_lease(self.worker)
        kept = self.leases.renew(self.worker, None, self.ttl)  # every lease this worker holds in the database
        if me not in kept and self.leases.acquire(me, self.worker, self.ttl) is not None:
            kept.add(me)
        now, all_leases = self.leases.all()
        by_name: dict[str, Lease] = {lease.name: lease for lease in all_leases}
        enabled = {c.name: c for c in self.cameras.all(by="id") if c.enabled}
        heartbeats = [lease for lease in all_leases if lease.name.startswith(WORKER_PREFIX)]
        live = {lease.holder for lease in heartbeats if lease.expires >= now} | {self.worker}
        recent = {lease.holder for lease in heartbeats if lease.expires >= now - self.dead_after} | {self.worker}

        held = {name for name in kept if name.startswith(CAMERA_PREFIX)}
        gone = [name for name in held if name[len(CAMERA_PREFIX) :] not in enabled]
        if gone:  # removed or disabled by another worker's API
            self.leases.release(self.worker, gone)
            held.difference_update(gone)
            kept.difference_update(gone)
        share = math.ceil(len(enabled) / max(1, len(live)))
        for name in enabled:
            key = camera_lease(name)
            lease = by_name.get(key)
            if key in kept or (lease is not None and lease.expires >= now):
                self._free_since.pop(name, None)
                continue
            first = self._free_since.setdefault(name, t0)
            fair = len(held) < share or t0 - first >= self.ttl  # a fair share, or nobody took it in time
            if fair and self.leases.acquire(key, self.worker, self.ttl) is not None:
                kept.add(key)
                held.add(key)
                self._free_since.pop(name, None)
        alerts = by_name.get(ALERTS_LEASE)
        free = ALERTS_LEASE not in kept and (alerts is None or alerts.expires < now)
        if free and self.leases.acquire(ALERTS_LEASE, self.worker, self.ttl) is not None:
            kept.add(ALERTS_LEASE)
            log.info("this worker (%s) evaluates the alert rules", self.worker)

        with self._cond:
            lost = set(self._held) - kept
            for name in lost:
                if name.startswith(CAMERA_PREFIX) and name[len(CAMERA_PREFIX) :] in enabled:
                    log.warning("camera %s: taken over by another worker; stopped here", name[len(CAMERA_PREFIX) :])
                elif name == ALERTS_LEASE:
                    log.warning("alert rules: another worker evaluates them now")
            self._held = dict.fromkeys(kept, t0 + self.ttl)
            owners = {
                lease.name[len(CAMERA_PREFIX) :]: lease.holder
                for lease in all_leases
                if lease.name.startswith(CAMERA_PREFIX) and lease.expires >= now
            }
            owners.update({name[len(CAMERA_PREFIX) :]: self.worker for name in held})
            self.owners = {name: owner for name, owner in owners.items() if name in enabled}
            self.workers = live
        return {name[len(CAMERA_PREFIX) :]: enabled[name[len(CAMERA_PREFIX) :]] for name in held}, recent
