"""Who may do what: API tokens (stored as SHA-256), roles, browser sessions with CSRF protection, and a
per-token rate limit.

* ``Authorization: Bearer TOKEN`` on every request (scripts, Prometheus), or a session cookie made by
  ``POST /api/v1/auth/login`` (the dashboard). A cookie-authenticated request that changes anything must
  also send ``X-CSRF-Token`` (the value returned at login and kept in the readable ``mw_csrf`` cookie):
  another site can make the browser send the cookie, but cannot read the CSRF value.
* Roles, each including the ones below it: ``viewer`` reads, ``operator`` also acknowledges alerts,
  uploads and marks false positives, ``admin`` also manages cameras, rules and tokens.
* When a token was last used is kept in memory and written every :data:`USAGE_EVERY_S` seconds (and at
  stop), so a request never waits for a database write.
* A token or session is checked against the database at most ``cache_s`` seconds (``auth.cache_s``, 2 s)
  before it is trusted again: a revocation or a logout made through any worker reaches every worker within
  that time. While the database is unreachable (when nobody can revoke anything), a token checked within
  ``outage_grace_s`` keeps working, so pages answered from memory (``/fleet``) stay available.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from fastapi import Request

from maskwatch.service.errors import ApiError
from maskwatch.service.storage.models import ApiToken
from maskwatch.service.storage.models import Session as SessionRow
from maskwatch.service.storage.tokens import TokenRepository

__all__ = [
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "ROLES",
    "SESSION_COOKIE",
    "Auth",
    "Principal",
    "RateLimiter",
    "Role",
    "hash_token",
    "new_token",
]

log = logging.getLogger("maskwatch.service")

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[str, ...] = ("viewer", "operator", "admin")
SESSION_COOKIE = "mw_session"
CSRF_COOKIE = "mw_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
USAGE_EVERY_S = 30.0


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

    def __init__(self, per_minute: float, burst: int) -> None:
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
    """Token and session checks with a short cache (see the module docstring for how stale it may be).

    ``admin_token``: a preset admin token (``$MASKWATCH_ADMIN_TOKEN``) made the token named ``admin`` at
    :meth:`start`; without one, a new admin token is made when none exists (``generated_admin_token``,
    printed once)."""

    def __init__(
        self,
        tokens: TokenRepository,
        limiter: RateLimiter,
        session_hours: float,
        *,
        admin_token: str | None = None,
        cache_s: float = 2.0,
        outage_grace_s: float = 3600.0,
    ) -> None:
        self.cache_s = cache_s
        self.outage_grace_s = outage_grace_s
        self._outage = False
        self.tokens = tokens
        self.limiter = limiter
        self.session_seconds = session_hours * 3600
        self.admin_preset = admin_token
        self.generated_admin_token: str | None = None
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()
        self._used: dict[int, float] = {}  # token id -> last use, not yet written
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifetime ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Make sure an admin token exists, then write token usage every :data:`USAGE_EVERY_S` seconds."""
        self.generated_admin_token = self.ensure_admin(self.admin_preset)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="maskwatch-token-usage", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        self.write_usage()

    def _run(self) -> None:
        while not self._stop.wait(USAGE_EVERY_S):
            self.write_usage()

    def write_usage(self) -> None:
        """Store when each token used since the last call was last used (best effort: kept on failure)."""
        with self._lock:
            used, self._used = self._used, {}
        try:
            self.tokens.record_use(used)
        except Exception:
            with self._lock:
                for token_id, ts in used.items():
                    self._used[token_id] = max(ts, self._used.get(token_id, 0.0))
            log.warning("token usage not written (database unreachable?)")

    # -- tokens ------------------------------------------------------------------------------------------

    def create_token(self, name: str, role: str, token: str | None = None) -> tuple[ApiToken, str]:
        """A new token (its value returned once; only its hash is stored)."""
        if role not in ROLES:
            raise ApiError(422, "invalid", f"role must be one of {', '.join(ROLES)}")
        token = token or new_token()
        row = ApiToken(name=name, role=role, token_hash=hash_token(token), prefix=token[:7], created_ts=time.time())
        return self.tokens.add(row), token

    def ensure_admin(self, preset: str | None) -> str | None:
        """The admin token at start: ``preset`` becomes the token named ``admin`` (replacing an older one of
        that name); without it, a new admin token is made when none exists and returned (to print once).
        Returns None when an admin token existed already."""
        if preset:
            row = ApiToken(
                name="admin", role="admin", token_hash=hash_token(preset), prefix=preset[:7], created_ts=time.time()
            )
            self.tokens.replace_named(row)
            return None
        if self.tokens.has_admin():
            return None
        return self.create_token("admin", "admin")[1]

    def revoke(self, token_id: int) -> ApiToken | None:
        row = self.tokens.revoke(token_id)
        self.forget()
        return row

    # -- checks ------------------------------------------------------------------------------------------

    def forget(self) -> None:
        """Drop cached lookups (a token was revoked or a session ended)."""
        with self._lock:
            self._cache.clear()

    def _cached(self, key: str, load: Callable[[], Principal | None]) -> Principal | None:
        """The principal for ``key``, from the cache when checked less than ``cache_s`` ago, else from the
        database; during an outage, from a check less than ``outage_grace_s`` old."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)  # (checked at, principal)
            if hit is not None and now - hit[0] < self.cache_s:
                return hit[1]
        try:
            value = load()
        except Exception as exc:
            if hit is not None and now - hit[0] < self.outage_grace_s:
                if not self._outage:
                    log.warning("database unreachable: tokens checked before the outage are trusted meanwhile")
                self._outage = True
                return hit[1]
            raise ApiError(503, "database_unavailable", "cannot check the token: the database is unreachable") from exc
        self._outage = False
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now, value)
        return value

    def by_token(self, token: str) -> Principal | None:
        digest = hash_token(token)

        def load() -> Principal | None:
            row = self.tokens.active(digest)
            return None if row is None else Principal(row.id, row.name, row.role, "bearer")

        return self._cached("t:" + digest, load)

    def by_session(self, value: str) -> Principal | None:
        digest = hash_token(value)

        def load() -> Principal | None:
            found = self.tokens.session(digest, time.time())
            if found is None:
                return None
            token, csrf = found
            return Principal(token.id, token.name, token.role, "session", csrf)

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
        with self._lock:
            self._used[principal.token_id] = time.time()
        request.state.principal = principal
        return principal

    # -- browser sessions --------------------------------------------------------------------------------

    def login(self, token: str) -> tuple[str, str, Principal]:
        principal = self.by_token(token)
        if principal is None:
            raise ApiError(401, "unauthorized", "unknown or revoked token")
        value, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        now = time.time()
        self.tokens.add_session(
            SessionRow(
                session_hash=hash_token(value),
                token_id=principal.token_id,
                csrf=csrf,
                created_ts=now,
                expires_ts=now + self.session_seconds,
            )
        )
        with self._lock:
            self._used[principal.token_id] = now
        return value, csrf, principal

    def logout(self, value: str) -> None:
        self.tokens.delete_session(hash_token(value))
        self.forget()
