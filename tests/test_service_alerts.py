"""Alerts: rules fire and resolve with hysteresis, respect cooldown and active hours, reach the dashboard
stream, the log and a real webhook receiver on 127.0.0.1 (HMAC-SHA256 signed, retried, every attempt
recorded); acknowledge works."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("edgefirst.tracker", reason="tracking needs the video extra")

from conftest_service import person, running_service, status, wait_until

from maskwatch.service.alerts import in_active_hours

API = "/api/v1"


class Receiver:
    """A webhook endpoint on 127.0.0.1 that fails the first ``fail_first`` requests with HTTP 500."""

    def __init__(self, fail_first: int = 0):
        self.requests: list[tuple[dict, bytes]] = []
        self.fail_left = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                code = 500 if outer.fail_left > 0 else 200
                outer.fail_left -= 1
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def feed(service, *events):
    """Events through the pipeline, then stored: the rules read the database."""
    for event in events:
        service.pipeline.handle_event(event)
    assert service.ingestor.flush(10)


def now_person(camera: str, **kw):
    return person(camera, at=datetime.now(UTC), **kw)


@pytest.fixture
def receiver():
    r = Receiver(fail_first=1)
    yield r
    r.close()


def test_active_hours():
    at = lambda h, m=0: datetime(2026, 3, 2, h, m)
    assert in_active_hours(None, at(3))
    assert in_active_hours("08:00-18:00", at(8)) and not in_active_hours("08:00-18:00", at(18))
    assert in_active_hours("22:00-06:00", at(23, 30)) and in_active_hours("22:00-06:00", at(5))
    assert not in_active_hours("22:00-06:00", at(12))


def test_webhook_retries_wait_doubling_with_jitter():
    """One backoff for every retry (maskwatch.core.backoff): 1, 2, 4 s between four attempts, each within
    the 10 % jitter, so the deliveries of many alerts that failed together do not retry in lockstep."""
    from maskwatch.service.alerts import WebhookSender

    sender = WebhookSender(None, timeout=1.0, attempts=4, backoff=1.0)
    try:
        schedule = sender.schedule()
        waits = [schedule.next() for _ in range(3)]  # between attempts 1-2, 2-3, 3-4
        assert [round(w) for w in waits] == [1, 2, 4] and all(0.89 < w / round(w) < 1.11 for w in waits)
        assert len({sender.schedule().next() for _ in range(20)}) > 1  # jittered
    finally:
        sender.close()


def test_compliance_rule_fires_resolves_with_hysteresis_cooldown_webhook_and_ack(tmp_path, receiver, caplog):
    with running_service(tmp_path, alerts={"evaluate_every": 3600, "webhook_backoff": 0.05},
                         security={"webhooks": {"hosts": ["127.0.0.1"]}}) as (client, service):  # fmt: skip
        rule = {"name": "low compliance", "kind": "compliance_below", "camera": "door", "threshold": 0.8,
                "min_people": 3, "window_s": 600, "hysteresis": 0.05, "cooldown_s": 3600,
                "webhook_url": receiver.url, "webhook_secret": "s3cret"}  # fmt: skip
        assert client.post(f"{API}/alert-rules", json=rule).json()["error"] == "unknown_camera"  # no such camera
        camera = {"name": "door", "url": "rtsp://fake/door", "enabled": False}  # its events are sent by hand
        assert client.post(f"{API}/cameras", json=camera).status_code == 201
        r = client.post(f"{API}/alert-rules", json=rule)
        assert r.status_code == 201, r.text
        assert "webhook_secret" not in r.json() and r.json()["has_webhook_secret"]
        alerts = service.alerts
        feed(service, now_person("door", compliant=False), now_person("door", compliant=False, track_id=2))
        alerts.evaluate()
        assert client.get(f"{API}/alerts").json()["items"] == []  # two people: below min_people, no alert
        feed(service, now_person("door", compliant=True, track_id=3))
        alerts.evaluate()
        firing = client.get(f"{API}/alerts?state=firing").json()["items"]
        assert len(firing) == 1 and firing[0]["camera"] == "door" and firing[0]["value"] == pytest.approx(1 / 3)
        assert "ALERT low compliance on door" in caplog.text
        # back to 80 %: still firing (hysteresis needs 85 %)
        feed(service, *(now_person("door", compliant=True, track_id=10 + i) for i in range(7)))
        alerts.evaluate()
        assert len(client.get(f"{API}/alerts?state=firing").json()["items"]) == 1
        feed(service, *(now_person("door", compliant=True, track_id=20 + i) for i in range(4)))
        alerts.evaluate()  # 12/14 = 86 %
        assert client.get(f"{API}/alerts?state=firing").json()["items"] == []
        alert_id = firing[0]["id"]
        assert client.get(f"{API}/alerts/{alert_id}").status_code in (404, 405)
        # bad again at once: cooldown holds it back
        feed(service, *(now_person("door", compliant=False, track_id=40 + i) for i in range(10)))
        alerts.evaluate()
        assert client.get(f"{API}/alerts?state=firing").json()["items"] == []
        # webhooks: firing then resolved; the first attempt got HTTP 500 and was retried
        assert wait_until(lambda: len(receiver.requests) >= 3, 10)
        transitions = []
        for headers, body in receiver.requests:
            stamp = headers["x-maskwatch-timestamp"]  # signed with the body: a replay is stale after 5 minutes
            assert abs(int(stamp) - time.time()) < 60
            expected = "sha256=" + hmac.new(b"s3cret", stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers["x-maskwatch-signature"], expected)
            transitions.append(json.loads(body)["transition"])
        assert transitions[:3] == ["firing", "firing", "resolved"]
        deliveries = wait_until(lambda: len(client.get(f"{API}/alerts/{alert_id}/deliveries").json()) >= 3 and
                                client.get(f"{API}/alerts/{alert_id}/deliveries").json(), 5)  # fmt: skip
        assert [(d["attempt"], d["ok"], d["status_code"]) for d in deliveries[:2]] == [(1, False, 500), (2, True, 200)]
        # acknowledge
        ack = client.post(f"{API}/alerts/{alert_id}/ack")
        assert ack.status_code == 200 and ack.json()["acknowledged_by"] == "admin"
        assert client.get(f"{API}/alerts?acknowledged=true").json()["items"][0]["id"] == alert_id


def _unmasked_rule_on_a_hand_fed_camera(client, service) -> list[float]:
    """Camera "gate" (disabled: its events are sent by hand) with a 30 s unmasked_person rule, no cooldown; the
    alert engine's clock is the returned one-item list (move it by hand)."""
    rule = {"name": "unmasked", "kind": "unmasked_person", "camera": "gate", "window_s": 30, "cooldown_s": 0}
    camera = {"name": "gate", "url": "rtsp://fake/gate", "enabled": False}
    assert client.post(f"{API}/cameras", json=camera).status_code == 201
    assert client.post(f"{API}/alert-rules", json=rule).status_code == 201
    clock = [time.time()]
    service.alerts.clock = lambda: clock[0]
    return clock


def test_a_late_unmasked_event_is_not_a_new_alert_a_new_person_is(tmp_path):
    """Issue 18: an unmasked person whose event arrives after the alert that covered them resolved (a node's
    backlog after a broker outage, a spool replayed after a restart) does not fire the rule again; a person
    seen after that alert does."""
    from datetime import timedelta

    with running_service(tmp_path, alerts={"evaluate_every": 3600}) as (client, service):
        clock = _unmasked_rule_on_a_hand_fed_camera(client, service)
        start = datetime.fromtimestamp(clock[0], UTC)
        feed(service, person("gate", compliant=False, track_id=1, at=start))
        service.alerts.evaluate()
        alerts = lambda: client.get(f"{API}/alerts?camera=gate").json()["items"]
        assert [a["state"] for a in alerts()] == ["firing"]
        clock[0] += 40  # nobody unmasked in the last 30 s (and the 5 s events take to arrive): resolved
        service.alerts.evaluate()
        assert [a["state"] for a in alerts()] == ["resolved"]
        late = person("gate", compliant=False, track_id=2, at=start + timedelta(seconds=4))  # seen while it fired
        feed(service, late)
        service.alerts.evaluate()
        assert [a["state"] for a in alerts()] == ["resolved"]  # covered by the alert that was firing then
        feed(service, person("gate", compliant=False, track_id=3, at=start + timedelta(seconds=41)))
        service.alerts.evaluate()
        assert sorted(a["state"] for a in alerts()) == ["firing", "resolved"]  # a new person: a new alert


def test_an_unmasked_alert_waits_for_the_events_of_people_who_just_left(tmp_path):
    """Issue 18 (the chaos soak): a person's event is stored a few seconds after they leave, so an alert
    resolved the moment its window looks empty fires again for someone who left just before. The rule reads
    its window plus ``UNMASKED_SETTLE_S``: the person's event arriving 2 s late keeps the one alert firing."""
    from datetime import timedelta

    from maskwatch.service.alerts import UNMASKED_SETTLE_S

    with running_service(tmp_path, alerts={"evaluate_every": 3600}) as (client, service):
        clock = _unmasked_rule_on_a_hand_fed_camera(client, service)
        start = datetime.fromtimestamp(clock[0], UTC)
        alerts = lambda: client.get(f"{API}/alerts?camera=gate").json()["items"]
        feed(service, person("gate", compliant=False, track_id=1, at=start))
        service.alerts.evaluate()
        clock[0] += 30.5  # the first person's 30 s are over; a second one left 0.5 s ago, their event on its way
        service.alerts.evaluate()
        assert [a["state"] for a in alerts()] == ["firing"]
        clock[0] += 2
        feed(service, person("gate", compliant=False, track_id=2, at=start + timedelta(seconds=30)))
        service.alerts.evaluate()
        assert [a["state"] for a in alerts()] == ["firing"]
        clock[0] = start.timestamp() + 30 + 30 + UNMASKED_SETTLE_S + 0.5  # the second person's window is over
        service.alerts.evaluate()
        assert [a["state"] for a in alerts()] == ["resolved"]  # one alert for both, resolved once


def test_offline_and_unmasked_rules_and_rules_outside_active_hours(tmp_path):
    with running_service(tmp_path, alerts={"evaluate_every": 3600}) as (client, service):
        now = datetime.now(UTC)  # active hours are in the site's time zone (UTC by default)
        closed = f"{(now.hour + 2) % 24:02d}:00-{(now.hour + 3) % 24:02d}:00"
        camera = {"name": "gate", "url": "rtsp://fake/gate", "enabled": False}  # its events are sent by hand
        assert client.post(f"{API}/cameras", json=camera).status_code == 201
        for body in ({"name": "offline", "kind": "camera_offline", "for_s": 0, "cooldown_s": 0},
                     {"name": "unmasked", "kind": "unmasked_person", "camera": "gate", "window_s": 60},
                     {"name": "night only", "kind": "camera_offline", "for_s": 0, "active_hours": closed}):  # fmt: skip
            assert client.post(f"{API}/alert-rules", json=body).status_code == 201
        assert client.post(f"{API}/alert-rules", json={"name": "x", "kind": "unmasked_person"}).status_code == 422
        # "yard" is no camera of this server (a disabled camera's state is not watched: it is off on purpose)
        feed(service, status("yard", "lost", "no frame for 10 s"), now_person("gate", compliant=False))
        service.alerts.evaluate()
        firing = {a["rule"] for a in client.get(f"{API}/alerts?state=firing").json()["items"]}
        assert firing == {"offline", "unmasked"}  # "night only" is outside its hours; "camera offline": 60 s
        feed(service, status("yard", "live"))
        service.alerts.evaluate()
        firing = {a["rule"] for a in client.get(f"{API}/alerts?state=firing").json()["items"]}
        assert firing == {"unmasked"}
        rule_id = next(r["id"] for r in client.get(f"{API}/alert-rules").json() if r["name"] == "unmasked")
        assert client.patch(f"{API}/alert-rules/{rule_id}", json={"enabled": False}).status_code == 200
        assert client.get(f"{API}/alerts?state=firing").json()["items"] == []  # a disabled rule's alert resolves
        assert client.delete(f"{API}/alert-rules/{rule_id}").status_code == 204


def test_node_offline_rule_built_in_with_hysteresis(tmp_path):
    from maskwatch.service.alerts import NODE_OFFLINE_RULE

    with running_service(tmp_path, alerts={"evaluate_every": 3600}) as (client, service):
        alerts = service.alerts
        assert alerts.ensure_rule(NODE_OFFLINE_RULE) and not alerts.ensure_rule(NODE_OFFLINE_RULE)
        rules = [r for r in client.get(f"{API}/alert-rules").json() if r["kind"] == "node_offline"]
        assert [(r["name"], r["for_s"], r["enabled"]) for r in rules] == [("node offline", 30.0, True)]
        t0 = alerts.clock()
        alerts.observe_node("n1", "online")
        alerts.observe_node("n1", "offline", "connection lost (last will)")
        alerts.evaluate(now=t0 + 10)
        assert client.get(f"{API}/alerts").json()["items"] == []  # not for 30 s yet
        alerts.observe_node("n1", "offline", "connection lost (last will)")  # a repeat keeps its start
        alerts.evaluate(now=t0 + 31)
        firing = client.get(f"{API}/alerts?state=firing").json()["items"]
        assert [(a["kind"], a["camera"]) for a in firing] == [("node_offline", "n1")]
        assert "node n1 offline for 31 s: connection lost" in firing[0]["message"]
        alerts.observe_node("n1", "online")
        alerts.evaluate(now=t0 + 32)
        assert client.get(f"{API}/alerts?state=firing").json()["items"] == []
        # disabled, the built-in rule stays disabled (not created again)
        assert client.patch(f"{API}/alert-rules/{rules[0]['id']}", json={"enabled": False}).status_code == 200
        assert not alerts.ensure_rule(NODE_OFFLINE_RULE)


def test_two_workers_alert_engines_one_evaluates_every_one_follows(tmp_path, caplog):
    """Two workers' alert engines on one database: only the elected one evaluates (one alert row, one log
    line each way), every one pushes the stored changes to its own dashboards once; when the elected one
    goes, the other resolves the alert it fired; a cooldown counts the other worker's alert."""
    from maskwatch.service.alerts import AlertEngine

    with running_service(tmp_path, alerts={"evaluate_every": 3600}) as (client, service):
        rule = {"name": "nodes", "kind": "node_offline", "for_s": 0, "cooldown_s": 600}
        assert client.post(f"{API}/alert-rules", json=rule).status_code == 201
        pushed: dict[str, list[str]] = {"a": [], "b": []}
        elected = {"a": True, "b": False}

        def worker(name: str) -> AlertEngine:
            push = lambda _kind, p: pushed[name].append(p["transition"])
            engine = AlertEngine(service.storage.alerts, publish=push, sender=None, leader=lambda: elected[name])
            engine.reload()
            return engine

        a, b = worker("a"), worker("b")
        for engine in (a, b):
            engine.observe_node("n1", "offline")
        for engine in (a, b, a, b):
            engine.evaluate()
        firing = client.get(f"{API}/alerts?state=firing").json()["items"]
        assert len(firing) == 1 and pushed == {"a": ["firing"], "b": ["firing"]}
        assert caplog.text.count("ALERT nodes on n1") == 1 and a.firing == b.firing == 1
        elected.update(a=False, b=True)  # a's lease went to b (a died)
        b.observe_node("n1", "online")
        b.evaluate()
        a.evaluate()
        assert client.get(f"{API}/alerts?state=firing").json()["items"] == []
        assert pushed == {"a": ["firing", "resolved"], "b": ["firing", "resolved"]}
        assert caplog.text.count("RESOLVED nodes on n1") == 1
        b.observe_node("n1", "offline")  # down again at once: the cooldown holds it back
        b.evaluate()
        assert len(client.get(f"{API}/alerts").json()["items"]) == 1
