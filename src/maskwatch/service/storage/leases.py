"""Leases: a named right held by one worker until it expires, kept in the shared database so that several
``maskwatch serve`` workers agree on who does what (``camera:NAME``: who runs a local camera; ``alerts``:
who evaluates the rules; ``worker:ID``: a worker's heartbeat).

Times are the **database's clock** (``clock_timestamp()`` on PostgreSQL, ``julianday('now')`` on SQLite), so
workers on machines whose clocks disagree still agree on when a lease expires. Taking a lease is one
conditional upsert (``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` the holder is the caller or the lease has
expired), atomic on both databases: two workers racing for a free lease get one winner. ``epoch`` grows at
each change of holder (a fencing token).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Float, case, cast, delete, func, literal_column, select, update
from sqlalchemy.orm import Session

from maskwatch.service.storage.db import Sessions, dialect_insert
from maskwatch.service.storage.models import Lease as LeaseRow

__all__ = ["Lease", "LeaseRepository"]


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    expires: float  # database clock, epoch seconds
    acquired: float
    epoch: int


def _now(session: Session) -> ColumnElement[float]:
    """The database's clock in epoch seconds (one expression per dialect)."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.extract("epoch", func.clock_timestamp()), Float)
    return literal_column("((julianday('now') - 2440587.5) * 86400.0)", Float)


class LeaseRepository:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def now(self) -> float:
        """The database's clock (epoch seconds)."""
        with self.sessions() as s:
            return float(s.scalar(select(_now(s))) or 0.0)

    def acquire(self, name: str, holder: str, ttl: float) -> Lease | None:
        """Take or keep ``name`` for ``ttl`` seconds when it is free, expired or ``holder``'s already; the
        lease when ``holder`` has it after this call, None when another worker holds it."""
        with self.sessions() as s, s.begin():
            now = float(s.scalar(select(_now(s))) or 0.0)
            stmt = dialect_insert(s, LeaseRow).values(
                name=name, holder=holder, expires_ts=now + ttl, acquired_ts=now, renewed_ts=now, epoch=1
            )
            old, new = LeaseRow.__table__.c, stmt.excluded
            same = old.holder == new.holder
            stmt = stmt.on_conflict_do_update(
                index_elements=["name"],
                set_={
                    "holder": new.holder,
                    "expires_ts": new.expires_ts,
                    "renewed_ts": new.renewed_ts,
                    "acquired_ts": case((same, old.acquired_ts), else_=new.acquired_ts),
                    "epoch": case((same, old.epoch), else_=old.epoch + 1),
                },
                where=same | (old.expires_ts < new.renewed_ts),
            ).returning(old.holder, old.expires_ts, old.acquired_ts, old.epoch)
            row = s.execute(stmt).first()
        if row is None or row[0] != holder:
            return None
        return Lease(name, row[0], float(row[1]), float(row[2]), int(row[3]))

    def renew(self, holder: str, names: Iterable[str] | None, ttl: float) -> set[str]:
        """Extend ``holder``'s leases among ``names`` (None: all of them) by ``ttl`` from now; the names it
        still holds (a lease another worker took, or that was deleted, is not among them). An expired lease
        nobody took is renewed: its holder never stopped owning it."""
        stmt = update(LeaseRow).where(LeaseRow.holder == holder)
        if names is not None:
            names = list(names)
            if not names:
                return set()
            stmt = stmt.where(LeaseRow.name.in_(names))
        with self.sessions() as s, s.begin():
            now = float(s.scalar(select(_now(s))) or 0.0)
            return set(s.scalars(stmt.values(expires_ts=now + ttl, renewed_ts=now).returning(LeaseRow.name)))

    def release(self, holder: str, names: Iterable[str] | None = None) -> None:
        """Give up ``holder``'s leases (``names``, or all of them): another worker may take them at once."""
        query = delete(LeaseRow).where(LeaseRow.holder == holder)
        if names is not None:
            names = list(names)
            if not names:
                return
            query = query.where(LeaseRow.name.in_(names))
        with self.sessions() as s, s.begin():
            s.execute(query)

    def all(self, prefix: str | None = None) -> tuple[float, list[Lease]]:
        """(the database's clock, every lease whose name starts with ``prefix``)."""
        with self.sessions() as s:
            now = float(s.scalar(select(_now(s))) or 0.0)
            query = select(LeaseRow)
            if prefix:
                query = query.where(LeaseRow.name.startswith(prefix, autoescape=True))
            rows = list(s.scalars(query.order_by(LeaseRow.name)))
        return now, [Lease(r.name, r.holder, r.expires_ts, r.acquired_ts, r.epoch) for r in rows]
