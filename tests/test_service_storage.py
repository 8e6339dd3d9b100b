"""Storage on SQLite and on a real PostgreSQL: migrations agree with the models, ingest is idempotent
(unique event ids), stats buckets merge per (camera, start) with hourly and daily rollups, and a database
outage while events arrive loses nothing and duplicates nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest

pytest.importorskip("sqlalchemy", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("alembic", reason="the serve extra is not installed")

import conftest_service
from conftest_service import T0, bucket, person, wait_until
from sqlalchemy import func, select

from maskwatch.service.storage.db import current_revision, migrate, open_db, session_factory
from maskwatch.service.storage.ingest import Ingestor
from maskwatch.service.storage.models import Base, Ingested, PersonEvent, StatsBucket, StatsRollup

db_url, pg_server = conftest_service.db_url, conftest_service.pg_server  # the fixtures


def _open(url):
    engine = open_db(url)
    migrate(engine)
    return engine, session_factory(engine)


def _count(sessions, model) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_migrations_match_models_and_rerun_is_a_noop(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from maskwatch.service.storage.db import alembic_config

    engine, _ = _open(db_url)
    assert current_revision(engine) == ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    migrate(engine)  # a second start: nothing to do
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    if db_url.startswith("sqlite"):
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def test_ingest_is_idempotent_and_buckets_merge_with_rollups(db_url):
    engine, sessions = _open(db_url)
    ingest = Ingestor(sessions)
    ingest.start()
    p1, p2 = person(compliant=True), person(compliant=False, track_id=2)
    b1 = bucket(start=T0, masked=3, unmasked=1)
    b2 = bucket(start=T0 + timedelta(minutes=1), masked=2, unmasked=2)
    restart = bucket(start=T0 + timedelta(minutes=1), masked=1, unmasked=0, final=True)  # same interval again
    for event in (p1, p2, p1, b1, b2, b1, restart, restart):  # p1, b1 and restart re-sent
        assert ingest.ingest(event)
    assert not ingest.ingest({"schema": "maskwatch.event/1", "type": "nonsense"})  # rejected, counted
    assert ingest.rejected == 1
    assert ingest.flush(10)
    assert _count(sessions, PersonEvent) == 2
    assert _count(sessions, Ingested) == 3
    with sessions() as s:
        rows = s.scalars(select(StatsBucket).order_by(StatsBucket.start_ts)).all()
        assert [(r.n_people, r.compliant_people) for r in rows] == [(4, 3), (5, 3)]
        assert rows[1].people == {"with_mask": 3, "without_mask": 2}
        assert rows[1].frames_analysed == 200
        hourly = s.scalars(select(StatsRollup).where(StatsRollup.grain == 3600)).all()
        daily = s.scalars(select(StatsRollup).where(StatsRollup.grain == 86400)).all()
        assert [(r.n_people, r.compliant_people) for r in hourly] == [(9, 6)]
        assert [(r.n_people, r.compliant_people) for r in daily] == [(9, 6)]
        assert hourly[0].start_ts == int(T0.timestamp())
    ingest.stop()
    engine.dispose()


def test_ingest_accepts_json_and_dicts_from_other_producers(db_url):
    engine, sessions = _open(db_url)
    ingest = Ingestor(sessions)
    ingest.start()
    p = person()
    assert ingest.ingest(p.to_json())
    assert ingest.ingest(p.to_dict())  # the same event from a second path: stored once
    assert ingest.flush(10)
    assert _count(sessions, PersonEvent) == 1
    with sessions() as s:
        row = s.scalars(select(PersonEvent)).one()
        assert row.event_id == p.id and row.data["type"] == "track_ended" and row.camera == "door"
    ingest.stop()
    engine.dispose()


def test_postgresql_outage_buffers_then_writes_everything_once(pg_server):
    url = pg_server.create_db()
    engine, sessions = _open(url)
    ingest = Ingestor(sessions, backoff=0.1, max_backoff=0.5)
    ingest.start()
    sent = [person(track_id=i) for i in range(5)]
    for e in sent:
        ingest.ingest(e)
    assert ingest.flush(10)
    pg_server.stop()
    try:
        during = [person(track_id=100 + i) for i in range(20)] + [
            bucket(start=T0 + timedelta(minutes=i)) for i in range(3)
        ]
        for e in during:
            ingest.ingest(e)
        assert wait_until(lambda: not ingest.healthy, 10)
        assert ingest.backlog == len(during)
    finally:
        pg_server.start()
    ingest.ingest(sent[0])  # a duplicate arriving after the outage
    assert ingest.flush(30)
    assert ingest.healthy
    assert _count(sessions, PersonEvent) == 25
    assert _count(sessions, StatsBucket) == 3
    with sessions() as s:
        ids = set(s.scalars(select(PersonEvent.event_id)))
    assert ids == {e.id for e in sent + during if e.type == "track_ended"}
    ingest.stop()
    engine.dispose()
