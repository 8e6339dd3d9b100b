"""PostgreSQL goes away while cameras run and comes back: every person event the engine produced is
stored exactly once, and every stats bucket is merged exactly once (slow: a real, throwaway server)."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")

import conftest_service
from conftest_service import running_service, wait_until
from sqlalchemy import func, select

from maskwatch.service.storage.models import PersonEvent, StatsBucket

pg_server = conftest_service.pg_server  # the fixture (session-scoped: one throwaway server)

API = "/api/v1"


@pytest.mark.slow
def test_postgresql_outage_while_cameras_run_loses_nothing_and_duplicates_nothing(pg_server, tmp_path):
    url = pg_server.create_db()
    with running_service(tmp_path, db=url, limits={"ingest_buffer": 100_000}) as (client, service):
        produced: dict[str, list] = {"track_ended": [], "stats": []}
        lock = threading.Lock()

        def keep(event):
            if event.type in produced:
                with lock:
                    produced[event.type].append(event)

        subscription = service.engine.subscribe(keep)
        for name in ("door", "hall"):
            assert client.post(f"{API}/cameras", json={"name": name, "url": f"rtsp://fake/{name}"}).status_code == 201

        def stored_people():
            with service.storage.sessions() as s:
                return s.scalar(select(func.count()).select_from(PersonEvent))

        assert wait_until(lambda: stored_people() >= 1, 20)
        pg_server.stop()  # the database goes away while both cameras run
        try:
            with lock:
                before = len(produced["track_ended"])
            assert wait_until(lambda: not service.ingestor.healthy and service.ingestor.backlog > 0, 20)
            assert wait_until(lambda: len(produced["track_ended"]) >= before + 2, 20)  # people keep coming
            assert client.get(f"{API}/readyz").status_code == 503
            assert service.engine.source_states().get("door") == "live"  # the cameras are not disturbed
        finally:
            pg_server.start()
        assert wait_until(lambda: service.ingestor.healthy and service.ingestor.backlog == 0, 30)
        for name in ("door", "hall"):  # end the open tracks and flush the last buckets
            assert client.delete(f"{API}/cameras/{name}").status_code == 204
        time.sleep(0.5)
        assert service.ingestor.flush(30)
        subscription.close()

        with lock:
            people = {e.id for e in produced["track_ended"]}
            buckets = list(produced["stats"])
        assert len(people) == len(produced["track_ended"]) >= 3
        with service.storage.sessions() as s:
            stored = list(s.scalars(select(PersonEvent.event_id)))
            bucket_people = s.scalar(select(func.coalesce(func.sum(StatsBucket.n_people), 0)))
        assert len(stored) == len(set(stored))  # no duplicates
        assert set(stored) == people  # nothing lost
        assert bucket_people == sum(b.n_people for b in buckets)  # each bucket merged once
