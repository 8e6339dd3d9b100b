"""Who may do what: API tokens (stored as SHA-256), roles, browser sessions with CSRF protection, and a
per-token rate limit.

* ``Authorization: Bearer TOKEN`` on every request (scripts, Prometheus), or a session cookie made by
  ``POST /api/v1/auth/login`` (the dashboard). A cookie-authenticated request that changes anything must
  also send ``X-CSRF-Token`` (the value returned at login and kept in the readable ``mw_csrf`` cookie):
  another site can make the browser send the cookie, but cannot read the CSRF value.
* Roles, each including the ones below it: ``viewer`` reads, ``operator`` also acknowledges alerts,
  uploads and marks false positives, ``admin`` also manages cameras, rules and tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy import select

from maskwatch.service.errors import ApiError
from maskwatch.service.storage.models import ApiToken, AuditEntry
from maskwatch.service.storage.models import Session as SessionRow

ROLES = ("viewer", "operator", "admin")
SESSION_COOKIE = "mw_session"
CSRF_COOKIE = "mw_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return "mw_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    role: str
    via: str  # bearer | session
    csrf: str | None = None

    def allows(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


class RateLimiter:
    """Token bucket per API token: ``per_minute`` sustained, ``burst`` at once."""

    def __init__(self, per_minute: float, burst: int):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._state: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: int) -> float:
        """0 when allowed now, else seconds to wait."""
        now = time.monotonic()
        with self._lock:
            tokens, at = self._state.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._state[key] = (tokens - 1.0, now)
                return 0.0
            self._state[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


class Auth:
    """Token and session checks with a short cache (so reads keep working through a database blip)."""

    CACHE_SECONDS = 10.0

    def __init__(self, sessions: Any, limiter: RateLimiter, session_hours: float):
        self.sessions = sessions
        self.limiter = limiter
        self.session_seconds = session_hours * 3600
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def forget(self) -> None:
        """Drop cached lookups (a token was revoked or a session ended)."""
        with self._lock:
            self._cache.clear()

    def _cached(self, key: str, load: Any) -> Principal | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        try:
            value = load()
        except Exception as exc:
            raise ApiError(503, "database_unavailable", "cannot check the token: the database is unreachable") from exc
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now + self.CACHE_SECONDS, value)
        return value

    def by_token(self, token: str) -> Principal | None:
        digest = hash_token(token)

        def load() -> Principal | None:
            with self.sessions() as s:
                row = s.scalars(
                    select(ApiToken).where(ApiToken.token_hash == digest, ApiToken.revoked.is_(False))
                ).first()
                return None if row is None else Principal(row.id, row.name, row.role, "bearer")

        return self._cached("t:" + digest, load)

    def by_session(self, value: str) -> Principal | None:
        digest = hash_token(value)

        def load() -> Principal | None:
            with self.sessions() as s:
                row = s.scalars(select(SessionRow).where(SessionRow.session_hash == digest)).first()
                if row is None or row.expires_ts < time.time():
                    return None
                token = s.get(ApiToken, row.token_id)
                if token is None or token.revoked:
                    return None
                return Principal(token.id, token.name, token.role, "session", row.csrf)

        return self._cached("s:" + digest, load)

    def authenticate(self, request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        principal: Principal | None = None
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise ApiError(401, "unauthorized", "use 'Authorization: Bearer TOKEN'")
            principal = self.by_token(value.strip())
            if principal is None:
                raise ApiError(401, "unauthorized", "unknown or revoked token")
        else:
            cookie = request.cookies.get(SESSION_COOKIE)
            if cookie:
                principal = self.by_session(cookie)
            if principal is None:
                raise ApiError(401, "unauthorized", "a token is required (Authorization: Bearer TOKEN, or log in)")
            if request.method not in SAFE_METHODS:
                sent = request.headers.get(CSRF_HEADER, "")
                if not principal.csrf or not hmac.compare_digest(sent, principal.csrf):
                    raise ApiError(403, "csrf", "missing or wrong X-CSRF-Token header for a cookie session")
        wait = self.limiter.check(principal.token_id)
        if wait > 0:
            raise ApiError(
                429,
                "rate_limited",
                f"too many requests; retry in {wait:.1f} s",
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        request.state.principal = principal
        return principal

    # -- sessions and tokens ---------------------------------------------------------------------------

    def login(self, token: str) -> tuple[str, str, Principal]:
        principal = self.by_token(token)
        if principal is None:
            raise ApiError(401, "unauthorized", "unknown or revoked token")
        value, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        now = time.time()
        with self.sessions() as s, s.begin():
            s.add(
                SessionRow(
                    session_hash=hash_token(value),
                    token_id=principal.token_id,
                    csrf=csrf,
                    created_ts=now,
                    expires_ts=now + self.session_seconds,
                )
            )
        return value, csrf, principal

    def logout(self, value: str) -> None:
        with self.sessions() as s, s.begin():
            row = s.scalars(select(SessionRow).where(SessionRow.session_hash == hash_token(value))).first()
            if row is not None:
                s.delete(row)
        self.forget()


def create_token(sessions: Any, name: str, role: str, token: str | None = None) -> tuple[ApiToken, str]:
    if role not in ROLES:
        raise ApiError(422, "invalid", f"role must be one of {', '.join(ROLES)}")
    token = token or new_token()
    row = ApiToken(name=name, role=role, token_hash=hash_token(token), prefix=token[:7], created_ts=time.time())
    with sessions() as s, s.begin():
        s.add(row)
    return row, token


def ensure_admin(sessions: Any, preset: str | None) -> str | None:
    """The admin token at start: ``preset`` ($MASKWATCH_ADMIN_TOKEN) becomes the token named ``admin``
    (replacing an older one of that name); without it, a new admin token is made when none exists and
    returned (to print once). Returns None when an admin token existed already."""
    with sessions() as s, s.begin():
        if preset:
            digest = hash_token(preset)
            if s.scalars(select(ApiToken).where(ApiToken.token_hash == digest)).first() is None:
                for old in s.scalars(select(ApiToken).where(ApiToken.name == "admin")):
                    old.revoked = True
                s.add(
                    ApiToken(name="admin", role="admin", token_hash=digest, prefix=preset[:7], created_ts=time.time())
                )
            return None
        exists = s.scalars(select(ApiToken).where(ApiToken.role == "admin", ApiToken.revoked.is_(False))).first()
        if exists is not None:
            return None
    return create_token(sessions, "admin", "admin")[1]


def audit(
    sessions: Any,
    principal: Principal | None,
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
    ip: str | None = None,
) -> None:
    """Record who did what (best effort: an unreachable database must not fail the action itself)."""
    try:
        with sessions() as s, s.begin():
            s.add(
                AuditEntry(
                    ts=time.time(),
                    actor=principal.name if principal else "system",
                    role=principal.role if principal else "system",
                    action=action,
                    target=target,
                    detail=detail,
                    ip=ip,
                )
            )
    except Exception:
        import logging

        logging.getLogger("maskwatch.service").exception("audit entry not written: %s %s", action, target)
