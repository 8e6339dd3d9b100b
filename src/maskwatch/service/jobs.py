"""Batch jobs: a video or an image archive (uploaded, or a server path inside an allow-listed folder)
analysed by a stream engine of its own on the service's models; progress, the engine's events and a
summary. Jobs live in memory (they are re-run rather than resumed after a restart)."""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maskwatch.data.images import has_image_extension
from maskwatch.service.errors import ApiError
from maskwatch.stream import EngineConfig, SourceSpec, StreamEngine
from maskwatch.stream.sources import VIDEO_EXTENSIONS

log = logging.getLogger("maskwatch.service")


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


@dataclass
class Job:
    id: str
    name: str
    state: str = "queued"  # queued | running | done | failed | cancelled
    created: float = field(default_factory=time.time)
    finished: float | None = None
    frames: int = 0
    expected: int | None = None
    error: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    engine: Any = None
    workdir: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        progress = None
        if self.expected:
            progress = round(min(1.0, self.frames / self.expected), 4)
        if self.state == "done":
            progress = 1.0
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "created": self.created,
            "finished": self.finished,
            "frames": self.frames,
            "expected_frames": self.expected,
            "progress": progress,
            "error": self.error,
            "summary": self.summary,
            "n_events": len(self.events),
        }


class JobManager:
    def __init__(self, detector: Any, config: EngineConfig, workdir: Path, *, max_running: int, keep_events: int):
        self.detector = detector
        self.config = config
        self.workdir = workdir
        self.keep_events = keep_events
        self.jobs: dict[str, Job] = {}
        self._slots = threading.Semaphore(max_running)

    def new_dir(self) -> tuple[str, Path]:
        job_id = uuid.uuid4().hex[:12]
        path = self.workdir / job_id
        path.mkdir(parents=True, exist_ok=True)
        return job_id, path

    def submit(self, source: Path, name: str, job_id: str | None = None, workdir: Path | None = None) -> Job:
        if source.is_file() and source.suffix.lower() == ".zip":
            job_id, workdir = (job_id, workdir) if job_id and workdir else self.new_dir()
            extract_images(source, workdir / "images", 2_000_000_000)
            source = workdir / "images"
        elif source.is_file() and source.suffix.lower() not in VIDEO_EXTENSIONS and not has_image_extension(source):
            raise ApiError(415, "unsupported_media_type", "a job takes a video, an image, a folder or a zip of images")
        job = Job(id=job_id or uuid.uuid4().hex[:12], name=name, workdir=workdir)
        engine = StreamEngine(
            self.detector, EngineConfig(**{**self.config.__dict__, "stop_when_done": True, "snapshots": False})
        )
        try:
            engine.add_source(SourceSpec(uri=str(source), name=name))
        except Exception as exc:
            raise ApiError(422, "bad_source", str(exc)) from exc
        job.engine = engine
        self.jobs[job.id] = job
        threading.Thread(target=self._run, args=(job,), name=f"maskwatch-job-{job.id}", daemon=True).start()
        return job

    def _run(self, job: Job) -> None:
        with self._slots:
            if job.state == "cancelled":
                return
            job.state = "running"
            engine = job.engine
            sub = engine.events(frames=True, maxsize=64)
            engine.start()
            try:
                for item in sub:
                    if hasattr(item, "frame") and hasattr(item, "result"):  # AnalysedFrame
                        job.frames += 1
                        job.expected = item.expected or job.expected
                        continue
                    if item.type == "source":
                        job.summary = item.to_dict()
                        job.expected = job.expected or item.frames
                    if (
                        item.type in ("track_ended", "stats", "source", "source_status")
                        and len(job.events) < self.keep_events
                    ):
                        job.events.append(item.to_dict())
                engine.join(5)
                if job.state != "cancelled":
                    error = (job.summary or {}).get("error")
                    job.state, job.error = ("failed", error) if error else ("done", None)
            except Exception as exc:
                job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
                log.exception("job %s failed", job.id)
            finally:
                job.finished = time.time()
                if job.workdir is not None:
                    shutil.rmtree(job.workdir, ignore_errors=True)

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state in ("queued", "running"):
            job.state = "cancelled"
            if job.engine is not None and job.engine.running:
                job.engine.stop(2.0)
        return job

    def stop(self) -> None:
        for job in list(self.jobs.values()):
            if job.state in ("queued", "running"):
                self.cancel(job.id)
