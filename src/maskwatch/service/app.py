"""The FastAPI application: ``create_app(settings)`` builds it around a :class:`~maskwatch.service.core.Service`
(the composition root; started and stopped with the app's lifespan). API under ``/api/v1`` (OpenAPI schema at
``/api/v1/openapi.json``; every answer, errors included, has a schema), the dashboard at ``/``, Swagger UI at
``/docs`` from assets installed with the service (``fastapi-offline``'s copy of Swagger UI; no CDN) under the
dashboard's content policy (no inline script or style; checked in Chromium: no violation). Routers get the
service's components through the typed dependencies of :mod:`maskwatch.service.deps`."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from maskwatch import __version__
from maskwatch.service.core import FleetLink, Service
from maskwatch.service.errors import ERROR_RESPONSES, error_response, install_error_handlers
from maskwatch.service.routers import (
    alerts,
    auth,
    cameras,
    console,
    dead_letters,
    events,
    infer,
    jobs,
    stats,
    system,
)
from maskwatch.service.routers import fleet as fleet_router
from maskwatch.service.settings import ServiceSettings
from maskwatch.service.uploads import BodyCap, BodyLimit

if TYPE_CHECKING:
    from maskwatch.detection.pipeline import MaskDetector
    from maskwatch.stream.sources import CaptureFactory

__all__ = ["API", "create_app", "swagger_assets"]

log = logging.getLogger("maskwatch.service")

STATIC = Path(__file__).with_name("static")
API = "/api/v1"
STREAMING = ("/stream", "/live.mjpeg")
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def swagger_assets() -> Path | None:
    """The folder of Swagger UI's JavaScript and CSS installed with the service (the ``fastapi-offline``
    package of the ``serve`` extra), or None when it is not installed (then ``/docs`` is off)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() and (folder / "swagger-ui.css").is_file() else None


def create_app(
    settings: ServiceSettings,
    *,
    detector: MaskDetector | None = None,
    capture_factory: CaptureFactory | None = None,
    admin_token: str | None = None,
    fleet: FleetLink | None = None,
    on_admin_token: Callable[[str, Path], None] | None = None,
) -> FastAPI:
    """The app; the service starts with the app's lifespan (``uvicorn`` or ``TestClient`` as a context).
    ``fleet``: also ingest the edge nodes' events from an MQTT broker (``serve --mqtt``). ``on_admin_token``:
    told ``(token, file)`` when the first start made an admin token (``serve`` shows it on a terminal only);
    the log only says which file holds it."""
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
                path = settings.admin_token_path
                log.warning("first start: an admin token was made and written to %s (mode 600)", path)
                if on_admin_token is not None:
                    on_admin_token(service.auth.generated_admin_token, path)
        try:
            yield
        finally:
            if owner:
                await asyncio.to_thread(service.stop)

    assets = swagger_assets() if settings.security.docs else None
    if settings.security.docs and assets is None:
        log.warning("/docs is off: Swagger UI's assets (the fastapi-offline package) are not installed")
    app = FastAPI(
        title="maskwatch",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # our own page below: local assets, no inline script
        openapi_url=f"{API}/openapi.json",
        redoc_url=None,
        description="Face-mask monitoring: cameras, people counted once, compliance over time, alerts. "
        "Every route but /healthz needs `Authorization: Bearer TOKEN` (or a dashboard "
        "session with its X-CSRF-Token).",
    )
    app.state.service = service
    install_error_handlers(app)

    for module in (system, auth, cameras, events, stats, alerts, infer, jobs, fleet_router, console, dead_letters):
        app.include_router(module.router, prefix=API, responses=ERROR_RESPONSES)
    # probes and scrapers at the root (outside the schema): /healthz and /readyz without a token, /metrics
    # with the scrape token, an allow-listed address or an API token
    app.add_api_route("/healthz", system.healthz, include_in_schema=False)
    app.add_api_route("/readyz", system.readyz_probe, include_in_schema=False)
    app.add_api_route("/metrics", system.metrics_scrape, include_in_schema=False)

    limits = settings.limits

    def body_cap(path: str) -> BodyCap:
        if path.startswith(f"{API}/jobs"):
            return BodyCap(limits.job_upload_bytes + 65536, "limits.job_upload_bytes", limits.job_upload_bytes)
        if path.startswith(f"{API}/infer"):  # base64 and multipart overhead on top of the image
            return BodyCap(limits.upload_bytes * 4 // 3 + 65536, "limits.upload_bytes", limits.upload_bytes)
        return BodyCap(limits.body_bytes, "limits.body_bytes", limits.body_bytes)

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
            response = error_response(
                504, "timeout", f"no answer within {limits.request_timeout_s:g} s (limits.request_timeout_s)"
            )
        route = request.scope.get("route")
        label = getattr(route, "path", None) or ("static" if request.url.path.startswith("/static") else "other")
        service.metrics.requests.labels(request.method, label, str(response.status_code)).observe(
            time.perf_counter() - began
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Content-Security-Policy", CSP)  # /docs too: its assets are ours
        return response

    app.add_middleware(BodyLimit, cap_for=body_cap)

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if assets is not None:
        app.mount("/docs/assets", StaticFiles(directory=assets), name="docs-assets")

        @app.get("/docs", include_in_schema=False)
        def docs() -> FileResponse:
            return FileResponse(STATIC / "docs.html", headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    return app
