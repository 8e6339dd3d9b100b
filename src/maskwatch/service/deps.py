"""Typed dependencies for the routers: each component of the running service (FastAPI ``Depends`` on the
app's :class:`~maskwatch.service.core.Service`, as ``Annotated`` aliases), the caller's role, and path and
cursor parameters. A router names what it uses (``cameras: CamerasDep``); nothing hands it the whole
service."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import Annotated, cast

from fastapi import Depends, Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from maskwatch.fleet.ingest import FleetState
from maskwatch.service.alerts import AlertEngine
from maskwatch.service.auth import Auth, Principal
from maskwatch.service.camera_view import CameraView
from maskwatch.service.cameras import CameraManager
from maskwatch.service.core import Service
from maskwatch.service.errors import ApiError
from maskwatch.service.inference import InferenceGate
from maskwatch.service.jobs import JobManager
from maskwatch.service.live import Live
from maskwatch.service.media import Media
from maskwatch.service.metrics import Metrics
from maskwatch.service.settings import ServiceSettings
from maskwatch.service.spool import Spool
from maskwatch.service.storage import Storage
from maskwatch.service.storage.audit import AuditLog
from maskwatch.service.storage.ingest import Ingestor
from maskwatch.service.workers import Coordinator

__all__ = [
    "MAX_ID",
    "Admin",
    "AlertsDep",
    "AuditDep",
    "Auditor",
    "AuthDep",
    "CameraViewDep",
    "CamerasDep",
    "ClassesDep",
    "CoordinatorDep",
    "FleetDep",
    "IdPath",
    "InferenceDep",
    "IngestorDep",
    "JobsDep",
    "LiveDep",
    "MediaDep",
    "MetricsDep",
    "Operator",
    "SettingsDep",
    "SiteZone",
    "SpoolDep",
    "StorageDep",
    "Viewer",
    "client_ip",
    "require",
]

bearer = HTTPBearer(auto_error=False, description="an API token: Authorization: Bearer TOKEN")


def get_service(request: Request) -> Service:
    return cast(Service, request.app.state.service)


_Service = Annotated[Service, Depends(get_service)]


def get_settings(service: _Service) -> ServiceSettings:
    return service.settings


def get_storage(service: _Service) -> Storage:
    return service.storage


def get_auth(service: _Service) -> Auth:
    return service.auth


def get_cameras(service: _Service) -> CameraManager:
    return service.cameras


def get_alerts(service: _Service) -> AlertEngine:
    return service.alerts


def get_jobs(service: _Service) -> JobManager:
    return service.jobs


def get_inference(service: _Service) -> InferenceGate:
    return service.inference


def get_media(service: _Service) -> Media:
    return service.media


def get_live(service: _Service) -> Live:
    return service.live


def get_metrics(service: _Service) -> Metrics:
    return service.metrics


def get_ingestor(service: _Service) -> Ingestor:
    return service.ingestor


def get_classes(service: _Service) -> tuple[str, ...]:
    """The class names of the service's model (what a verdict filter may name besides compliant/noncompliant)."""
    return tuple(service.detector.classes)


def get_camera_view(service: _Service) -> CameraView:
    return service.camera_view


def get_coordinator(service: _Service) -> Coordinator:
    return service.coordinator


def get_spool(service: _Service) -> Spool | None:
    return service.spool


def get_zone(service: _Service) -> tzinfo:
    """The site's time zone (``site.timezone``)."""
    return service.zone


def get_fleet(service: _Service) -> FleetState | None:
    """The fleet as this worker's MQTT ingest sees it now; None without MQTT ingest."""
    return None if service.fleet is None else service.fleet.state()


SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
StorageDep = Annotated[Storage, Depends(get_storage)]
AuthDep = Annotated[Auth, Depends(get_auth)]
CamerasDep = Annotated[CameraManager, Depends(get_cameras)]
AlertsDep = Annotated[AlertEngine, Depends(get_alerts)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
InferenceDep = Annotated[InferenceGate, Depends(get_inference)]
MediaDep = Annotated[Media, Depends(get_media)]
LiveDep = Annotated[Live, Depends(get_live)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
IngestorDep = Annotated[Ingestor, Depends(get_ingestor)]
FleetDep = Annotated[FleetState | None, Depends(get_fleet)]
ClassesDep = Annotated[tuple[str, ...], Depends(get_classes)]
CameraViewDep = Annotated[CameraView, Depends(get_camera_view)]
CoordinatorDep = Annotated[Coordinator, Depends(get_coordinator)]
SpoolDep = Annotated[Spool | None, Depends(get_spool)]
SiteZone = Annotated[tzinfo, Depends(get_zone)]


def require(role: str) -> Callable[[Request, Auth, HTTPAuthorizationCredentials | None], Principal]:
    """A dependency: the caller's principal when its role includes ``role``, else 401/403/429."""

    def dependency(
        request: Request, auth: AuthDep, _credentials: HTTPAuthorizationCredentials | None = Security(bearer)
    ) -> Principal:
        principal = auth.authenticate(request)
        if not principal.allows(role):
            raise ApiError(403, "forbidden", f"this needs the {role} role; your token has {principal.role}")
        return principal

    dependency.__name__ = f"require_{role}"
    return dependency


Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Admin = Annotated[Principal, Depends(require("admin"))]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


@dataclass(frozen=True)
class Auditor:
    """The audit log, bound to the request's client address: who did what, from where."""

    log: AuditLog
    ip: str | None

    def record(
        self, principal: Principal, action: str, target: str | None = None, detail: Mapping[str, object] | None = None
    ) -> None:
        self.log.record(principal.name, principal.role, action, target, detail, self.ip)


def get_auditor(request: Request, storage: StorageDep) -> Auditor:
    return Auditor(storage.audit, client_ip(request))


AuditDep = Annotated[Auditor, Depends(get_auditor)]


#: database ids in paths and cursors: bounded so that no value overflows a 64-bit column
MAX_ID = 2**53
IdPath = Annotated[int, Path(ge=0, le=MAX_ID)]
