"""The control room's own cameras lose nothing: their events are on disk (the spool, the fleet outbox's
mechanism) before anything else, so a worker SIGKILLed during a database outage stores, once restarted,
every event its engine counted, exactly once; an event the full ingest buffer refuses waits on disk."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")

import conftest_service
from conftest_service import person, wait_until
from workers_proc import Worker, now, sqlite_locked, stored_person_ids, stored_stats_ids, wait_for

from maskwatch.service.storage.db import migrate, open_db, session_factory
from maskwatch.service.storage.ingest import Ingestor

db_url, pg_server = conftest_service.db_url, conftest_service.pg_server


def test_spool_holds_what_the_buffer_refuses_and_stores_each_event_once(tmp_path):
    """A full ingest buffer refuses events: they wait in the spool and are stored when there is room; a
    spool opened again (a restart) stores what was left, once."""
    from sqlalchemy import func, select

    from maskwatch.service.spool import Spool
    from maskwatch.service.storage.models import PersonEvent

    engine = open_db(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    sessions = session_factory(engine)
    spool: Spool | None = None
    ingestor = Ingestor(sessions, capacity=100, on_done=lambda events: spool.done(events) if spool else None)
    spool = Spool(tmp_path / "spool.db", ingestor, budget_bytes=64 * 2**20)
    events = [person("door", at=datetime.now(UTC), track_id=i) for i in range(250)]
    assert all(spool.store(e) for e in events)  # 100 in the buffer, 150 refused: all on disk
    assert ingestor.received == 100 and spool.backlog == 250
    spool.outbox.close()  # a crash: the buffer is gone, the spool is on disk
    ingestor = Ingestor(sessions, capacity=100, on_done=lambda events: spool.done(events) if spool else None)
    spool = Spool(tmp_path / "spool.db", ingestor, budget_bytes=64 * 2**20)
    assert spool.backlog == 250
    ingestor.start()
    spool.start()
    try:
        assert wait_until(lambda: spool.backlog == 0, 30), spool.backlog
        with sessions() as s:
            assert s.scalar(select(func.count()).select_from(PersonEvent)) == 250
            assert set(s.scalars(select(PersonEvent.event_id))) == {e.id for e in events}
    finally:
        spool.stop()
        ingestor.stop()
        engine.dispose()


@contextlib.contextmanager
def _outage(kind: str, db_file, pg):
    if kind == "sqlite":
        with sqlite_locked(db_file):
            yield
    else:
        pg.stop()
        try:
            yield
        finally:
            pg.start()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_worker_sigkilled_during_a_database_outage_loses_nothing(kind, tmp_path, request):
    """A worker counts people while its database is away (PostgreSQL stopped; SQLite locked by another
    writer), is SIGKILLed, the database comes back, the worker restarts: every person its engine counted
    (its journal) is stored exactly once, those of the outage included, and every stats bucket once."""
    db_file = tmp_path / "shared.db"
    pg = request.getfixturevalue("pg_server") if kind == "postgresql" else None
    url = pg.create_db() if pg is not None else f"sqlite:///{db_file}"
    config = tmp_path / "serve.yaml"
    config.write_text("server:\n  journal: true\nengine:\n  stats_interval: 1\n"
                      "cameras:\n  - name: door\n    url: rtsp://fake/door\n")  # fmt: skip
    worker = Worker(tmp_path, "w1", url, config)
    worker.start()
    try:
        wait_for(lambda: len(stored_person_ids(url)) >= 2, 40, "people stored before the outage")
        with _outage(kind, db_file, pg):
            down = now()
            people_during = lambda: [e for e in worker.journal() if e["type"] == "track_ended"
                                     and datetime.fromisoformat(e["time"]).timestamp() > down + 1]  # fmt: skip
            wait_for(lambda: len(people_during()) >= 3, 40, "people counted during the outage")
            worker.kill()  # a crash while the database is away
        worker.start()
        counted = [e for e in worker.journal() if e["type"] == "track_ended"]
        wait_for(lambda: {e["id"] for e in counted} <= set(stored_person_ids(url)), 60, "the spool stored")
    finally:
        assert worker.stop() == 0
    stored = stored_person_ids(url)
    journal = worker.journal()
    people = [e["id"] for e in journal if e["type"] == "track_ended"]
    assert len(stored) == len(set(stored)), "a person stored twice"
    assert set(stored) == set(people) and len(people) == len(set(people)), "stored != counted"
    assert any(datetime.fromisoformat(e["time"]).timestamp() > down + 1 for e in journal if e["type"] == "track_ended")
    buckets = {e["id"] for e in journal if e["type"] == "stats"}
    assert buckets <= set(stored_stats_ids(url))


# -- no database I/O where the event path or the event loop waits ------------------------------------------------


@contextlib.contextmanager
def _table_locked(url: str, table: str):
    """Another connection holds a lock on ``table`` (PostgreSQL: ACCESS EXCLUSIVE, even reads wait) or on the
    whole SQLite file (every write waits): a database that stalls."""
    if url.startswith("sqlite"):
        with sqlite_locked(url.removeprefix("sqlite:///")):
            yield
        return
    import psycopg

    conninfo = url.replace("postgresql://", "postgresql://", 1)
    with psycopg.connect(conninfo) as conn:
        conn.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
        yield
        conn.rollback()


def test_a_stalled_database_does_not_stall_the_event_path(tmp_path, db_url):
    """The alert engine's writes wait for a locked table; meanwhile every event still goes through the
    pipeline at once (it never waits for a lock the alert engine holds during database I/O)."""
    import threading

    from conftest_service import running_service, status

    rule = {"name": "down", "kind": "camera_offline", "for_s": 0, "cooldown_s": 0}
    with running_service(tmp_path, db=db_url, alerts={"evaluate_every": 3600, "rules": [rule]}) as (_, service):
        service.pipeline.handle_event(status("door", "lost"))
        assert service.ingestor.flush(10)
        times: list[float] = []

        def events() -> None:
            for i in range(5):
                began = time.monotonic()
                service.pipeline.handle_event(person("door", at=datetime.now(UTC), track_id=i))
                times.append(time.monotonic() - began)

        with _table_locked(db_url, "alerts"):
            evaluation = threading.Thread(target=service.alerts.evaluate, daemon=True)
            evaluation.start()
            time.sleep(0.5)  # the evaluation waits for the database now
            flow = threading.Thread(target=events, daemon=True)
            flow.start()
            flow.join(3.0)  # (the lock is released after this, whatever happened: no deadlock)
            waited = evaluation.is_alive()
        evaluation.join(40)
        flow.join(40)
        assert waited, "the evaluation did not wait for the locked table"
        assert len(times) == 5 and max(times) < 0.5, f"events waited behind the alert engine: {times}"


@contextlib.contextmanager
def _uvicorn(app):
    import threading

    import uvicorn
    from workers_proc import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_until(lambda: server.started, 30)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def test_the_event_loop_never_waits_for_the_database(pg_server, tmp_path):
    """Creating a job and opening a camera's live views while their tables are locked: /healthz answers at
    once (their database work runs on worker threads, not on the event loop)."""
    import threading

    import httpx
    from conftest_service import ADMIN, fake_cameras, service_settings
    from fakes import fake_detector, make_video

    from maskwatch.service.app import create_app

    url = pg_server.create_db()
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    make_video(allowed / "clip.mp4", 20, fps=10, people=1)
    settings = service_settings(tmp_path, url, jobs={"allowed_dirs": [str(allowed)]})
    app = create_app(settings, detector=fake_detector(), capture_factory=fake_cameras(), admin_token=ADMIN)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    with _uvicorn(app) as base, httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        assert client.post("/api/v1/cameras", json={"name": "door", "url": "rtsp://fake/door"}).status_code == 201
        assert wait_until(lambda: client.get("/api/v1/cameras/door/latest.jpg").status_code == 200, 20)
        requests = [("jobs", "POST", "/api/v1/jobs", {"path": "clip.mp4"}),
                    ("cameras", "GET", "/api/v1/cameras/door/latest.jpg", None),
                    ("cameras", "GET", "/api/v1/cameras/door/live.mjpeg?frames=1", None)]  # fmt: skip
        for table, method, path, body in requests:
            with _table_locked(url, table):
                blocked = threading.Thread(target=client.request, args=(method, path), kwargs={"json": body})
                blocked.start()
                time.sleep(0.5)  # that request waits for the database now
                began = time.monotonic()
                assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
                waited = time.monotonic() - began
                assert blocked.is_alive(), f"{method} {path} did not wait for the locked {table}"
                assert waited < 1.0, f"/healthz waited {waited:.1f} s behind {method} {path}"
            blocked.join(30)


def test_retention_purges_months_in_batches_without_locking_writers_out(tmp_path):
    """A purge of 400 000 old person events on SQLite: a writer storing events meanwhile never waits longer
    than a few batches (0.3 s; it waited for the whole purge, seconds, when it was one transaction)."""
    import sqlite3
    import threading

    from maskwatch.service.storage import Storage
    from maskwatch.service.storage.retention import Cutoffs

    path = tmp_path / "db.sqlite"
    storage = Storage(f"sqlite:///{path}")
    storage.start()
    rows = [(f"old{i}", "track_ended", "door", 1000.0 + i, "with_mask", 1, 0.9, 5, 0, "{}") for i in range(400_000)]
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO events (event_id, type, camera, ts, label, compliant, probability, n_frames, "
                         "false_positive, data) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)  # fmt: skip
    cut = Cutoffs(events=1e9, media=1e9, buckets=1e9, rollups=1e9, audit=1e9, sessions=1e9)
    done = threading.Event()
    counts: dict[str, int] = {}

    def purge():
        try:
            counts.update(storage.retention.purge(cut, lambda refs: 0))  # retention.batch_rows: 2000 by default
        finally:
            done.set()

    waits: list[float] = []
    ingest = Ingestor(storage.sessions)
    began = time.monotonic()
    threading.Thread(target=purge, daemon=True).start()
    i = 0
    while not done.is_set():
        t = time.monotonic()
        ingest._write([person("door", at=datetime.now(UTC), track_id=i)])  # one transaction, as the writer does
        waits.append(time.monotonic() - t)
        i += 1
        time.sleep(0.01)
    took = time.monotonic() - began
    storage.stop()
    assert counts["events"] == 400_000 and took > 1.0  # long enough for a writer to notice
    assert max(waits) < 0.3, f"a write waited {max(waits):.2f} s (purge {took:.1f} s, {len(waits)} writes)"


def test_fleet_view_answers_from_memory_during_an_outage_and_logs_it_once(pg_server, tmp_path, caplog):
    from conftest_service import running_service

    url = pg_server.create_db()
    with running_service(tmp_path, db=url) as (client, _):
        assert client.get("/api/v1/fleet").status_code == 200
        pg_server.stop()
        try:
            answers = [client.get("/api/v1/fleet") for _ in range(3)]
        finally:
            pg_server.start()
        assert [r.status_code for r in answers] == [200, 200, 200]
        assert all(r.json()["database_ok"] is False for r in answers)
        assert caplog.text.count("fleet view: the database is unreachable") == 1
        assert "Traceback" not in caplog.text


def test_what_is_acknowledged_is_committed_to_disk_even_on_a_server_set_to_commit_asynchronously(pg_server):
    """The throwaway server runs with ``synchronous_commit=off`` (commits answered before they are on disk,
    lost if PostgreSQL crashes right after): the ingest's and the dead letters' transactions, whose commit
    is acknowledged to a node or makes the spool forget an event, still commit synchronously. (The chaos soak
    lost six acknowledged person events that way when PostgreSQL was killed just after their commit.)"""
    from sqlalchemy import event, text

    from maskwatch.service.storage.dead_letters import DeadLetterRepository, Letter

    engine = open_db(pg_server.create_db())
    migrate(engine)
    at_commit: list[str] = []

    @event.listens_for(engine, "commit")
    def _setting(connection):  # before COMMIT is sent: the mode that commit runs in
        at_commit.append(connection.exec_driver_sql("SHOW synchronous_commit").scalar())

    with engine.connect() as connection:
        assert connection.execute(text("SHOW synchronous_commit")).scalar() == "off"  # the server's setting
    ingestor = Ingestor(session_factory(engine))
    ingestor.start()
    try:
        assert ingestor.ingest(person())
        assert ingestor.flush(10)
    finally:
        ingestor.stop()
    assert ingestor.written == 1
    assert at_commit and set(at_commit) == {"on"}, at_commit
    at_commit.clear()
    DeadLetterRepository(session_factory(engine)).record(Letter("json", b"{", "x", topic="maskwatch/n/c/events"), 1.0)
    assert at_commit == ["on"]
    engine.dispose()
