"""Upload limits: a body-size cap enforced while the body streams in (ASGI middleware), and content
sniffing (the first bytes decide what a file is, never its name or declared type)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from maskwatch.service.errors import error_body

__all__ = ["IMAGE_TYPES", "VIDEO_SUFFIX", "BodyCap", "BodyLimit", "sniff", "upload_body"]

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/tiff")


def sniff(data: bytes) -> str | None:
    """The media type of ``data`` from its magic bytes, or None when unknown."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "video/x-msvideo"
    if data[:2] == b"BM" and len(data) > 14:
        return "image/bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "video/x-matroska"
    if data[:4] == b"PK\x03\x04":
        return "application/zip"
    return None


def upload_body(json_schema: dict[str, Any], *media: str) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its body itself: a multipart ``file`` field, a JSON
    body described by ``json_schema``, and the raw ``media`` types it also takes."""
    binary = {"type": "string", "format": "binary"}
    content: dict[str, Any] = {
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["file"], "properties": {"file": binary}},
        },
        "application/json": {"schema": json_schema},
    }
    content.update({kind: {"schema": binary} for kind in media})
    return {"required": True, "content": content}


VIDEO_SUFFIX = {"video/mp4": ".mp4", "video/x-msvideo": ".avi", "video/x-matroska": ".mkv", "application/zip": ".zip"}


@dataclass(frozen=True)
class BodyCap:
    """A route's cap on request bodies: ``bytes`` is what the body may carry (the configured limit plus its
    encoding's overhead: base64 and multipart add up to a third); a refusal quotes the configured limit,
    ``setting`` = ``configured`` bytes, which is what the operator can change."""

    bytes: int
    setting: str
    configured: int

    def refusal(self, declared: int | None = None) -> str:
        size = "" if declared is None else f" of {declared} bytes"
        return f"request body{size} is over the limit: {self.setting} is {self.configured} bytes"


class BodyLimit:
    """Refuse request bodies over ``cap_for(path).bytes`` with a JSON 413 that quotes the configured limit: at
    once when Content-Length says so, else as soon as the streamed body passes it."""

    def __init__(self, app: ASGIApp, cap_for: Callable[[str], BodyCap]) -> None:
        self.app = app
        self.cap_for = cap_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.cap_for(scope["path"])
        limit = cap.bytes
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size: int | None = int(declared)
            except ValueError:
                size = None
            if size is not None and size > limit:
                await self._refuse(send, cap.refusal(size))
                return
        seen = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    refused = True
                    raise _TooLargeError
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLargeError:
            if not started:
                await self._refuse(send, cap.refusal())
        except Exception:
            if refused and not started:
                await self._refuse(send, cap.refusal())
            else:
                raise

    @staticmethod
    async def _refuse(send: Send, reason: str) -> None:
        body = json.dumps(error_body(413, "too_large", reason)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLargeError(Exception):
    pass
