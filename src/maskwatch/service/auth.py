"""Who may do what: API tokens (stored as SHA-256), roles, browser sessions with CSRF protection, and a
per-token rate limit.

* ``Authorization: Bearer TOKEN`` on every request (scripts, Prometheus), or a session cookie made by
  ``POST /api/v1/auth/login`` (the dashboard). A cookie-authenticated request that changes anything must
  also send ``X-CSRF-Token`` (the value returned at login and kept in the readable ``mw_csrf`` cookie):
  another site can make the browser send the cookie, but cannot read the CSRF value.
* Roles, each including the ones below it: ``viewer`` reads, ``operator`` also acknowledges alerts,
  uploads and marks false positives, ``admin`` also manages cameras, rules and tokens.
* When a token was last used is kept in memory and written every :data:`USAGE_EVERY_S` seconds (and at
  stop), so a request never waits for a database write. Tokens made through the API expire
  (``auth.token_days``); an expired token is refused like a revoked one.
* A token or session is checked against the database at most ``cache_s`` seconds (``auth.cache_s``, 2 s)
  before it is trusted again: a revocation or a logout made through any worker reaches every worker within
  that time. While the database is unreachable (when nobody can revoke anything), a token checked within
  ``outage_grace_s`` keeps working, so pages answered from memory (``/fleet``) stay available.
* Failed or missing credentials are throttled per client address (:class:`RateLimiter` keyed by address,
  ``auth.failed_per_minute`` / ``auth.failed_burst``, login included): past the budget the answer is 429
  at once, without a database lookup. Unknown tokens are remembered in a bounded cache of their own, so a
  stream of random tokens neither costs a lookup each (within the budget) nor pushes valid tokens out.
* A preset admin token must be strong (:func:`token_bits`, ``auth.min_token_bits``); only a few of a
  token's first characters are stored in clear (:func:`token_prefix`), to recognise it in lists.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import string
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
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
    "check_token_strength",
    "hash_token",
    "new_token",
    "token_bits",
    "token_prefix",
]

log = logging.getLogger("maskwatch.service")

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[str, ...] = ("viewer", "operator", "admin")
SESSION_COOKIE = "mw_session"
CSRF_COOKIE = "mw_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
USAGE_EVERY_S = 30.0
MAX_TOKEN_CHARS = 200  # longer credentials are refused without a lookup
CACHE_ENTRIES = 10_000  # per cache (known and unknown credentials): the oldest entries make room


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return "mw_" + secrets.token_urlsafe(32)


def token_bits(token: str) -> float:
    """A conservative estimate of a token's strength in bits: its length times log2 of the alphabet its
    character classes span (lower case 26, upper case 26, digits 10, other printable ASCII 33, anything
    else 100), and 0 when it has fewer than 10 distinct characters (``aaaa...``, ``abababab...``).
    A token from :func:`new_token` (``mw_`` + 43 URL-safe characters) scores about 300."""
    if len(set(token)) < 10:
        return 0.0
    classes = (
        (string.ascii_lowercase, 26),
        (string.ascii_uppercase, 26),
        (string.digits, 10),
        (string.punctuation + " ", 33),
    )
    alphabet = sum(size for chars, size in classes if any(c in chars for c in token))
    if any(not c.isascii() for c in token):
        alphabet += 100
    return len(token) * math.log2(max(2, alphabet))


def check_token_strength(token: str, min_bits: float) -> None:
    """ValueError when a preset token is weaker than ``min_bits`` (:func:`token_bits`) or too long."""
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError(f"the preset admin token is longer than {MAX_TOKEN_CHARS} characters")
    bits = token_bits(token)
    if bits < min_bits:
        raise ValueError(
            f"the preset admin token is too weak (about {bits:.0f} bits, auth.min_token_bits is {min_bits:g}): "
            "use a long random value, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )


def token_prefix(token: str) -> str:
    """The characters kept in clear to recognise a token in lists: at most 7, and at most an eighth of the
    token (``mw_Abcd`` of a 46-character token; 3 of a 24-character one)."""
    return token[: min(7, len(token) // 8)]


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    role: str
    via: str  # bearer | session
    csrf: str | None = None
    expires: float | None = None  # epoch seconds; None: never

    def allows(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def expired(self, now: float) -> bool:
        return self.expires is not None and self.expires <= now


class RateLimiter:
    """Token bucket per key (an API token's id, a client address): ``per_minute`` sustained, ``burst`` at
    once. At most ``max_keys`` keys are held; full buckets are dropped first to make room."""

    def __init__(self, per_minute: float, burst: int, *, max_keys: int = 100_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self._state: dict[Hashable, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def _level(self, key: Hashable, now: float) -> float:
        tokens, at = self._state.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def wait(self, key: Hashable) -> float:
        """Seconds until ``key`` may spend one (0: now), without spending."""
        with self._lock:
            tokens = self._level(key, time.monotonic())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def check(self, key: Hashable) -> float:
        """Spend one: 0 when allowed now, else seconds to wait (nothing spent)."""
        now = time.monotonic()
        with self._lock:
            tokens = self._level(key, now)
            if len(self._state) >= self.max_keys and key not in self._state:
                self._prune(now)
            if tokens >= 1.0:
                self._state[key] = (tokens - 1.0, now)
                return 0.0
            self._state[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        full = [k for k in self._state if self._level(k, now) >= self.burst]
        for k in full:
            del self._state[k]
        while len(self._state) >= self.max_keys:  # every bucket in use: the oldest goes
            del self._state[next(iter(self._state))]


def _too_many(wait: float, what: str) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        f"{what}; retry in {wait:.1f} s",
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )


class Auth:
    """Token and session checks with a short cache (see the module docstring for how stale it may be).

    ``admin_token``: a preset admin token (``$MASKWATCH_ADMIN_TOKEN``) made the token named ``admin`` at
    :meth:`start`; without one, a new admin token is made when none exists (``generated_admin_token``: the
    service writes it to a mode-600 file, never to the log). ``failures``: the per-client budget of failed
    or missing credentials (None: unlimited); ``token_days``: lifetime of tokens made through the API."""

    def __init__(
        self,
        tokens: TokenRepository,
        limiter: RateLimiter,
        session_hours: float,
        *,
        admin_token: str | None = None,
        failures: RateLimiter | None = None,
        token_days: float | None = None,
        cache_s: float = 2.0,
        outage_grace_s: float = 3600.0,
    ) -> None:
        self.cache_s = cache_s
        self.outage_grace_s = outage_grace_s
        self._outage = False
        self.tokens = tokens
        self.limiter = limiter
        self.failures = failures
        self.token_days = token_days
        self.session_seconds = session_hours * 3600
        self.admin_preset = admin_token
        self.generated_admin_token: str | None = None
        self._cache: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()  # known credentials
        self._unknown: OrderedDict[str, float] = OrderedDict()  # credentials that matched nothing -> until
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

    def create_token(
        self, name: str, role: str, token: str | None = None, *, expires_days: float | None = None
    ) -> tuple[ApiToken, str]:
        """A new token (its value returned once; only its hash is stored), expiring after ``expires_days``
        (None: never)."""
        if role not in ROLES:
            raise ApiError(422, "invalid", f"role must be one of {', '.join(ROLES)}")
        token = token or new_token()
        now = time.time()
        row = ApiToken(
            name=name,
            role=role,
            token_hash=hash_token(token),
            prefix=token_prefix(token),
            created_ts=now,
            expires_ts=None if expires_days is None else now + expires_days * 86400,
        )
        return self.tokens.add(row), token

    def ensure_admin(self, preset: str | None) -> str | None:
        """The admin token at start: ``preset`` becomes the token named ``admin`` (replacing an older one of
        that name); without it, a new admin token is made when none exists and returned (to print once).
        Returns None when an admin token existed already."""
        if preset:
            row = ApiToken(
                name="admin",
                role="admin",
                token_hash=hash_token(preset),
                prefix=token_prefix(preset),
                created_ts=time.time(),
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
            self._unknown.clear()

    def _cached(self, key: str, load: Callable[[], Principal | None], client: str | None) -> Principal | None:
        """The principal for ``key``, from the cache when checked less than ``cache_s`` ago, else from the
        database; during an outage, from a check less than ``outage_grace_s`` old. A credential that matched
        nothing is kept apart (its own bounded cache, so it never pushes known ones out). A lookup needs the
        client to have a failure left in its budget (else 429, no lookup); the caller spends one per refusal."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)  # (checked at, principal)
            if hit is not None and now - hit[0] < self.cache_s:
                return hit[1]
            unknown = self._unknown.get(key, 0.0) > now
        if unknown:
            return None
        self._check_budget(client)
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
            if value is None:
                self._unknown[key] = now + self.cache_s
                self._unknown.move_to_end(key)
                while len(self._unknown) > CACHE_ENTRIES:
                    self._unknown.popitem(last=False)
            else:
                self._cache[key] = (now, value)
                self._cache.move_to_end(key)
                while len(self._cache) > CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        return value

    def _check_budget(self, client: str | None) -> None:
        """429 when the client has no failures left (nothing spent)."""
        if self.failures is not None:
            wait = self.failures.wait(client or "?")
            if wait > 0:
                raise _too_many(wait, "too many failed or missing credentials from your address")

    def _failed(self, client: str | None) -> None:
        """Spend one of the client's failures; 429 when there was none left."""
        if self.failures is not None:
            wait = self.failures.check(client or "?")
            if wait > 0:
                raise _too_many(wait, "too many failed or missing credentials from your address")

    def _refuse(self, client: str | None, detail: str) -> ApiError:
        """A 401 that costs the client one failure (a 429 once its budget is spent)."""
        self._failed(client)
        return ApiError(401, "unauthorized", detail)

    def by_token(self, token: str, client: str | None = None) -> Principal | None:
        if len(token) > MAX_TOKEN_CHARS:
            return None
        digest = hash_token(token)

        def load() -> Principal | None:
            row = self.tokens.active(digest)
            return None if row is None else Principal(row.id, row.name, row.role, "bearer", expires=row.expires_ts)

        principal = self._cached("t:" + digest, load, client)
        return None if principal is not None and principal.expired(time.time()) else principal

    def by_session(self, value: str, client: str | None = None) -> Principal | None:
        if len(value) > MAX_TOKEN_CHARS:
            return None
        digest = hash_token(value)

        def load() -> Principal | None:
            found = self.tokens.session(digest, time.time())
            if found is None:
                return None
            token, csrf = found
            return Principal(token.id, token.name, token.role, "session", csrf, expires=token.expires_ts)

        principal = self._cached("s:" + digest, load, client)
        return None if principal is not None and principal.expired(time.time()) else principal

    def authenticate(self, request: Request) -> Principal:
        client = request.client.host if request.client else None
        header = request.headers.get("authorization", "")
        principal: Principal | None = None
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise self._refuse(client, "use 'Authorization: Bearer TOKEN'")
            principal = self.by_token(value.strip(), client)
            if principal is None:
                raise self._refuse(client, "unknown, expired or revoked token")
        else:
            cookie = request.cookies.get(SESSION_COOKIE)
            if cookie:
                principal = self.by_session(cookie, client)
            if principal is None:
                raise self._refuse(client, "a token is required (Authorization: Bearer TOKEN, or log in)")
            if request.method not in SAFE_METHODS:
                sent = request.headers.get(CSRF_HEADER, "")
                if not principal.csrf or not hmac.compare_digest(sent, principal.csrf):
                    raise ApiError(403, "csrf", "missing or wrong X-CSRF-Token header for a cookie session")
        wait = self.limiter.check(principal.token_id)
        if wait > 0:
            raise _too_many(wait, "too many requests")
        with self._lock:
            self._used[principal.token_id] = time.time()
        request.state.principal = principal
        return principal

    # -- browser sessions --------------------------------------------------------------------------------

    def login(self, token: str, client: str | None = None) -> tuple[str, str, Principal]:
        """A session on ``token``; a wrong token costs the client one failure like any other (429 past its
        budget), and the session never outlives the token."""
        principal = self.by_token(token, client)
        if principal is None:
            raise self._refuse(client, "unknown, expired or revoked token")
        value, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        now = time.time()
        self.tokens.add_session(
            SessionRow(
                session_hash=hash_token(value),
                token_id=principal.token_id,
                csrf=csrf,
                created_ts=now,
                expires_ts=min(now + self.session_seconds, principal.expires or float("inf")),
            )
        )
        with self._lock:
            self._used[principal.token_id] = now
        return value, csrf, principal

    def logout(self, value: str) -> None:
        self.tokens.delete_session(hash_token(value))
        self.forget()
