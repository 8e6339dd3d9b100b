"""``server.journal``: the service's own cameras' events, as the engine reported them, in
``DATA_DIR/journal.jsonl`` (the chaos soak's ground truth for the control room's cameras); off by default."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")

from conftest_service import running_service, wait_until
from sqlalchemy import select

from maskwatch.service.storage.models import PersonEvent

API = "/api/v1"


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_journal_keeps_every_person_the_engine_reported(tmp_path):
    journal = tmp_path / "data" / "journal.jsonl"
    with running_service(tmp_path, server={"journal": True}) as (client, service):
        assert client.post(f"{API}/cameras", json={"name": "door", "url": "rtsp://fake/door"}).status_code == 201

        def stored():
            with service.storage.sessions() as s:
                return set(s.scalars(select(PersonEvent.event_id)))

        assert wait_until(lambda: len(stored()) >= 2, 30)
        assert client.delete(f"{API}/cameras/door").status_code == 204
        assert service.ingestor.flush(10)
        people = stored()
    events = _lines(journal)
    assert {e["type"] for e in events} <= {"track_ended", "stats", "source_status"}
    reported = {e["id"] for e in events if e["type"] == "track_ended"}
    assert reported == people  # every stored person was journaled, and nothing else was
    assert all(e["source"] == "door" and e["schema"] == "maskwatch.event/1" for e in events)
    assert any(e["type"] == "source_status" and e["state"] == "live" for e in events)


def test_journal_is_off_by_default(tmp_path):
    with running_service(tmp_path) as (client, service):
        assert client.post(f"{API}/cameras", json={"name": "door", "url": "rtsp://fake/door"}).status_code == 201
        assert wait_until(lambda: service.engine.source_states().get("door") == "live", 20)
    assert not list((tmp_path / "data").rglob("journal*.jsonl"))
