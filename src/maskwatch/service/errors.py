"""JSON errors with a reason: ``{"error": CODE, "detail": "what went wrong and what to do"}``, one shape for
every error the API answers (its own, FastAPI's, Starlette's, the body limit's, a database outage's).
:data:`ERROR_RESPONSES` documents them on every route of the OpenAPI schema."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from maskwatch.service.storage.db import OutageLog

__all__ = ["ERROR_RESPONSES", "ApiError", "ErrorBody", "error_body", "errors", "install_error_handlers"]

log = logging.getLogger("maskwatch.service")


class ApiError(Exception):
    """An answer other than success: HTTP ``status``, a short machine ``code`` and a ``detail`` for people."""

    def __init__(self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


class ErrorBody(BaseModel):
    """Every error answer."""

    error: str = Field(description="a short code: not_found, invalid, unauthorized, rate_limited, busy, ...")
    detail: str = Field(description="what went wrong and what to do")


def error_body(code: str, detail: Any) -> dict[str, Any]:
    return ErrorBody(error=code, detail=detail if isinstance(detail, str) else str(detail)).model_dump()


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
        return JSONResponse(error_body(exc.code, exc.detail), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body(_CODES.get(exc.status_code, "error"), exc.detail),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for item in exc.errors():
            loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "request"
            problems.append(f"{loc}: {item.get('msg', 'invalid')}")
        return JSONResponse(error_body("invalid", "; ".join(problems) or "invalid request"), status_code=422)

    outage = OutageLog("API", "answering 503 until it is back (logged once per outage)")

    async def _database(_request: Request, exc: Exception) -> JSONResponse:
        """A database outage is a 503 with a reason, not a 500 (repositories let it through)."""
        outage.failed(exc)
        return JSONResponse(
            error_body("database_unavailable", "the database is unreachable; try again shortly"), status_code=503
        )

    app.add_exception_handler(OperationalError, _database)
    app.add_exception_handler(InterfaceError, _database)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal", f"unexpected error ({type(exc).__name__}); see the server log"), status_code=500
        )
