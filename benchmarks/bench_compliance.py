"""The dashboard's compliance query at scale (issue 10: < 200 ms over 30 days of buckets for 50 cameras).

For each database (SQLite in a temp folder; PostgreSQL as a throwaway server started with the tests' own
helper, ``tests/conftest_service.py::PgServer``), the benchmark

1. fills ``--days`` x ``--cameras`` of 1-minute stats buckets through the service's own storage code
   (``write_events`` in batches of 500, one transaction each, exactly what the ingest thread does; the
   hourly and daily rollups are kept by that code), and reports the ingest rate;
2. starts the real app (``create_app``) in uvicorn on 127.0.0.1 on that database, with fake models and no
   camera (the query does not touch them), and times ``GET /api/v1/stats/compliance`` over HTTP with httpx
   (body read, JSON parsed) for each case: ``--repeat`` calls, median and max, after one warm-up call;
3. "before": the same calls with the indexes of migrations 0001-0002 instead of 0003's covering ones, and
   the code this replaced (a SQL GROUP BY, then a dict per point and ``json.dumps``) run in-process on
   the old indexes.

    python benchmarks/bench_compliance.py --json benchmarks/results/compliance.json     # 30 d x 50 cameras
    python benchmarks/bench_compliance.py --days 2 --cameras 5 --db sqlite               # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "mw_bench_admin_token_0123456789abcdef"  # a preset admin token must be strong
HOUR, DAY = 3600, 86400
END = time.time() // DAY * DAY  # the data ends at midnight today (inside every retention); so do the queries

#: (name, bucket, span in seconds, cameras (None: all), format, expected status)
CASES: list[tuple[str, str, int, int | None, str, int]] = [
    ("1m_6h_all", "1m", 6 * HOUR, None, "json", 200),
    ("1m_6h_all_columns", "1m", 6 * HOUR, None, "columns", 200),  # the dashboard's overview chart
    ("1m_12h_all", "1m", 12 * HOUR, None, "json", 200),
    ("1m_12h_all_columns", "1m", 12 * HOUR, None, "columns", 200),  # the most 1m points for 50 cameras
    ("1m_24h_all", "1m", DAY, None, "json", 200),  # 422 when over the points of one answer (50 cameras: 72 000)
    ("1m_48h_one", "1m", 2 * DAY, 1, "json", 200),  # one camera, the longest 1m range
    ("1h_7d_all", "1h", 7 * DAY, None, "json", 200),
    ("1h_30d_all", "1h", 30 * DAY, None, "json", 200),
    ("1h_30d_all_columns", "1h", 30 * DAY, None, "columns", 200),
    ("1d_30d_all", "1d", 30 * DAY, None, "json", 200),
    ("1m_30d_all", "1m", 30 * DAY, None, "json", 422),  # absurd: 43 200 points per camera
    ("1m_48h_all", "1m", 2 * DAY, None, "json", 200),  # likewise (50 cameras: 144 000)
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _events(days: int, cameras: int, interval: float) -> Iterator[Any]:
    """Stats events in the order cameras send them (every camera's minute, then the next minute)."""
    from maskwatch.core.events import LagStats, StatsBucket

    lag = LagStats(p50=0.1, p95=0.2, max=0.3)
    start = END - days * DAY
    for i in range(int(days * DAY / interval)):
        t0 = start + i * interval
        begin, end = datetime.fromtimestamp(t0, UTC), datetime.fromtimestamp(t0 + interval, UTC)
        for c in range(cameras):
            masked, bare = (i * 7 + c) % 5, (i + c) % 2
            n = masked + bare
            # model_construct: the engine validated its events already; the storage path is what we time
            yield StatsBucket.model_construct(
                id=f"b{c:03d}-{i:08d}", source=f"cam{c:02d}", time=end, start=begin, end=end, interval=interval,
                people={"with_mask": masked, "without_mask": bare}, n_people=n, compliant_people=masked,
                compliance=None if n == 0 else masked / n, present_max=n, frames_analysed=300, frames_dropped=0,
                faces_classified=10, analysed_fps=5.0, lag=lag, final=False,
            )  # fmt: skip


def fill(url: str, days: int, cameras: int, interval: float = 60.0, batch: int = 500) -> dict[str, Any]:
    """The database at ``url``, migrated and filled through ``write_events`` (the ingest thread's writer)."""
    from maskwatch.service.storage.db import migrate, open_db, session_factory
    from maskwatch.service.storage.ingest import write_events

    engine = open_db(url)
    migrate(engine)
    sessions = session_factory(engine)
    began, written, pending = time.perf_counter(), 0, []
    for event in _events(days, cameras, interval):
        pending.append(event)
        if len(pending) == batch:
            with sessions() as s, s.begin():
                written += write_events(s, pending)
            pending = []
    if pending:
        with sessions() as s, s.begin():
            written += write_events(s, pending)
    seconds = time.perf_counter() - began
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")  # what autovacuum does soon after a bulk load
    engine.dispose()
    return {"buckets": written, "fill_seconds": round(seconds, 1), "buckets_per_s": round(written / seconds)}


def _buckets(url: str) -> int:
    """Stats buckets already in the database at ``url`` (0 when it is new)."""
    from sqlalchemy import func, inspect, select

    from maskwatch.service.storage.db import open_db
    from maskwatch.service.storage.models import StatsBucket

    engine = open_db(url)
    try:
        if not inspect(engine).has_table("stats_buckets"):
            return 0
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(StatsBucket)) or 0)
    finally:
        engine.dispose()


def old_indexes(url: str, *, before: bool) -> None:
    """Swap migration 0003's covering indexes for the ones they replaced (``before``) or back."""
    from sqlalchemy import Index

    from maskwatch.service.storage.db import open_db
    from maskwatch.service.storage.models import SERIES_COLUMNS, StatsBucket, StatsRollup

    b, r = StatsBucket.__table__.c, StatsRollup.__table__.c
    new = [Index("ix_stats_buckets_series", b.start_ts, *(b[c] for c in SERIES_COLUMNS)),
           Index("ix_rollup_series", r.grain, r.start_ts, *(r[c] for c in SERIES_COLUMNS))]  # fmt: skip
    old = [Index("ix_stats_buckets_start_ts", b.start_ts), Index("ix_rollup_grain_start", r.grain, r.start_ts)]
    engine = open_db(url)
    with engine.begin() as conn:
        for index in old if before else new:
            index.create(conn)
        for index in new if before else old:
            index.drop(conn)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def legacy_compliance(sessions: Any, start: float, end: float, bucket: str) -> str:
    """The code this benchmark replaced, for the 'before' figures: a SQL GROUP BY per (camera, minute) or the
    rollup rows in (camera, start) order, then a dict per point and ``json.dumps``."""
    from sqlalchemy import BigInteger, cast, func, select

    from maskwatch.service.storage.models import StatsBucket, StatsRollup

    grain = {"1m": 60, "1h": HOUR, "1d": DAY}[bucket]
    if bucket == "1m":
        b = StatsBucket
        slot = ((cast(b.start_ts, BigInteger) // grain) * grain).label("slot")
        sums = (func.sum(b.n_people), func.sum(b.compliant_people), func.sum(b.frames_analysed))
        q = select(b.camera, slot, *sums, func.max(b.present_max)).where(b.start_ts >= start, b.start_ts < end)
        q = q.group_by(b.camera, "slot").order_by(b.camera, "slot")
    else:
        r = StatsRollup
        q = select(r.camera, r.start_ts, r.n_people, r.compliant_people, r.frames_analysed, r.present_max)
        q = q.where(r.grain == grain, r.start_ts >= int(start // grain * grain), r.start_ts < end)
        q = q.order_by(r.camera, r.start_ts)
    series: dict[str, list[tuple[int, ...]]] = {}
    with sessions() as s:
        for camera, t, n, ok, frames, present in s.execute(q):
            row = (int(t), int(n or 0), int(ok or 0), int(frames or 0), int(present or 0))
            series.setdefault(camera, []).append(row)
    cameras = []
    for name, rows in sorted(series.items()):
        points = [
            {"start": _iso(t), "t": t, "n_people": n, "compliant_people": ok,
             "compliance": None if n == 0 else round(ok / n, 4), "frames_analysed": frames, "present_max": present}
            for t, n, ok, frames, present in rows
        ]  # fmt: skip
        cameras.append({"camera": name, "points": points})
    return json.dumps({"cameras": cameras})


def cpu_clock(server_pid: int | None) -> Callable[[], float]:
    """CPU seconds used so far by this process (the app and its client) and, for PostgreSQL, by the
    server's processes (children of ``server_pid``): what a call costs whatever else the machine runs."""
    tick = os.sysconf("SC_CLK_TCK")

    def server() -> float:
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == server_pid:
                total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
        return total / tick

    return (lambda: time.process_time() + server()) if server_pid else time.process_time


def _time(call: Callable[[], Any], repeat: int, cpu: Callable[[], float]) -> dict[str, Any]:
    """Median and max wall time of ``repeat`` calls after a warm-up, and their mean CPU time."""
    call()  # warm-up (statement caches, the database's page cache)
    times, out = [], None
    cpu_began = cpu()
    for _ in range(repeat):
        t = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - t)
    cpu_ms = 1000 * (cpu() - cpu_began) / repeat
    return {
        "median_ms": round(1000 * statistics.median(times), 1),
        "max_ms": round(1000 * max(times), 1),
        "cpu_ms": round(cpu_ms, 1),
        "out": out,
    }


def time_api(base: str, repeat: int, cameras: int, cpu: Callable[[], float]) -> dict[str, Any]:
    import httpx

    from maskwatch.service.routers.stats import GRAINS, MAX_POINTS

    out: dict[str, Any] = {}
    with httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {ADMIN}"}) as client:
        for name, bucket, span, n_cameras, form, expected in CASES:
            if n_cameras is None and span / GRAINS[bucket] * cameras > MAX_POINTS:
                expected = 422  # over the points of one answer at this many cameras
            params: dict[str, Any] = {"bucket": bucket, "from": _iso(END - span), "to": _iso(END), "format": form}
            if n_cameras:
                params["camera"] = [f"cam{c:02d}" for c in range(n_cameras)]
            client_cpu = [0.0]

            def call(params: dict[str, Any] = params, client_cpu: list[float] = client_cpu) -> httpx.Response:
                began = time.thread_time()
                r = client.get("/api/v1/stats/compliance", params=params)  # the whole body is read
                client_cpu[0] += time.thread_time() - began
                return r

            result = _time(call, repeat, cpu)
            r = result.pop("out")
            body = r.json()  # parsed outside the timing
            points = sum(len(c.get("points", c.get("t", []))) for c in body.get("cameras", []))
            result.update(status=r.status_code, points=points, bytes=len(r.content), ok=r.status_code == expected)
            result["client_cpu_ms"] = round(1000 * client_cpu[0] / (repeat + 1), 1)  # httpx's share of cpu_ms
            out[name] = result
    return out


def time_legacy(url: str, repeat: int, cpu: Callable[[], float]) -> dict[str, Any]:
    from maskwatch.service.storage.db import open_db, session_factory

    engine = open_db(url)
    sessions = session_factory(engine)
    out = {}
    for name, bucket, span, n_cameras, form, expected in CASES:
        if expected != 200 or n_cameras or form != "json":
            continue
        result = _time(lambda b=bucket, s=span: legacy_compliance(sessions, END - s, END, b), repeat, cpu)
        result["bytes"] = len(result.pop("out"))
        out[name] = result
    engine.dispose()
    return out


class App:
    """The real app in uvicorn on 127.0.0.1 (a thread of this process), on a given database."""

    def __init__(self, url: str, data_dir: Path):
        sys.path.insert(0, str(ROOT / "tests"))
        import uvicorn
        from fakes import fake_detector

        from maskwatch.service.app import create_app
        from maskwatch.service.settings import load_settings

        settings = load_settings(env={}, overrides={
            "server": {"data_dir": str(data_dir), "db": url}, "demo": {"enabled": False},
            "limits": {"rate_per_minute": 1e6, "rate_burst": 100000}})  # fmt: skip
        self.app = create_app(settings, detector=fake_detector(), admin_token=ADMIN)
        self.port = _port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *_: Any) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def run_database(
    kind: str, url: str, args: argparse.Namespace, work: Path, server_pid: int | None = None
) -> dict[str, Any]:
    cpu = cpu_clock(server_pid)
    result: dict[str, Any] = {"load_before_fill": _load()}
    if _buckets(url) == args.days * DAY // 60 * args.cameras:
        result["reused"] = f"{_buckets(url)} buckets filled by an earlier run"
    else:
        print(f"[{kind}] filling {args.days} d x {args.cameras} cameras ...", flush=True)
        result.update(fill(url, args.days, args.cameras))
    print(f"[{kind}] {result}", flush=True)
    result["load_before_queries"] = _load()
    with App(url, work / f"data-{kind}") as base:
        result["after"] = time_api(base, args.repeat, args.cameras, cpu)
        old_indexes(url, before=True)
        result["before_indexes_new_code"] = time_api(base, args.repeat, args.cameras, cpu)
        result["before_old_code_in_process"] = time_legacy(url, args.repeat, cpu)
        old_indexes(url, before=False)
        # the same calls once more: how much the figures move on a shared machine
        result["after_again"] = time_api(base, args.repeat, args.cameras, cpu)

    def fig(r: dict[str, Any] | None) -> str:
        return "-" if r is None else f"{r['median_ms']:.0f}/{r['cpu_ms']:.0f}"

    print(f"[{kind}] case: wall median / CPU ms, now (old indexes; old code)")
    for name, r in result["after"].items():
        size = f"{r['status']} {r['points']:6d} points {r['bytes'] / 1e6:5.2f} MB"
        old = (result["before_indexes_new_code"][name], result["before_old_code_in_process"].get(name))
        print(f"[{kind}] {name:18s} {size}: {fig(r)} ({fig(old[0])}; {fig(old[1])})", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--cameras", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--sqlite-file", type=Path, default=None, help="keep the SQLite database here; one "
                        "filled by an earlier run with the same --days and --cameras is used as it is")  # fmt: skip
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mw-bench-compliance-"))
    results: dict[str, Any] = {
        "command": "python benchmarks/bench_compliance.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "days": args.days,
        "cameras": args.cameras,
        "client": "httpx over HTTP to the app in uvicorn on 127.0.0.1 (body read and parsed)",
        "cases": [
            {"name": n, "bucket": b, "span_s": s, "cameras": c or "all", "format": f, "expect": e}
            for n, b, s, c, f, e in CASES
        ],
        "target_ms": 200,
    }
    if args.db in ("sqlite", "both"):
        path = args.sqlite_file or work / "bench.db"
        results["sqlite"] = run_database("sqlite", f"sqlite:///{path.resolve()}", args, work)
    if args.db in ("postgresql", "both"):
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest_service import PgServer, _pg_bin

        bindir = _pg_bin()
        if bindir is None:
            results["postgresql"] = "skipped: no PostgreSQL server binaries under /usr/lib/postgresql"
        else:
            server = PgServer(bindir)
            try:
                pid = int((server.data / "postmaster.pid").read_text().split()[0])
                results["postgresql"] = run_database("postgresql", server.create_db(), args, work, pid)
            finally:
                server.close()
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
