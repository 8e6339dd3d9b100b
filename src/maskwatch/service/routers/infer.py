"""POST /infer: one image (multipart field ``file``, JSON ``{"image": base64}``, or a raw image body) ->
faces, counts, compliance, timings, and optionally the annotated image with every face blurred."""

from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile

from maskwatch.service.deps import InferenceDep, Operator, SettingsDep
from maskwatch.service.errors import ApiError, errors, parse_json_body
from maskwatch.service.inference import InferResult
from maskwatch.service.uploads import IMAGE_TYPES, sniff, upload_body

__all__ = ["router"]

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
        payload = parse_json_body(await request.body())
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
        raise ApiError(413, "too_large", f"the image is over the limit: limits.upload_bytes is {limit} bytes")
    if not data:
        raise ApiError(422, "invalid", "empty image")
    return data, annotated


@router.post(
    "/infer",
    summary="Faces and masks in one image",
    openapi_extra={"requestBody": _BODY},
    responses=errors(
        e413="too large (bytes or pixels)", e415="not an image", e503="busy: too many images waiting", e504="timeout"
    ),
)
async def infer(
    request: Request,
    gate: InferenceDep,
    settings: SettingsDep,
    _: Operator,
    annotated: bool = Query(False, description="add the annotated image (faces blurred) as a data URL"),
) -> InferResult:
    data, annotated_body = await _read_image(request, settings.limits.upload_bytes)
    kind = sniff(data[:16])
    if kind not in IMAGE_TYPES:
        raise ApiError(415, "unsupported_media_type", "not a JPEG, PNG, GIF, WebP, BMP or TIFF image (content sniffed)")
    return await gate.run(data, annotated=bool(annotated or annotated_body))
