"""Browser sessions (log in with a token, get a cookie and a CSRF value), API tokens, the audit log."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from maskwatch.service.auth import CSRF_COOKIE, SESSION_COOKIE, audit, create_token
from maskwatch.service.deps import MAX_ID, Admin, IdPath, ServiceDep, Viewer, client_ip
from maskwatch.service.errors import ApiError
from maskwatch.service.storage.models import ApiToken, AuditEntry

router = APIRouter(tags=["auth"])


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=200)


class Me(BaseModel):
    name: str
    role: str
    via: str
    csrf: str | None = None


@router.post("/auth/login", response_model=Me, summary="Log in with an API token: sets the session cookie")
def login(body: Login, request: Request, response: Response, service: ServiceDep) -> Me:
    value, csrf, principal = service.auth.login(body.token)
    secure = service.settings.auth.cookie_secure
    age = int(service.settings.auth.session_hours * 3600)
    response.set_cookie(SESSION_COOKIE, value, max_age=age, httponly=True, samesite="strict", secure=secure, path="/")
    response.set_cookie(CSRF_COOKIE, csrf, max_age=age, httponly=False, samesite="strict", secure=secure, path="/")
    audit(service.sessions, principal, "login", ip=client_ip(request))
    return Me(name=principal.name, role=principal.role, via="session", csrf=csrf)


@router.post("/auth/logout", summary="End the browser session")
def logout(request: Request, response: Response, service: ServiceDep, _: Viewer) -> dict:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        service.auth.logout(cookie)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return {"ok": True}


@router.get("/auth/me", response_model=Me, summary="Who am I (role)")
def me(principal: Viewer) -> Me:
    return Me(name=principal.name, role=principal.role, via=principal.via, csrf=principal.csrf)


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    role: Literal["viewer", "operator", "admin"]


class TokenOut(BaseModel):
    id: int
    name: str
    role: str
    prefix: str
    created: float
    revoked: bool
    token: str | None = Field(None, description="the token itself: shown once, at creation")


def _token_out(row: ApiToken, token: str | None = None) -> TokenOut:
    return TokenOut(
        id=row.id,
        name=row.name,
        role=row.role,
        prefix=row.prefix,
        created=row.created_ts,
        revoked=row.revoked,
        token=token,
    )


@router.get("/tokens", response_model=list[TokenOut], tags=["tokens"], summary="API tokens (never their values)")
def list_tokens(service: ServiceDep, _: Admin) -> list[TokenOut]:
    with service.sessions() as s:
        return [_token_out(t) for t in s.scalars(select(ApiToken).order_by(ApiToken.id))]


@router.post(
    "/tokens",
    response_model=TokenOut,
    status_code=201,
    tags=["tokens"],
    summary="Make a token (its value is returned once, stored only as a hash)",
)
def make_token(body: TokenIn, request: Request, service: ServiceDep, principal: Admin) -> TokenOut:
    row, token = create_token(service.sessions, body.name, body.role)
    audit(
        service.sessions,
        principal,
        "token.create",
        f"token:{row.id}",
        {"name": body.name, "role": body.role},
        client_ip(request),
    )
    return _token_out(row, token)


@router.delete("/tokens/{token_id}", response_model=TokenOut, tags=["tokens"], summary="Revoke a token")
def revoke_token(token_id: IdPath, request: Request, service: ServiceDep, principal: Admin) -> TokenOut:
    with service.sessions() as s, s.begin():
        row = s.get(ApiToken, token_id)
        if row is None:
            raise ApiError(404, "not_found", f"no token {token_id}")
        if row.role == "admin" and not row.revoked:
            admins = s.scalars(select(ApiToken).where(ApiToken.role == "admin", ApiToken.revoked.is_(False))).all()
            if len(admins) <= 1:
                raise ApiError(409, "conflict", "this is the last admin token; make another admin token first")
        row.revoked = True
    service.auth.forget()
    audit(service.sessions, principal, "token.revoke", f"token:{token_id}", None, client_ip(request))
    return _token_out(row)


@router.get("/audit", tags=["tokens"], summary="The audit log (newest first)")
def audit_log(
    service: ServiceDep,
    _: Admin,
    limit: int = Query(100, ge=1, le=1000),
    before: int | None = Query(None, ge=0, le=MAX_ID),
) -> dict:
    limit = max(1, min(limit, 1000))
    with service.sessions() as s:
        q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
        if before is not None:
            q = q.where(AuditEntry.id < before)
        rows = s.scalars(q).all()
    items = [
        {
            "id": r.id,
            "time": r.ts,
            "actor": r.actor,
            "role": r.role,
            "action": r.action,
            "target": r.target,
            "detail": r.detail,
            "ip": r.ip,
        }
        for r in rows
    ]
    return {"items": items, "next_cursor": items[-1]["id"] if len(items) == limit else None, "now": time.time()}
