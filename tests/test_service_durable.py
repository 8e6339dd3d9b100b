"""The control room's own cameras lose nothing: their events are on disk (the spool, the fleet outbox's
mechanism) before anything else, so a worker SIGKILLed during a database outage stores, once restarted,
every event its engine counted, exactly once; an event the full ingest buffer refuses waits on disk."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")

import conftest_service
from conftest_service import person, wait_until
from workers_proc import Worker, now, sqlite_locked, stored_person_ids, stored_stats_ids, wait_for

from maskwatch.service.storage.db import migrate, open_db, session_factory
from maskwatch.service.storage.ingest import Ingestor

pg_server = conftest_service.pg_server


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
    config.write_text("engine:\n  stats_interval: 1\n  journal: true\n"
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
