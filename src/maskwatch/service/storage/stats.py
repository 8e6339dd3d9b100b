"""Reading stats buckets and their rollups: compliance series for charts, today's totals, and each fleet
camera's latest figures. Never a scan of raw person events.

Kept fast for the dashboard (``benchmarks/bench_compliance.py``: 30 days x 50 cameras): the rows come from
covering indexes in time order (no table lookups, no SQL sort or GROUP BY, which cost more than the scan)
and are summed per (camera, slot) here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, tzinfo

from sqlalchemy import and_, distinct, func, select

from maskwatch.core.names import NODE_SEPARATOR
from maskwatch.core.timeutil import local_day_start
from maskwatch.service.storage.db import Sessions
from maskwatch.service.storage.models import StatsBucket, StatsRollup

__all__ = ["GRAINS", "FleetCameraStats", "LagPoint", "Point", "StatsRepository"]

#: bucket sizes of a series: 1m from the buckets, 1h (UTC hours) and 1d (days of the site's time zone,
#: 23 to 25 hours) from the rollups
GRAINS = {"1m": 60, "1h": 3600, "1d": 86400}

#: a point: (slot start, people, compliant people, frames analysed, most people present)
Point = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class FleetCameraStats:
    """A fleet camera (``node:camera``) over a window: people, compliant people, and its latest bucket's
    figures."""

    people: int
    compliant: int
    fps: float | None
    lag_p50: float | None
    lag_p95: float | None
    end: float | None


@dataclass(frozen=True)
class LagPoint:
    """A stats bucket's lag p95 (seconds) and when the bucket ended."""

    end: float
    lag_p95: float


class StatsRepository:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def cameras_in_range(self, start: float, end: float, zone: tzinfo = UTC) -> int:
        """How many cameras have stats in [start, end) (from the daily rollups: a few rows per camera)."""
        day = GRAINS["1d"]
        t = StatsRollup.__table__.c
        q = select(func.count(distinct(t.camera))).where(t.grain == day, t.start_ts >= local_day_start(start, zone))
        with self.sessions() as s:
            return int(s.scalar(q.where(t.start_ts < end)) or 0)

    def series(
        self, *, cameras: list[str] | None, start: float, end: float, bucket: str, zone: tzinfo = UTC
    ) -> dict[str, list[Point]]:
        """Points per camera, sorted by camera and slot: 1m from the buckets (summed per minute when the
        engine's stats interval is shorter), 1h and 1d from the rollups (a 1d slot starts at a midnight of
        ``zone``, the site's time zone the rollups were written in)."""
        grain = GRAINS[bucket]
        if bucket == "1m":
            t = StatsBucket.__table__.c
            where = [t.start_ts >= start, t.start_ts < end]
        else:
            t = StatsRollup.__table__.c
            first = local_day_start(start, zone) if bucket == "1d" else int(start // grain * grain)
            where = [t.grain == grain, t.start_ts >= first, t.start_ts < end]
        if cameras:
            where.append(t.camera.in_(cameras))
        columns = (t.camera, t.start_ts, t.n_people, t.compliant_people, t.frames_analysed, t.present_max)
        with self.sessions() as s:
            result = s.connection().execute(select(*columns).where(*where).order_by(t.start_ts))  # the index's order
            # plain numbers: the driver's tuples as they are (SQLAlchemy's Row objects cost a third of the time)
            rows = result.cursor.fetchall() if result.cursor is not None else []
            result.close()
        series: dict[str, list[Point]] = {}
        for camera, ts, n, ok, frames, present in rows:
            slot = int(ts) // grain * grain if bucket == "1m" else int(ts)  # rollups are aligned already
            points = series.get(camera)
            if points is None:
                points = series[camera] = []
            if points and points[-1][0] == slot:  # several buckets in one minute: summed
                last = points[-1]
                points[-1] = (slot, last[1] + n, last[2] + ok, last[3] + frames, max(last[4], present))
            else:
                points.append((slot, n, ok, frames, present))
        return dict(sorted(series.items()))

    def day_totals(self, day_start: int) -> tuple[int, int]:
        """(people, compliant people) of the site's day starting at ``day_start`` (its local midnight), from
        the daily rollups."""
        with self.sessions() as s:
            people, compliant = s.execute(
                select(
                    func.coalesce(func.sum(StatsRollup.n_people), 0),
                    func.coalesce(func.sum(StatsRollup.compliant_people), 0),
                ).where(StatsRollup.grain == 86400, StatsRollup.start_ts == day_start)
            ).one()
        return int(people), int(compliant)

    def day_totals_by_camera(self, day_start: int) -> dict[str, tuple[int, int]]:
        """Per camera, (people, compliant people) of the site's day starting at ``day_start`` (its local
        midnight), from the daily rollups."""
        query = (
            select(StatsRollup.camera, func.sum(StatsRollup.n_people), func.sum(StatsRollup.compliant_people))
            .where(StatsRollup.grain == 86400, StatsRollup.start_ts == day_start)
            .group_by(StatsRollup.camera)
        )
        with self.sessions() as s:
            rows = s.execute(query).all()
        return {camera: (int(n or 0), int(ok or 0)) for camera, n, ok in rows}

    def lags_since(self, since: float) -> dict[str, list[LagPoint]]:
        """Per camera, the lag p95 of each stats bucket that started at or after ``since``, oldest first
        (what the ``camera_lagging`` rules read)."""
        t = StatsBucket.__table__.c
        query = (
            select(t.camera, t.end_ts, t.lag_p95)
            .where(t.start_ts >= since, t.lag_p95.is_not(None))
            .order_by(t.camera, t.end_ts)
        )
        out: dict[str, list[LagPoint]] = {}
        with self.sessions() as s:
            for camera, end, lag in s.execute(query):
                out.setdefault(camera, []).append(LagPoint(float(end), float(lag)))
        return out

    def fleet_cameras(self, since: float) -> dict[str, FleetCameraStats]:
        """Per fleet camera (a name holding :data:`~maskwatch.core.names.NODE_SEPARATOR`) since ``since``:
        people, compliant, and the latest bucket's FPS, lag and end."""
        window = [StatsBucket.start_ts >= since, StatsBucket.camera.contains(NODE_SEPARATOR)]
        totals = (
            select(
                StatsBucket.camera,
                func.sum(StatsBucket.n_people).label("people"),
                func.sum(StatsBucket.compliant_people).label("ok"),
                func.max(StatsBucket.start_ts).label("latest"),
            )
            .where(*window)
            .group_by(StatsBucket.camera)
            .subquery()
        )
        latest = select(
            totals.c.camera,
            totals.c.people,
            totals.c.ok,
            StatsBucket.analysed_fps,
            StatsBucket.lag_p50,
            StatsBucket.lag_p95,
            StatsBucket.end_ts,
        ).join(StatsBucket, and_(StatsBucket.camera == totals.c.camera, StatsBucket.start_ts == totals.c.latest))
        with self.sessions() as s:
            rows = s.execute(latest).all()
        return {
            camera: FleetCameraStats(int(n or 0), int(ok or 0), fps, p50, p95, end)
            for camera, n, ok, fps, p50, p95, end in rows
        }
