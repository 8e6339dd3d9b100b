"""One site time zone (``site.timezone``): "today", daily points and alert active hours follow it, never the
server's zone (here America/New_York, while the site is in Asia/Kolkata, UTC+05:30); naive times from a
producer are UTC."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")

from conftest_service import bucket, person, running_service

API = "/api/v1"
SITE = "Asia/Kolkata"


@pytest.fixture
def server_in_new_york(monkeypatch):
    """The server's own zone is New York (what ``time.localtime`` and naive ``timestamp()`` use)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_naive_times_from_a_node_are_utc_not_the_servers_zone(tmp_path, server_in_new_york):
    with running_service(tmp_path) as (client, service):
        event = person("n1:door").to_dict()
        event["last_seen"] = "2026-03-02T09:00:00"  # no zone: an older agent
        event["first_seen"] = "2026-03-02T08:59:57"
        assert service.pipeline.handle_event(event)
        assert service.ingestor.flush(10)
        stored = client.get(f"{API}/events?camera=n1:door").json()["items"]
        assert len(stored) == 1 and stored[0]["time"] == "2026-03-02T09:00:00Z"


def test_today_daily_points_and_active_hours_follow_the_site_zone(tmp_path, server_in_new_york):
    zone = ZoneInfo(SITE)
    now = time.time()
    midnight = int(datetime.fromtimestamp(now, zone).replace(hour=0, minute=0, second=0, microsecond=0).timestamp())
    late = bucket("door", start=datetime.fromtimestamp(midnight - 600, UTC), masked=5, unmasked=0)  # yesterday
    early = bucket("door", start=datetime.fromtimestamp(midnight + 1, UTC), interval=0.5, masked=2, unmasked=1)
    local = datetime.now(zone)
    open_now = f"{(local - timedelta(hours=1)).hour:02d}:00-{(local + timedelta(hours=2)).hour:02d}:00"
    closed_now = f"{(local + timedelta(hours=3)).hour:02d}:00-{(local + timedelta(hours=4)).hour:02d}:00"
    rule = {"kind": "node_offline", "for_s": 0, "cooldown_s": 0}
    rules = [{**rule, "name": "open", "active_hours": open_now}, {**rule, "name": "closed", "active_hours": closed_now}]
    sections = {"site": {"timezone": SITE}, "alerts": {"evaluate_every": 3600, "rules": rules}}
    with running_service(tmp_path, **sections) as (client, service):
        camera = {"name": "door", "url": "rtsp://fake/door", "enabled": False}  # the overview sums the cameras
        assert client.post(f"{API}/cameras", json=camera).status_code == 201
        site = client.get(f"{API}/site").json()
        assert site["timezone"] == SITE and site["utc_offset_s"] == 19800 and site["day_start"] == midnight
        for event in (late, early):
            service.pipeline.handle_event(event)
        assert service.ingestor.flush(10)

        overview = client.get(f"{API}/overview").json()
        assert overview["timezone"] == SITE
        assert overview["people_today"] == 3 and overview["compliance_today"] == pytest.approx(2 / 3, abs=1e-4)

        q = {"camera": "door", "bucket": "1d", "from": datetime.fromtimestamp(midnight - 3 * 86400, UTC).isoformat(),
             "to": datetime.fromtimestamp(now + 60, UTC).isoformat()}  # fmt: skip
        days = client.get(f"{API}/stats/compliance", params=q).json()["cameras"][0]["points"]
        assert [(p["t"], p["n_people"]) for p in days] == [(midnight - 86400, 5), (midnight, 3)]
        assert days[1]["start"] == datetime.fromtimestamp(midnight, UTC).isoformat().replace("+00:00", "Z")

        service.alerts.observe_node("n1", "offline")
        service.alerts.evaluate()
        firing = {a["rule"] for a in client.get(f"{API}/alerts?state=firing").json()["items"]}
        assert firing == {"open"}  # its hours hold now at the site (not in New York, 10.5 h behind)
