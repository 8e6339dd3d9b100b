"""The fleet as the control room sees it (``maskwatch serve --mqtt``): nodes online/offline with last seen,
each camera's FPS, lag and compliance from its latest stats bucket, and the MQTT ingest counters."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from maskwatch.service.deps import ServiceDep, Viewer

router = APIRouter(tags=["fleet"])


@router.get("/fleet", summary="Edge nodes and their cameras (MQTT ingest); enabled: false without --mqtt")
def fleet(service: ServiceDep, _: Viewer) -> dict[str, Any]:
    ingest = getattr(service, "fleet", None)
    if ingest is None:
        return {"enabled": False, "nodes": {}}
    return {"enabled": True, **ingest.fleet()}
