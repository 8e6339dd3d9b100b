"""The FastAPI application: ``create_app(settings)`` builds it around a :class:`~maskwatch.service.core.Service`
(the composition root; started and stopped with the app's lifespan). API under ``/api/v1`` (OpenAPI at
``/docs``; every answer, errors included, has a schema), the dashboard at ``/``. Routers get the service's
components through the typed dependencies of :mod:`maskwatch.service.deps`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from maskwatch import __version__
from maskwatch.service.core import FleetLink, Service
from maskwatch.service.errors import ERROR_RESPONSES, error_body, install_error_handlers
from maskwatch.service.routers import alerts, auth, cameras, dead_letters, events, infer, jobs, stats, system
from maskwatch.service.routers import fleet as fleet_router
from maskwatch.service.settings import ServiceSettings
from maskwatch.service.uploads import BodyLimit

if TYPE_CHECKING:
    from maskwatch.detection.pipeline import MaskDetector
    from maskwatch.stream.sources import CaptureFactory

__all__ = ["API", "create_app"]

log = logging.getLogger("maskwatch.service")

STATIC = Path(__file__).with_name("static")
API = "/api/v1"
STREAMING = ("/stream", "/live.mjpeg")
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def create_app(
    settings: ServiceSettings,
    *,
    detector: MaskDetector | None = None,
    capture_factory: CaptureFactory | None = None,
    admin_token: str | None = None,
    fleet: FleetLink | None = None,
) -> FastAPI:
    """The app; the service starts with the app's lifespan (``uvicorn`` or ``TestClient`` as a context).
    ``fleet``: also ingest the edge nodes' events from an MQTT broker (``serve --mqtt``)."""
    service = Service(
        settings, detector=detector, capture_factory=capture_factory, admin_token=admin_token, fleet=fleet
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # a lifespan inside a running one (a second test client on the same app) leaves the service alone
        owner = not service.started
        if owner:
            await asyncio.to_thread(service.start)
            if service.auth.generated_admin_token:
                log.warning(
                    "first start: admin token %s (shown once; make more under Settings)",
                    service.auth.generated_admin_token,
                )
        try:
            yield
        finally:
            if owner:
                await asyncio.to_thread(service.stop)

    app = FastAPI(
        title="maskwatch",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url=f"{API}/openapi.json",
        redoc_url=None,
        description="Face-mask monitoring: cameras, people counted once, compliance over time, alerts. "
        "Every route but /healthz needs `Authorization: Bearer TOKEN` (or a dashboard "
        "session with its X-CSRF-Token).",
    )
    app.state.service = service
    install_error_handlers(app)

    for module in (system, auth, cameras, events, stats, alerts, infer, jobs, fleet_router, dead_letters):
        app.include_router(module.router, prefix=API, responses=ERROR_RESPONSES)
    app.add_api_route("/healthz", system.healthz, include_in_schema=False)

    limits = settings.limits

    def body_limit(path: str) -> int:
        if path.startswith(f"{API}/jobs"):
            return limits.job_upload_bytes
        if path.startswith(f"{API}/infer"):
            return limits.upload_bytes * 4 // 3 + 65536  # base64 and multipart overhead
        return 1_000_000

    @app.middleware("http")
    async def timing(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        began = time.perf_counter()
        streaming = request.url.path.endswith(STREAMING)
        try:
            if streaming:
                response = await call_next(request)
            else:
                response = await asyncio.wait_for(call_next(request), limits.request_timeout_s)
        except TimeoutError:
            response = JSONResponse(
                error_body("timeout", f"no answer within {limits.request_timeout_s:g} s"), status_code=504
            )
        route = request.scope.get("route")
        label = getattr(route, "path", None) or ("static" if request.url.path.startswith("/static") else "other")
        service.metrics.requests.labels(request.method, label, str(response.status_code)).observe(
            time.perf_counter() - began
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if not request.url.path.startswith("/docs"):
            response.headers.setdefault("Content-Security-Policy", CSP)
        return response

    app.add_middleware(BodyLimit, limit_for=body_limit)

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    return app
