"""JSON errors with a reason: ``{"status": 422, "error": CODE, "detail": "what went wrong and what to do"}``,
one shape for every error the API answers (its own, FastAPI's validation and JSON decode errors, Starlette's,
the body limit's, a timeout's, a database outage's): the HTTP status, a short machine code and a message for
people. Every error answer is built by :func:`error_response`; :data:`ERROR_RESPONSES` documents them on
every route of the OpenAPI schema.

A body that is not JSON is a 400 ``invalid_json`` on every route (FastAPI's own decoding and the routes that
read their body themselves, through :func:`parse_json_body`); a body or parameter that does not validate
is a 422 ``invalid`` naming the field."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from maskwatch.service.storage.db import OutageLog

__all__ = [
    "ERROR_RESPONSES",
    "ApiError",
    "ErrorBody",
    "error_body",
    "error_response",
    "errors",
    "install_error_handlers",
    "parse_json_body",
]

log = logging.getLogger("maskwatch.service")


class ApiError(Exception):
    """An answer other than success: HTTP ``status``, a short machine ``code`` and a ``detail`` for people."""

    def __init__(self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


class ErrorBody(BaseModel):
    """Every error answer: status, code, message."""

    status: int = Field(description="the HTTP status of the answer (also in the body, for logs and proxies)")
    error: str = Field(description="a short code: not_found, invalid, invalid_json, unauthorized, rate_limited, ...")
    detail: str = Field(description="what went wrong and what to do")


def error_body(status: int, code: str, detail: Any) -> dict[str, Any]:
    """The JSON of an error answer (:class:`ErrorBody`)."""
    text = detail if isinstance(detail, str) else str(detail)
    return ErrorBody(status=status, error=code, detail=text).model_dump()


def error_response(status: int, code: str, detail: Any, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """An error answer: every error of the service goes through here."""
    return JSONResponse(error_body(status, code, detail), status_code=status, headers=dict(headers or {}) or None)


def _json_problem(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
    return str(exc) or type(exc).__name__


def parse_json_body(raw: bytes) -> Any:
    """The JSON of a body a route reads itself; a 400 ``invalid_json`` (the same answer as FastAPI's own
    decoding gets) when it is not JSON."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON ({_json_problem(exc)})") from exc


#: the error answers of every route (client errors and server-side ones, e.g. 503 while the database is away)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "refused: the error code and the reason"},
    "5XX": {"model": ErrorBody, "description": "failed or unavailable (503: database away or busy; 504: timeout)"},
}


def errors(**described: str) -> dict[int | str, dict[str, Any]]:
    """``responses`` of a route's particular errors, each an :class:`ErrorBody`: ``errors(e413="too large")``."""
    return {int(code.lstrip("e")): {"model": ErrorBody, "description": text} for code, text in described.items()}


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
    504: "timeout",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = exc.status_code
        return error_response(code, _CODES.get(code, "error"), exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        items = list(exc.errors())
        broken = next((item for item in items if item.get("type") == "json_invalid"), None)
        if broken is not None:  # FastAPI could not decode the body: the answer every route gives
            where = broken.get("ctx", {}).get("error", "") or broken.get("msg", "")
            position = next((p for p in broken.get("loc", ()) if isinstance(p, int)), None)
            at = f" at character {position}" if position is not None else ""
            return error_response(400, "invalid_json", f"the body is not valid JSON ({where}{at})")
        problems = []
        for item in items:
            loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "request"
            problems.append(f"{loc}: {item.get('msg', 'invalid')}")
        return error_response(422, "invalid", "; ".join(problems) or "invalid request")

    outage = OutageLog("API", "answering 503 until it is back (logged once per outage)")

    async def _database(_request: Request, exc: Exception) -> JSONResponse:
        """A database outage is a 503 with a reason, not a 500 (repositories let it through)."""
        outage.failed(exc)
        return error_response(503, "database_unavailable", "the database is unreachable; try again shortly")

    app.add_exception_handler(OperationalError, _database)
    app.add_exception_handler(InterfaceError, _database)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", f"unexpected error ({type(exc).__name__}); see the server log")
