"""Browser sessions (log in with a token, get a cookie and a CSRF value), API tokens, the audit log."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from maskwatch.service.auth import CSRF_COOKIE, SESSION_COOKIE
from maskwatch.service.deps import (
    MAX_ID,
    Admin,
    AuditDep,
    AuthDep,
    IdPath,
    SettingsDep,
    StorageDep,
    Viewer,
    client_ip,
)
from maskwatch.service.errors import ApiError
from maskwatch.service.routers.common import Ok
from maskwatch.service.storage.models import ApiToken
from maskwatch.service.storage.tokens import LastAdminError

__all__ = ["AuditPage", "Me", "TokenOut", "router"]

router = APIRouter(tags=["auth"])


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=200)


class Me(BaseModel):
    name: str
    role: str
    via: str
    csrf: str | None = None


@router.post("/auth/login", summary="Log in with an API token: sets the session cookie")
def login(
    body: Login, request: Request, response: Response, auth: AuthDep, settings: SettingsDep, audit: AuditDep
) -> Me:
    value, csrf, principal = auth.login(body.token, client_ip(request))
    secure = settings.auth.cookie_secure
    age = int(settings.auth.session_hours * 3600)
    response.set_cookie(SESSION_COOKIE, value, max_age=age, httponly=True, samesite="strict", secure=secure, path="/")
    response.set_cookie(CSRF_COOKIE, csrf, max_age=age, httponly=False, samesite="strict", secure=secure, path="/")
    audit.record(principal, "login")
    return Me(name=principal.name, role=principal.role, via="session", csrf=csrf)


@router.post("/auth/logout", summary="End the browser session")
def logout(request: Request, response: Response, auth: AuthDep, _: Viewer) -> Ok:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        auth.logout(cookie)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return Ok()


@router.get("/auth/me", summary="Who am I (role)")
def me(principal: Viewer) -> Me:
    return Me(name=principal.name, role=principal.role, via=principal.via, csrf=principal.csrf)


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    role: Literal["viewer", "operator", "admin"]
    expires_days: float | None = Field(
        None, gt=0, le=3650, description="lifetime in days; default auth.token_days (never more than it)"
    )


class TokenOut(BaseModel):
    id: int
    name: str
    role: str
    prefix: str
    created: float
    last_used: float | None = Field(None, description="when it was last used (written every 30 s)")
    expires: float | None = Field(None, description="when it stops working (epoch seconds); None: never")
    revoked: bool
    token: str | None = Field(None, description="the token itself: shown once, at creation")


def _token_out(row: ApiToken, token: str | None = None) -> TokenOut:
    return TokenOut(
        id=row.id,
        name=row.name,
        role=row.role,
        prefix=row.prefix,
        created=row.created_ts,
        last_used=row.last_used_ts,
        expires=row.expires_ts,
        revoked=row.revoked,
        token=token,
    )


@router.get("/tokens", tags=["tokens"], summary="API tokens (never their values)")
def list_tokens(storage: StorageDep, _: Admin) -> list[TokenOut]:
    return [_token_out(t) for t in storage.tokens.all()]


@router.post(
    "/tokens",
    status_code=201,
    tags=["tokens"],
    summary="Make a token (its value is returned once, stored only as a hash)",
)
def make_token(body: TokenIn, auth: AuthDep, settings: SettingsDep, audit: AuditDep, principal: Admin) -> TokenOut:
    days, cap = body.expires_days, settings.auth.token_days
    if days is None or (cap is not None and days > cap):
        days = cap
    row, token = auth.create_token(body.name, body.role, expires_days=days)
    audit.record(principal, "token.create", f"token:{row.id}", {"name": body.name, "role": body.role})
    return _token_out(row, token)


@router.delete("/tokens/{token_id}", tags=["tokens"], summary="Revoke a token")
def revoke_token(token_id: IdPath, auth: AuthDep, audit: AuditDep, principal: Admin) -> TokenOut:
    try:
        row = auth.revoke(token_id)
    except LastAdminError as exc:
        raise ApiError(409, "conflict", str(exc)) from exc
    if row is None:
        raise ApiError(404, "not_found", f"no token {token_id}")
    audit.record(principal, "token.revoke", f"token:{token_id}")
    return _token_out(row)


class AuditItem(BaseModel):
    id: int
    time: float
    actor: str
    role: str
    action: str
    target: str | None
    detail: dict[str, JsonValue] | None
    ip: str | None


class AuditPage(BaseModel):
    items: list[AuditItem]
    next_cursor: int | None = Field(description="`before` of the next page; None on the last page")
    now: float


@router.get("/audit", tags=["tokens"], summary="The audit log (newest first)")
def audit_log(
    storage: StorageDep,
    _: Admin,
    limit: int = Query(100, ge=1, le=1000),
    before: int | None = Query(None, ge=0, le=MAX_ID),
) -> AuditPage:
    rows = storage.audit.page(before=before, limit=limit)
    items = [
        AuditItem(
            id=r.id, time=r.ts, actor=r.actor, role=r.role, action=r.action, target=r.target, detail=r.detail, ip=r.ip
        )
        for r in rows
    ]
    return AuditPage(items=items, next_cursor=items[-1].id if len(items) == limit else None, now=time.time())
