"""POST /infer: one image (multipart field ``file``, JSON ``{"image": base64}``, or a raw image body) ->
faces, counts, compliance, timings, and optionally the annotated image with every face blurred."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile

from maskwatch.service.deps import Operator, ServiceDep
from maskwatch.service.errors import ApiError
from maskwatch.service.live import render_jpeg
from maskwatch.service.uploads import IMAGE_TYPES, sniff, upload_body

router = APIRouter(tags=["infer"])

_BODY = upload_body(
    {
        "type": "object",
        "required": ["image"],
        "additionalProperties": False,
        "properties": {"image": {"type": "string", "description": "base64 image"}, "annotated": {"type": "boolean"}},
    },
    "image/jpeg",
    "image/png",
)


async def _read_image(request: Request, limit: int) -> tuple[bytes, bool | None]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    annotated = None
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=10)
        except Exception as exc:
            raise ApiError(400, "bad_request", f"malformed multipart body: {exc}") from exc
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "invalid", "multipart field 'file' (an image) is required")
        data = await upload.read(limit + 1)
        if form.get("annotated") is not None:
            annotated = str(form.get("annotated")).lower() in ("1", "true", "yes", "on")
    elif ctype == "application/json":
        try:
            payload = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "bad_request", "body is not valid JSON") from exc
        if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
            raise ApiError(422, "invalid", 'JSON body must be {"image": "<base64>"}')
        extra = set(payload) - {"image", "annotated"}
        if extra:
            raise ApiError(422, "invalid", f"unknown field(s): {', '.join(sorted(extra))}")
        if "annotated" in payload and not isinstance(payload["annotated"], bool):
            raise ApiError(422, "invalid", "annotated must be true or false")
        annotated = payload.get("annotated")
        text = payload["image"]
        if text.startswith("data:") and "," in text:
            text = text.split(",", 1)[1]
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ApiError(422, "invalid", "image is not valid base64") from exc
    elif ctype.startswith("image/") or ctype == "application/octet-stream":
        data = await request.body()
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            "send multipart/form-data (field 'file'), application/json ({\"image\": base64}) or an image",
        )
    if len(data) > limit:
        raise ApiError(413, "too_large", f"image over the limit of {limit} bytes")
    if not data:
        raise ApiError(422, "invalid", "empty image")
    return data, annotated


def _analyse(service: Any, data: bytes, annotated: bool, queued: float) -> dict[str, Any]:
    from maskwatch.data.images import BadImageError, decode_rgb

    began = time.perf_counter()
    try:
        rgb = decode_rgb(data, max_pixels=service.settings.limits.upload_pixels)
    except BadImageError as exc:
        status = 413 if "too many pixels" in exc.reason else 422
        raise ApiError(status, "too_large" if status == 413 else "bad_image", exc.reason) from exc
    decoded = time.perf_counter()
    result = service.infer_detector.detect(rgb)
    detected = time.perf_counter()
    out: dict[str, Any] = {
        "width": result.width,
        "height": result.height,
        "n_faces": len(result.faces),
        "faces": [
            {
                "box": [round(v, 1) for v in f.box],
                "score": round(f.score, 4),
                "label": f.label,
                "probability": round(f.probability, 4),
                "probabilities": {k: round(v, 4) for k, v in f.probabilities.items()},
            }
            for f in result.faces
        ],
        "counts": result.counts,
        "compliance": None if result.compliance is None else round(result.compliance, 4),
    }
    if annotated:
        jpeg = render_jpeg(rgb, result, blur=True, max_side=1280)
        out["image"] = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
    done = time.perf_counter()
    out["timings"] = {
        "queue_ms": round((began - queued) * 1000, 1),
        "decode_ms": round((decoded - began) * 1000, 1),
        "detect_ms": round((detected - decoded) * 1000, 1),
        "total_ms": round((done - queued) * 1000, 1),
    }
    service.metrics.infer.observe(detected - decoded)
    return out


@router.post(
    "/infer",
    summary="Faces and masks in one image",
    openapi_extra={"requestBody": _BODY},
    responses={
        413: {"description": "too large (bytes or pixels)"},
        415: {"description": "not an image"},
        503: {"description": "busy: too many images waiting"},
    },
)
async def infer(
    request: Request,
    service: ServiceDep,
    _: Operator,
    annotated: bool = Query(False, description="add the annotated image (faces blurred) as a data URL"),
) -> dict:
    limits = service.settings.limits
    data, annotated_body = await _read_image(request, limits.upload_bytes)
    kind = sniff(data[:16])
    if kind not in IMAGE_TYPES:
        raise ApiError(415, "unsupported_media_type", "not a JPEG, PNG, GIF, WebP, BMP or TIFF image (content sniffed)")
    with service._infer_lock:
        if service.infer_waiting >= service.infer_concurrency + limits.infer_queue:
            raise ApiError(503, "busy", "too many images waiting; retry shortly", headers={"Retry-After": "1"})
        service.infer_waiting += 1
    try:
        future = service.infer_pool.submit(
            _analyse, service, data, bool(annotated or annotated_body), time.perf_counter()
        )
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), limits.request_timeout_s)
        except TimeoutError as exc:
            future.cancel()
            raise ApiError(504, "timeout", f"analysis took longer than {limits.request_timeout_s:g} s") from exc
    finally:
        with service._infer_lock:
            service.infer_waiting -= 1
