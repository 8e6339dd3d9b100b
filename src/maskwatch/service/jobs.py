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

Refused work leaves nothing behind: a job's input is checked before anything is written for it (a zip's
directory: member count, total extracted size and compression ratios; an image's size in pixels, read from
its header; a video's frame size, read from its container) and a refused upload's folder is removed. A
job none of whose inputs could be analysed ends ``failed`` with the reasons. At most ``max_queued`` jobs
(and ``max_queued_bytes`` of uploads) wait or run at once.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import struct
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
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

__all__ = [
    "FINISHED",
    "Job",
    "JobImage",
    "JobLimits",
    "JobManager",
    "JobOut",
    "allowed_path",
    "check_archive",
    "extract_images",
    "video_frame_size",
]

log = logging.getLogger("maskwatch.service")

#: states of a job that has finished, one way or another
FINISHED = ("done", "failed", "cancelled", "interrupted")
#: events of a job kept in its file (the rest are counted only); still images also keep their ``frame``
#: event (faces per image: GET /jobs/{id}/images)
KEPT_TYPES = ("track_ended", "stats", "source", "source_status")
UPLOAD_PREFIX = re.compile(r"^\d{6}_")  # extract_images numbers the members of an archive
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


@dataclass(frozen=True)
class JobLimits:
    """What one job may bring (``limits.*`` and ``jobs.*`` settings)."""

    archive_members: int = 10_000  # entries in a zip
    archive_bytes: int = 2_000_000_000  # its image members' total size once extracted
    archive_ratio: float = 100.0  # extracted / compressed, per member and for the whole archive
    image_pixels: int = 40_000_000  # an image's size (the same limit as POST /infer)
    frame_pixels: int = 33_177_600  # a video's frame size
    max_queued: int = 20  # jobs waiting or running at once
    max_queued_bytes: int = 5_000_000_000  # their uploads on disk together


#: compressed members smaller than this are not held to the ratio (a few kB of a flat PNG compress well)
RATIO_FLOOR = 1 << 20


def _zip_entries(archive: Path) -> int:
    """The number of entries a zip's end record declares, read before :mod:`zipfile` parses the directory
    (a directory of millions of entries would take gigabytes to parse). -1 when there is no end record."""
    size = archive.stat().st_size
    with archive.open("rb") as f:
        f.seek(max(0, size - 65_557))  # the end record (22 bytes) and its comment (at most 65 535)
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) < at + 22:
        return -1
    (entries,) = struct.unpack("<H", tail[at + 10 : at + 12])
    if entries == 0xFFFF:  # zip64: the count is in the zip64 end record
        at64 = tail.rfind(b"PK\x06\x06")
        if at64 >= 0 and len(tail) >= at64 + 40:
            (entries,) = struct.unpack("<Q", tail[at64 + 32 : at64 + 40])
    return int(entries)


def check_archive(archive: Path, limits: JobLimits) -> list[zipfile.ZipInfo]:
    """The image members of a zip, checked from its directory before anything is extracted: at most
    ``archive_members`` entries, at most ``archive_bytes`` of images once extracted, no member nor the
    whole archive expanding more than ``archive_ratio`` times (zip bombs). 413/415/422 ApiError otherwise.
    The declared sizes are then enforced while extracting (:mod:`zipfile` stops at a member's declared
    size and fails its checksum if there was more)."""
    entries = _zip_entries(archive)
    if entries > limits.archive_members:
        raise ApiError(413, "too_large", f"the archive has {entries} entries; at most {limits.archive_members}")
    try:
        with zipfile.ZipFile(archive) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ApiError(415, "unsupported_media_type", "not a zip archive") from exc
    if len(infos) > limits.archive_members:
        raise ApiError(413, "too_large", f"the archive has {len(infos)} entries; at most {limits.archive_members}")
    images = [i for i in infos if not i.is_dir() and Path(i.filename).name and has_image_extension(i.filename)]
    if not images:
        raise ApiError(422, "invalid", "the archive holds no images")
    total = sum(i.file_size for i in images)
    if total > limits.archive_bytes:
        raise ApiError(413, "too_large", f"the archive expands to {total} bytes; at most {limits.archive_bytes}")
    for info in images:
        if info.file_size > RATIO_FLOOR and info.file_size > limits.archive_ratio * max(1, info.compress_size):
            raise ApiError(
                413,
                "too_large",
                f"{Path(info.filename).name!r} expands {info.file_size / max(1, info.compress_size):.0f} times "
                f"(at most {limits.archive_ratio:g}): a zip bomb?",
            )
    packed = max(1, archive.stat().st_size)
    if total > RATIO_FLOOR and total > limits.archive_ratio * packed:
        raise ApiError(
            413, "too_large", f"the archive expands {total / packed:.0f} times (at most {limits.archive_ratio:g})"
        )
    return images


def extract_images(archive: Path, into: Path, limits: JobLimits) -> int:
    """Image members of a zip archive (checked first: :func:`check_archive`), flattened to safe names (no
    traversal), each image's pixels checked from its header once written."""
    images = check_archive(archive, limits)
    into.mkdir(parents=True, exist_ok=True)
    n = 0
    try:
        with zipfile.ZipFile(archive) as z:
            for info in images:
                n += 1
                target = into / f"{n:06d}_{Path(info.filename).name}"
                with z.open(info) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
                check_image_pixels(target, limits.image_pixels)
    except zipfile.BadZipFile as exc:
        raise ApiError(415, "unsupported_media_type", f"damaged zip archive: {exc}") from exc
    return n


def check_image_pixels(path: Path, max_pixels: int) -> None:
    """413 when an image's header declares more than ``max_pixels`` (nothing is decoded); an image that
    cannot be read is left to the engine (skipped and counted there)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return
    if width * height > max_pixels:
        raise ApiError(
            413, "too_large", f"{path.name}: {width}x{height} is over the limit of {max_pixels} pixels (upload_pixels)"
        )


def video_frame_size(path: Path) -> tuple[int, int]:
    """(width, height) of a video's frames as its container declares them, read without decoding a frame
    (FFmpeg restricted to local files); (0, 0) when it cannot be opened."""
    import cv2

    from maskwatch.stream.sources import open_capture

    capture = open_capture(str(path), "file")
    try:
        if not capture.isOpened():
            return 0, 0
        return int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    finally:
        capture.release()


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
    queued_s: float | None = Field(description="seconds it waited for a free slot (jobs.max_running)")
    analysis_s: float | None = Field(description="seconds of analysis, from its start (not its submission)")
    error: str | None
    summary: dict[str, Any] | None = Field(
        description="the engine's summary of the source (a `source` event; its `seconds` count analysis only)"
    )
    n_events: int = Field(description="events kept for GET /jobs/{id}/events (a still image's faces: one each)")


class JobImage(BaseModel):
    """One image of an image job (a zip, a folder or one image): its faces."""

    index: int = Field(description="its place in the job, from 0")
    name: str = Field(description="the image's file name (in the archive or the folder)")
    width: int
    height: int
    n_faces: int
    counts: dict[str, int] = Field(description="faces per class")
    compliance: float | None = Field(description="share of its faces wearing a mask; None without faces")


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
        queued = None if self.started is None else round(max(0.0, self.started - self.created), 3)
        end = self.finished if self.finished is not None else time.time()
        analysis = None if self.started is None else round(max(0.0, end - self.started), 3)
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
            queued_s=queued,
            analysis_s=analysis,
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
        limits: JobLimits | None = None,
        owner: str = "local",
    ) -> None:
        self.jobs = jobs
        self.limits = limits or JobLimits()
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

    def images(self, job: Job) -> list[JobImage]:
        """The faces of each image of an image job, in the order analysed (from its stored ``frame`` events)."""
        out: list[JobImage] = []
        for event in self.events(job):
            if event.get("type") != "frame" or event.get("path") is None:
                continue
            out.append(
                JobImage(
                    index=len(out),
                    name=str(event["path"]),
                    width=int(event.get("width", 0)),
                    height=int(event.get("height", 0)),
                    n_faces=int(event.get("n_faces", 0)),
                    counts={str(k): int(v) for k, v in (event.get("counts") or {}).items()},
                    compliance=event.get("compliance"),
                )
            )
        return out

    def purge(self, before: float) -> int:
        """Retention: finished jobs older than ``before`` and their event files."""
        rows = self.jobs.delete_finished_before(FINISHED, before)
        for _, events_file in rows:
            if events_file:
                (self.workdir / events_file).unlink(missing_ok=True)
        return len(rows)

    # -- running ---------------------------------------------------------------------------------------

    def queued_bytes(self) -> int:
        """Bytes of the uploads of the jobs waiting or running (their folders)."""
        total = 0
        for job in list(self.active.values()):
            if job.workdir is not None and job.workdir.is_dir():
                total += sum(p.stat().st_size for p in job.workdir.rglob("*") if p.is_file())
        return total

    def admit(self, size: int = 0) -> None:
        """429 when ``max_queued`` jobs wait or run, or their uploads and ``size`` more bytes would pass
        ``max_queued_bytes``: checked before an upload is written."""
        limits = self.limits
        if len(self.active) >= limits.max_queued:
            raise ApiError(
                429,
                "too_many_jobs",
                f"{len(self.active)} jobs are queued or running (jobs.max_queued); retry when one has finished",
                headers={"Retry-After": "30"},
            )
        if size and self.queued_bytes() + size > limits.max_queued_bytes:
            raise ApiError(
                429,
                "too_many_jobs",
                f"the queued jobs' uploads would pass {limits.max_queued_bytes} bytes (jobs.max_queued_bytes)",
                headers={"Retry-After": "30"},
            )

    @contextmanager
    def upload_dir(self) -> Iterator[tuple[str, Path]]:
        """A new job id and its upload folder, removed again unless a job took it (refused work leaves
        nothing on disk)."""
        job_id = uuid.uuid4().hex[:12]
        path = self.workdir / job_id
        path.mkdir(parents=True, exist_ok=True)
        try:
            yield job_id, path
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise

    def _check_input(self, source: Path) -> None:
        """Pixel limits, from headers only: an image's (and a folder's images'), a video's frames."""
        limits = self.limits
        if source.is_dir():
            for path in sorted(source.rglob("*")):
                if path.is_file() and has_image_extension(path):
                    check_image_pixels(path, limits.image_pixels)
        elif has_image_extension(source):
            check_image_pixels(source, limits.image_pixels)
        elif source.suffix.lower() in VIDEO_EXTENSIONS:
            width, height = video_frame_size(source)
            if width * height > limits.frame_pixels:
                raise ApiError(
                    413,
                    "too_large",
                    f"the video's frames are {width}x{height}, over the limit of {limits.frame_pixels} pixels "
                    "(limits.frame_pixels)",
                )

    def submit(self, source: Path, name: str, job_id: str | None = None, workdir: Path | None = None) -> Job:
        """Start a job on a video, an image, a folder of images or a zip of images (extracted into the job's
        folder); ``job_id`` and ``workdir`` come from :meth:`upload_dir` when the source was uploaded there.
        Everything is checked before the job is queued; a refused job's folder is removed."""
        self.admit()
        made_dir = False
        try:
            if source.is_file() and source.suffix.lower() == ".zip":
                if not (job_id and workdir):
                    job_id, workdir, made_dir = uuid.uuid4().hex[:12], None, True
                    workdir = self.workdir / job_id
                    workdir.mkdir(parents=True, exist_ok=True)
                check_archive(source, self.limits)  # before anything is extracted
                extract_images(source, workdir / "images", self.limits)
                source = workdir / "images"
            elif source.is_file() and source.suffix.lower() not in VIDEO_EXTENSIONS and not has_image_extension(source):
                raise ApiError(
                    415, "unsupported_media_type", "a job takes a video, an image, a folder or a zip of images"
                )
            self._check_input(source)
            return self._start(source, name, job_id, workdir)
        except BaseException:
            if made_dir and workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
            raise

    def _start(self, source: Path, name: str, job_id: str | None, workdir: Path | None) -> Job:
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
                        path = item.event.path
                        if path is not None and job.n_events < self.keep_events:  # a still image: its faces
                            name = UPLOAD_PREFIX.sub("", Path(path).name)  # never the server's path
                            out.write(item.event.model_copy(update={"path": name}).to_json() + "\n")
                            out.flush()
                            job.n_events += 1
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
                summary = job.summary or {}
                error = summary.get("error")
                if not error and job.frames == 0:  # every input failed (or there was none): not "done"
                    reasons = summary.get("skipped_reasons") or []
                    error = f"no input could be analysed ({summary.get('skipped', 0)} skipped)" + (
                        ": " + "; ".join(str(r) for r in reasons[:3]) if reasons else ""
                    )
                job.state, job.error = ("failed", error[:1000]) if error else ("done", None)
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
