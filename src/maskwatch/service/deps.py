"""Dependencies shared by the routers: the running service and the caller's role."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from maskwatch.service.auth import Principal
from maskwatch.service.errors import ApiError

bearer = HTTPBearer(auto_error=False, description="an API token: Authorization: Bearer TOKEN")


def get_service(request: Request) -> Any:
    return request.app.state.service


def require(role: str) -> Any:
    def dependency(request: Request, _credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> Principal:
        principal = request.app.state.service.auth.authenticate(request)
        if not principal.allows(role):
            raise ApiError(403, "forbidden", f"this needs the {role} role; your token has {principal.role}")
        return principal

    dependency.__name__ = f"require_{role}"
    return dependency


Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Admin = Annotated[Principal, Depends(require("admin"))]
ServiceDep = Annotated[Any, Depends(get_service)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


#: database ids in paths and cursors: bounded so that no value overflows a 64-bit column
MAX_ID = 2**53
IdPath = Annotated[int, Path(ge=0, le=MAX_ID)]
