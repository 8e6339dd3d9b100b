"""API tokens (only their SHA-256 is stored) and browser sessions made from them."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import delete, select, update

from maskwatch.service.storage.db import Sessions
from maskwatch.service.storage.models import ApiToken
from maskwatch.service.storage.models import Session as SessionRow

__all__ = ["LastAdminError", "TokenRepository"]


class LastAdminError(Exception):
    """Revoking this token would leave no admin token."""


class TokenRepository:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    # -- tokens ------------------------------------------------------------------------------------------

    def active(self, token_hash: str) -> ApiToken | None:
        """The token with this hash, unless revoked."""
        with self.sessions() as s:
            query = select(ApiToken).where(ApiToken.token_hash == token_hash, ApiToken.revoked.is_(False))
            return s.scalars(query).first()

    def all(self) -> list[ApiToken]:
        with self.sessions() as s:
            return list(s.scalars(select(ApiToken).order_by(ApiToken.id)))

    def add(self, row: ApiToken) -> ApiToken:
        with self.sessions() as s, s.begin():
            s.add(row)
        return row

    def has_admin(self) -> bool:
        with self.sessions() as s:
            query = select(ApiToken.id).where(ApiToken.role == "admin", ApiToken.revoked.is_(False))
            return s.scalars(query.limit(1)).first() is not None

    def replace_named(self, row: ApiToken) -> bool:
        """Make ``row`` the token of its name, revoking older ones of that name; False (nothing changed)
        when a token with its hash exists already."""
        with self.sessions() as s, s.begin():
            if s.scalars(select(ApiToken.id).where(ApiToken.token_hash == row.token_hash)).first() is not None:
                return False
            for old in s.scalars(select(ApiToken).where(ApiToken.name == row.name)):
                old.revoked = True
            s.add(row)
        return True

    def revoke(self, token_id: int) -> ApiToken | None:
        """Revoke a token; None when there is no such token. :class:`LastAdminError` for the last admin."""
        with self.sessions() as s, s.begin():
            row = s.get(ApiToken, token_id)
            if row is None:
                return None
            if row.role == "admin" and not row.revoked:
                admins = s.scalars(select(ApiToken.id).where(ApiToken.role == "admin", ApiToken.revoked.is_(False)))
                if len(admins.all()) <= 1:
                    raise LastAdminError("this is the last admin token; make another admin token first")
            row.revoked = True
        return row

    def record_use(self, used: Mapping[int, float]) -> None:
        """Store when each token was last used (``token id -> time``), never moving a time backwards."""
        if not used:
            return
        with self.sessions() as s, s.begin():
            for token_id, ts in used.items():
                s.execute(
                    update(ApiToken)
                    .where(ApiToken.id == token_id)
                    .where((ApiToken.last_used_ts.is_(None)) | (ApiToken.last_used_ts < ts))
                    .values(last_used_ts=ts)
                )

    # -- browser sessions --------------------------------------------------------------------------------

    def add_session(self, row: SessionRow) -> None:
        with self.sessions() as s, s.begin():
            s.add(row)

    def session(self, session_hash: str, now: float) -> tuple[ApiToken, str] | None:
        """(token, CSRF value) of a live session on a token that is not revoked; None otherwise."""
        with self.sessions() as s:
            row = s.scalars(select(SessionRow).where(SessionRow.session_hash == session_hash)).first()
            if row is None or row.expires_ts < now:
                return None
            token = s.get(ApiToken, row.token_id)
            if token is None or token.revoked:
                return None
            return token, row.csrf

    def delete_session(self, session_hash: str) -> None:
        with self.sessions() as s, s.begin():
            s.execute(delete(SessionRow).where(SessionRow.session_hash == session_hash))
