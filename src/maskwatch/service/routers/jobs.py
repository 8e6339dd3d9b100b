"""Batch jobs: upload a video / image / zip of images, or name a server path inside jobs.allowed_dirs.

The upload is read on the event loop but written, checked, extracted and started on worker threads
(``run_in_threadpool``), so a large zip or a slow database never stalls the other requests."""

from __future__ import annotations

import asyncio
import re

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, JsonValue
from starlette.datastructures import UploadFile

from maskwatch.service.deps import AuditDep, JobsDep, Operator, SettingsDep, Viewer
from maskwatch.service.errors import ApiError, parse_json_body
from maskwatch.service.jobs import JobImage, JobOut, JobState, allowed_path
from maskwatch.service.uploads import IMAGE_TYPES, VIDEO_SUFFIX, sniff, upload_body

__all__ = ["JobEvents", "JobImages", "router"]

router = APIRouter(prefix="/jobs", tags=["jobs"])

_BODY = upload_body(
    {"type": "object", "required": ["path"], "additionalProperties": False, "properties": {"path": {"type": "string"}}}
)


@router.post(
    "",
    status_code=202,
    summary="Start a job on an upload or an allow-listed server path",
    openapi_extra={"requestBody": _BODY},
)
async def create_job(
    request: Request, jobs: JobsDep, settings: SettingsDep, audit: AuditDep, principal: Operator
) -> JobOut:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        payload = parse_json_body(await request.body())
        if not isinstance(payload, dict) or not isinstance(payload.get("path"), str) or set(payload) != {"path"}:
            raise ApiError(422, "invalid", 'JSON body must be {"path": "..."}')
        source = await asyncio.to_thread(allowed_path, payload["path"], settings.jobs.allowed_dirs)
        job = await asyncio.to_thread(jobs.submit, source, source.name)
    elif ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=5)
        except Exception as exc:
            raise ApiError(400, "bad_request", f"malformed multipart body: {exc}") from exc
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "invalid", "multipart field 'file' is required")
        head = await upload.read(16)
        kind = sniff(head)
        if kind is None:
            raise ApiError(415, "unsupported_media_type", "not a video, an image or a zip of images (content sniffed)")
        suffix = VIDEO_SUFFIX.get(kind) or "." + kind.split("/")[1].replace("jpeg", "jpg")
        if kind in IMAGE_TYPES:
            suffix = ".jpg" if kind == "image/jpeg" else f".{kind.split('/')[1]}"
        await asyncio.to_thread(jobs.admit, upload.size or 0)  # before anything is written
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", (upload.filename or "upload"))[:60] or "upload"
        with jobs.upload_dir() as (job_id, workdir):  # removed again if the job is refused
            target = workdir / f"upload{suffix}"
            out = await asyncio.to_thread(target.open, "wb")  # disk writes off the event loop
            try:
                await asyncio.to_thread(out.write, head)
                while chunk := await upload.read(1 << 20):
                    await asyncio.to_thread(out.write, chunk)
            finally:
                await asyncio.to_thread(out.close)
            job = await asyncio.to_thread(jobs.submit, target, safe, job_id, workdir)
    else:
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data (field 'file') or {\"path\": ...}")
    await run_in_threadpool(audit.record, principal, "job.create", f"job:{job.id}", {"name": job.name})
    return job.out()


@router.get("", summary="The newest jobs (kept across restarts)")
def list_jobs(jobs: JobsDep, _: Viewer) -> list[JobOut]:
    return [job.out() for job in jobs.recent()]


@router.get("/{job_id}", summary="A job's progress and summary")
def get_job(job_id: str, jobs: JobsDep, _: Viewer) -> JobOut:
    return jobs.get(job_id).out()


class JobEvents(BaseModel):
    items: list[dict[str, JsonValue]] = Field(description="the engine's events as published (maskwatch.event/1)")
    summary: dict[str, JsonValue] | None
    state: JobState


@router.get("/{job_id}/events", summary="A job's events (the engine's, as published); every read is audited")
def job_events(job_id: str, jobs: JobsDep, audit: AuditDep, principal: Viewer) -> JobEvents:
    job = jobs.get(job_id)
    audit.record(principal, "export.job_events", f"job:{job_id}")
    return JobEvents(items=jobs.events(job), summary=job.summary, state=job.state)


class JobImages(BaseModel):
    items: list[JobImage]
    state: JobState


@router.get("/{job_id}/images", summary="An image job's faces per image (a zip, a folder or one image)")
def job_images(job_id: str, jobs: JobsDep, _: Viewer) -> JobImages:
    job = jobs.get(job_id)
    return JobImages(items=jobs.images(job), state=job.state)


@router.delete("/{job_id}", summary="Cancel a job")
def cancel_job(job_id: str, jobs: JobsDep, audit: AuditDep, principal: Operator) -> JobOut:
    job = jobs.cancel(job_id)
    audit.record(principal, "job.cancel", f"job:{job_id}")
    return job.out()
