"""Batch jobs: upload a video / image / zip of images, or name a server path inside jobs.allowed_dirs."""

from __future__ import annotations

import json
import re

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile

from maskwatch.service.auth import audit
from maskwatch.service.deps import Operator, ServiceDep, Viewer, client_ip
from maskwatch.service.errors import ApiError
from maskwatch.service.jobs import allowed_path
from maskwatch.service.routers.common import db_errors
from maskwatch.service.uploads import IMAGE_TYPES, VIDEO_SUFFIX, sniff, upload_body

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
async def create_job(request: Request, service: ServiceDep, principal: Operator) -> dict:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    jobs = service.jobs
    if ctype == "application/json":
        try:
            payload = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "bad_request", "body is not valid JSON") from exc
        if not isinstance(payload, dict) or not isinstance(payload.get("path"), str) or set(payload) != {"path"}:
            raise ApiError(422, "invalid", 'JSON body must be {"path": "..."}')
        source = allowed_path(payload["path"], service.settings.jobs.allowed_dirs)
        job = jobs.submit(source, source.name)
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
        job_id, workdir = jobs.new_dir()
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", (upload.filename or "upload"))[:60] or "upload"
        target = workdir / f"upload{suffix}"
        with target.open("wb") as out:
            out.write(head)
            while chunk := await upload.read(1 << 20):
                out.write(chunk)
        job = jobs.submit(target, safe, job_id=job_id, workdir=workdir)
    else:
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data (field 'file') or {\"path\": ...}")
    audit(service.sessions, principal, "job.create", f"job:{job.id}", {"name": job.name}, client_ip(request))
    return job.to_dict()


@router.get("", summary="The newest jobs (kept across restarts)")
def list_jobs(service: ServiceDep, _: Viewer) -> list[dict]:
    with db_errors():
        return [job.to_dict() for job in service.jobs.recent()]


@router.get("/{job_id}", summary="A job's progress and summary")
def get_job(job_id: str, service: ServiceDep, _: Viewer) -> dict:
    with db_errors():
        return service.jobs.get(job_id).to_dict()


@router.get("/{job_id}/events", summary="A job's events (the engine's, as published)")
def job_events(job_id: str, service: ServiceDep, _: Viewer) -> dict:
    with db_errors():
        job = service.jobs.get(job_id)
    return {"items": service.jobs.events(job), "summary": job.summary, "state": job.state}


@router.delete("/{job_id}", summary="Cancel a job")
def cancel_job(job_id: str, request: Request, service: ServiceDep, principal: Operator) -> dict:
    with db_errors():
        job = service.jobs.cancel(job_id)
    audit(service.sessions, principal, "job.cancel", f"job:{job_id}", None, client_ip(request))
    return job.to_dict()
