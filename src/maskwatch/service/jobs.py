"""Batch jobs: a video or an image archive (uploaded, or a server path inside an allow-listed folder)
analysed by a stream engine of its own on the service's models; progress, the engine's events and a
summary.

Jobs survive restarts: each job's record (state, progress, summary, the worker that runs it) lives in the
``jobs`` table, written when its state changes and about once a second while it runs, and its events go to
a JSON Lines file under ``DATA_DIR/jobs/`` as they arrive. A job belongs to the worker running it: a job
left queued or running by this worker's previous run (a stop or a crash), or by a worker that has been gone
for ``dead_after`` seconds (its heartbeat lease not renewed), is marked ``interrupted`` (its events so far
are kept) and this worker's leftover uploads are removed; send it again to re-run it. Jobs of other live
workers are never touched. Only queued and running jobs are held in memory.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from maskwatch.core.names import is_job_id
from maskwatch.data.images import has_image_extension
from maskwatch.service.errors import ApiError
from maskwatch.service.storage.jobs import JobRepository
from maskwatch.service.storage.models import JobRecord
from maskwatch.stream import EngineConfig, SourceSpec, StreamEngine
from maskwatch.stream.sources import VIDEO_EXTENSIONS

if TYPE_CHECKING:
    from maskwatch.detection.pipeline import MaskDetector

__all__ = ["FINISHED", "Job", "JobManager", "JobOut", "allowed_path", "extract_images"]

log = logging.getLogger("maskwatch.service")

#: states of a job that has finished, one way or another
FINISHED = ("done", "failed", "cancelled", "interrupted")
#: events of a job kept in its file (the rest are counted only)
KEPT_TYPES = ("track_ended", "stats", "source", "source_status")
JobState = Literal["queued", "running", "done", "failed", "cancelled", "interrupted"]
INTERRUPTED = "interrupted: the service stopped before the job finished; send it again to re-run it"


def allowed_path(raw: str, allowed_dirs: list[str]) -> Path:
    """``raw`` resolved (symlinks followed) and inside one of ``allowed_dirs``, else a 403/404 ApiError."""
    if not allowed_dirs:
        raise ApiError(403, "forbidden", "server paths are disabled (jobs.allowed_dirs is empty); upload the file")
    if "\x00" in raw:
        raise ApiError(422, "invalid", "path contains a NUL byte")
    roots = [Path(d).resolve() for d in allowed_dirs]
    candidate = Path(raw)
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    resolved = candidate.resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise ApiError(403, "forbidden", "path is outside the allowed folders (jobs.allowed_dirs)")
    if not resolved.exists():
        raise ApiError(404, "not_found", "no such file or folder inside the allowed folders")
    return resolved


def extract_images(archive: Path, into: Path, max_bytes: int) -> int:
    """Image members of a zip archive, flattened to safe names (no traversal), at most ``max_bytes``."""
    total, n = 0, 0
    into.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                name = Path(info.filename).name
                if info.is_dir() or not name or not has_image_extension(name):
                    continue
                total += info.file_size
                if total > max_bytes:
                    raise ApiError(413, "too_large", f"archive expands to more than {max_bytes} bytes")
                n += 1
                with z.open(info) as src, (into / f"{n:06d}_{name}").open("wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as exc:
        raise ApiError(415, "unsupported_media_type", "not a zip archive") from exc
    if n == 0:
        raise ApiError(422, "invalid", "the archive holds no images")
    return n


class JobOut(BaseModel):
    """A job as the API shows it."""

    id: str
    name: str
    state: JobState
    created: float
    started: float | None
    finished: float | None
    frames: int = Field(description="frames analysed so far")
    expected_frames: int | None = Field(description="frames the source will deliver, when known")
    progress: float | None = Field(description="0..1, when the number of frames is known")
    error: str | None
    summary: dict[str, Any] | None = Field(description="the engine's summary of the source (a `source` event)")
    n_events: int = Field(description="events kept for GET /jobs/{id}/events")


@dataclass
class Job:
    """A job's record; the same fields as its ``jobs`` row, plus its engine and upload folder while it runs."""

    id: str
    name: str
    state: JobState = "queued"
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    frames: int = 0
    expected: int | None = None
    error: str | None = None
    summary: dict[str, Any] | None = None
    n_events: int = 0
    events_file: str | None = None  # relative to the jobs folder
    owner: str | None = None  # the worker running it
    engine: StreamEngine | None = None
    workdir: Path | None = None

    def out(self) -> JobOut:
        progress = None
        if self.expected:
            progress = round(min(1.0, self.frames / self.expected), 4)
        if self.state == "done":
            progress = 1.0
        return JobOut(
            id=self.id,
            name=self.name,
            state=self.state,
            created=self.created,
            started=self.started,
            finished=self.finished,
            frames=self.frames,
            expected_frames=self.expected,
            progress=progress,
            error=self.error,
            summary=self.summary,
            n_events=self.n_events,
        )

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "created_ts": self.created,
            "started_ts": self.started,
            "finished_ts": self.finished,
            "frames": self.frames,
            "expected_frames": self.expected,
            "error": self.error,
            "summary": self.summary,
            "n_events": self.n_events,
            "events_file": self.events_file,
            "owner": self.owner,
        }

    @classmethod
    def from_row(cls, row: JobRecord) -> Job:
        return cls(
            id=row.id,
            name=row.name,
            state=cast(JobState, row.state),
            created=row.created_ts,
            started=row.started_ts,
            finished=row.finished_ts,
            frames=row.frames,
            expected=row.expected_frames,
            error=row.error,
            summary=row.summary,
            n_events=row.n_events,
            events_file=row.events_file,
            owner=row.owner,
        )


class JobManager:
    """Runs jobs (at most ``max_running`` at once) and keeps their records in the database.

    Args:
        jobs: the jobs' records.
        detector, config: the models and engine settings every job's engine runs.
        workdir: ``DATA_DIR/jobs``: each job's upload folder (removed when it ends) and events file.
        keep_events: events stored per job (``GET /jobs/{id}/events``); later ones are counted only.
        save_every: seconds between progress writes while a job runs.
        owner: this worker's id (recorded with each job).
    """

    def __init__(
        self,
        jobs: JobRepository,
        detector: MaskDetector,
        config: EngineConfig,
        workdir: Path,
        *,
        max_running: int,
        keep_events: int,
        save_every: float = 1.0,
        owner: str = "local",
    ) -> None:
        self.jobs = jobs
        self.owner = owner
        self._recovered = False
        self.detector = detector
        self.config = config
        self.workdir = workdir
        self.keep_events = keep_events
        self.save_every = save_every
        self.active: dict[str, Job] = {}  # queued and running jobs of this process
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(max_running)

    # -- records ---------------------------------------------------------------------------------------

    def _save(self, job: Job) -> None:
        """Write the job's record; a database outage is logged, not raised (the job goes on)."""
        try:
            self.jobs.save(job.row())
        except SQLAlchemyError as exc:
            log.warning("job %s: record not saved (%s)", job.id, type(exc).__name__)

    def recover(self, alive: set[str] | None = None) -> int:
        """Interrupt the jobs left queued or running by workers that are not ``alive`` (worker ids; None:
        no worker but this one). The first call (at start) also interrupts this worker's own previous
        run's jobs and removes its leftover upload folders. Returns how many jobs were interrupted."""
        others = set(alive or ()) - {self.owner}
        first = not self._recovered
        mine = set() if first else {self.owner}  # at start, this worker's own earlier jobs were cut short
        try:
            ids = self.jobs.interrupt_unfinished(INTERRUPTED, time.time(), alive=others | mine)
        except SQLAlchemyError as exc:
            log.warning("jobs of stopped workers not checked (%s)", type(exc).__name__)
            return 0
        if first:
            self._recovered = True
            self.workdir.mkdir(parents=True, exist_ok=True)
            running_elsewhere = self.jobs.unfinished_of(others) if others else set()
            for leftover in self.workdir.iterdir():  # this worker's uploads of jobs cut short
                if leftover.is_dir() and leftover.name not in self.active and leftover.name not in running_elsewhere:
                    shutil.rmtree(leftover, ignore_errors=True)
        if ids:
            log.warning("%d job(s) interrupted (their worker stopped): %s", len(ids), ", ".join(ids))
        return len(ids)

    def get(self, job_id: str) -> Job:
        job = self.active.get(job_id)
        if job is not None:
            return job
        # an id that no job can have is not looked up (a NUL is an error on PostgreSQL)
        row = self.jobs.get(job_id) if is_job_id(job_id) else None
        if row is None:
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        return Job.from_row(row)

    def recent(self, limit: int = 100) -> list[Job]:
        """The newest jobs, running ones with their live progress."""
        rows = self.jobs.newest(limit)
        return [self.active.get(row.id) or Job.from_row(row) for row in rows]

    def events(self, job: Job) -> list[dict[str, Any]]:
        """The job's stored events (the file is appended to while it runs; a line being written is skipped)."""
        if not job.events_file:
            return []
        path = self.workdir / job.events_file
        out: list[dict[str, Any]] = []
        try:
            with path.open(encoding="utf-8") as lines:
                for line in lines:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        break
        except FileNotFoundError:
            pass
        return out

    def purge(self, before: float) -> int:
        """Retention: finished jobs older than ``before`` and their event files."""
        rows = self.jobs.delete_finished_before(FINISHED, before)
        for _, events_file in rows:
            if events_file:
                (self.workdir / events_file).unlink(missing_ok=True)
        return len(rows)

    # -- running ---------------------------------------------------------------------------------------

    def new_dir(self) -> tuple[str, Path]:
        """A new job id and its upload folder."""
        job_id = uuid.uuid4().hex[:12]
        path = self.workdir / job_id
        path.mkdir(parents=True, exist_ok=True)
        return job_id, path

    def submit(self, source: Path, name: str, job_id: str | None = None, workdir: Path | None = None) -> Job:
        """Start a job on a video, an image, a folder of images or a zip of images (extracted into the job's
        folder); ``job_id`` and ``workdir`` come from :meth:`new_dir` when the source was uploaded there."""
        if source.is_file() and source.suffix.lower() == ".zip":
            job_id, workdir = (job_id, workdir) if job_id and workdir else self.new_dir()
            extract_images(source, workdir / "images", 2_000_000_000)
            source = workdir / "images"
        elif source.is_file() and source.suffix.lower() not in VIDEO_EXTENSIONS and not has_image_extension(source):
            raise ApiError(415, "unsupported_media_type", "a job takes a video, an image, a folder or a zip of images")
        job_id = job_id or uuid.uuid4().hex[:12]
        job = Job(
            id=job_id,
            name=name,
            created=time.time(),
            workdir=workdir,
            events_file=f"{job_id}.events.jsonl",
            owner=self.owner,
        )
        engine = StreamEngine(
            self.detector, EngineConfig(**{**self.config.__dict__, "stop_when_done": True, "snapshots": False})
        )
        try:
            engine.add_source(SourceSpec(uri=str(source), name=name))
        except Exception as exc:
            raise ApiError(422, "bad_source", str(exc)) from exc
        job.engine = engine
        with self._lock:
            self.active[job.id] = job
        self._save(job)
        threading.Thread(target=self._run, args=(job,), name=f"maskwatch-job-{job.id}", daemon=True).start()
        return job

    def _run(self, job: Job) -> None:
        with self._slots:
            try:
                if job.state == "queued":
                    self._analyse(job)
            finally:
                job.finished = job.finished or time.time()
                if job.workdir is not None:
                    shutil.rmtree(job.workdir, ignore_errors=True)
                self._save(job)
                with self._lock:
                    self.active.pop(job.id, None)

    def _analyse(self, job: Job) -> None:
        job.state, job.started = "running", time.time()
        self._save(job)
        engine = job.engine
        assert engine is not None
        sub = engine.events(frames=True, maxsize=64)
        engine.start()
        saved = time.monotonic()
        assert job.events_file is not None
        try:
            with (self.workdir / job.events_file).open("a", encoding="utf-8") as out:
                for item in sub:
                    if hasattr(item, "frame") and hasattr(item, "result"):  # AnalysedFrame
                        job.frames += 1
                        job.expected = item.expected or job.expected
                    else:
                        if item.type == "source":
                            job.summary = item.to_dict()
                            job.expected = job.expected or item.frames
                        if item.type in KEPT_TYPES and job.n_events < self.keep_events:
                            out.write(item.to_json() + "\n")  # one write per line: readers see whole lines
                            out.flush()
                            job.n_events += 1
                    if time.monotonic() - saved >= self.save_every:
                        self._save(job)
                        saved = time.monotonic()
            engine.join(5)
            if job.state == "running":
                error = (job.summary or {}).get("error")
                job.state, job.error = ("failed", error) if error else ("done", None)
        except Exception as exc:
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("job %s failed", job.id)

    def cancel(self, job_id: str, *, state: JobState = "cancelled", error: str | None = None) -> Job:
        job = self.get(job_id)
        if job.state in ("queued", "running"):
            job.state, job.error = state, error
            job.finished = time.time()
            if job.engine is not None and job.engine.running:
                job.engine.stop(2.0)
            self._save(job)
        return job

    def stop(self) -> None:
        """Service stop: the jobs still queued or running are interrupted (not cancelled by anyone)."""
        for job in list(self.active.values()):
            self.cancel(job.id, state="interrupted", error=INTERRUPTED)
