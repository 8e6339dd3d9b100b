"""Issue 22, the API without rough edges (fake models, real SQLite, a real uvicorn where an address matters):
one error shape (status, code, message) on every route, FastAPI's own validation and JSON decode errors
included; validation the same on every route; limits quoted as configured; ``/metrics`` and ``/readyz`` at
the root (a scrape token or an allow-listed address); a Grafana dashboard whose every query names an
exported metric; people today meaning one thing (the cameras' rows add up to the overview's tile); rules
refused on cameras that do not exist, webhook URLs for admins only, a signed test-fire; the events' CSV export
with the list's filters; job summaries that keep queueing apart and give each image's faces. The remote half
(cameras of edge nodes over a real broker) is ``tests/test_console_fleet.py``; the dashboard,
``tests/test_console_browser.py``."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import socket
import threading
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("edgefirst.tracker", reason="tracking needs the video extra")

from conftest_service import ADMIN, bearer, bucket, person, running_service, wait_until
from fakes import GREEN, RED, make_video, scene
from test_service_alerts import Receiver
from test_service_api import MATRIX, jpeg

API = "/api/v1"
ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "docs" / "grafana" / "maskwatch.json"


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    limits = {"rate_per_minute": 100000, "rate_burst": 10000, "upload_bytes": 20_000, "upload_pixels": 100_000}
    security = {"webhooks": {"hosts": ["127.0.0.1"]}}  # the test's webhook receiver, listed like an admin would
    with running_service(tmp_path_factory.mktemp("console"), limits=limits, security=security) as (client, service):
        tokens = {"admin": ADMIN}
        for role in ("viewer", "operator"):
            tokens[role] = client.post(f"{API}/tokens", json={"name": role, "role": role}).json()["token"]
        yield client, service, tokens


def _error(response, status: int, code: str | None = None) -> str:
    """The answer is the one error shape with this status (and code); returns its message."""
    body = response.json()
    assert response.status_code == status, (response.status_code, body)
    assert set(body) == {"status", "error", "detail"} and body["status"] == status, body
    assert body["detail"] and (code is None or body["error"] == code), body
    return body["detail"]


# -- one error shape, invalid JSON the same everywhere, validation the same on every route ----------------------


def test_invalid_json_is_the_same_400_on_every_route(svc):
    client, _, _ = svc
    broken = {"content": b'{"name": "x",', "headers": {"Content-Type": "application/json"}}
    for method, path in (("POST", "/cameras"), ("POST", "/alert-rules"), ("PATCH", "/alert-rules/1"),
                         ("POST", "/infer"), ("POST", "/jobs"), ("POST", "/tokens")):  # fmt: skip
        detail = _error(client.request(method, API + path, **broken), 400, "invalid_json")
        assert detail.startswith("the body is not valid JSON"), (path, detail)
    login = client.post(f"{API}/auth/login", content=b"{", headers={"Content-Type": "application/json"})
    _error(login, 400, "invalid_json")


def test_every_error_answer_has_status_code_and_message(svc):
    client, _, tokens = svc
    _error(client.get(f"{API}/nothing-here"), 404, "not_found")  # Starlette's own
    _error(client.put(f"{API}/cameras"), 405)
    _error(client.get(f"{API}/events?limit=0"), 422, "invalid")  # FastAPI's validation
    _error(client.post(f"{API}/cameras", json={"name": "../x", "url": "x"}), 422, "invalid")
    _error(client.get(f"{API}/cameras", headers={"Authorization": ""}), 401, "unauthorized")
    _error(client.get(f"{API}/tokens", headers=bearer(tokens["viewer"])), 403, "forbidden")
    _error(client.get(f"{API}/cameras/nope"), 404, "not_found")


def test_validation_is_the_same_on_every_route(svc):
    client, _, _ = svc
    detail = _error(client.get(f"{API}/events?verdict=maybe"), 422, "invalid")
    assert "compliant" in detail and "with_mask" in detail  # says what is accepted
    _error(client.get(f"{API}/events/export.csv?verdict=maybe"), 422, "invalid")
    assert client.get(f"{API}/events?verdict=noncompliant").status_code == 200
    assert client.get(f"{API}/events?verdict=without_mask").status_code == 200
    _error(client.get(f"{API}/events?from=2026-01-02T00:00:00&to=2026-01-01T00:00:00"), 422, "invalid")
    assert client.post(f"{API}/cameras", json={"name": "cam1", "url": "rtsp://fake/cam1"}).status_code == 201
    try:
        for query in ("frames=-1", "frames=0", "fps=0", "fps=99"):
            _error(client.get(f"{API}/cameras/cam1/live.mjpeg?{query}"), 422, "invalid")
    finally:
        client.delete(f"{API}/cameras/cam1")


def test_limits_are_quoted_as_configured(svc):
    client, _, _ = svc
    # a declared oversize body: the configured limits.upload_bytes (20 000), not the envelope enforced
    declared = client.post(
        f"{API}/infer", content=b"\xff\xd8\xff" + b"0" * 40_000, headers={"Content-Type": "image/jpeg"}
    )
    assert "limits.upload_bytes is 20000 bytes" in _error(declared, 413, "too_large")
    big = jpeg(np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8))  # 20 000 < it < envelope
    assert 20_000 < len(big) < 20_000 * 4 // 3 + 65_536  # over the limit, inside the body envelope
    assert "limits.upload_bytes is 20000 bytes" in _error(
        client.post(f"{API}/infer", files={"file": ("a.jpg", big, "image/jpeg")}), 413, "too_large"
    )
    body = client.post(
        f"{API}/cameras", content=b"{" + b" " * 1_100_000 + b"}", headers={"Content-Type": "application/json"}
    )
    assert "limits.body_bytes is 1000000 bytes" in _error(body, 413, "too_large")
    wide = jpeg(np.zeros((400, 400, 3), np.uint8))  # a small file of 160 000 pixels
    detail = _error(client.post(f"{API}/infer", files={"file": ("a.jpg", wide, "image/jpeg")}), 413, "too_large")
    assert "limits.upload_pixels is 100000" in detail and "400x400" in detail and "MASKWATCH_MAX_PIXELS" not in detail


# -- /metrics and /readyz at the root; the Grafana dashboard -----------------------------------------------


@contextlib.contextmanager
def _uvicorn(app):
    """The app served on 127.0.0.1 (a real client address, for the scrape allow-list)."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_until(lambda: server.started, 30)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def test_metrics_and_readyz_at_the_root_with_a_scrape_credential(tmp_path):
    import httpx
    from conftest_service import service_settings
    from fakes import fake_detector

    from maskwatch.service.app import create_app

    with running_service(tmp_path / "token", auth={"scrape_token": "scrape-token-0123456789"}) as (client, _):
        viewer = client.post(f"{API}/tokens", json={"name": "v", "role": "viewer"}).json()["token"]
        _scrapes(client, viewer)
    # an allow-listed address scrapes without a token; another is refused
    for allow, expected in ((["127.0.0.0/8"], 200), (["10.0.0.0/8"], 401)):
        settings = service_settings(tmp_path / str(expected), auth={"scrape_allow": allow})
        with _uvicorn(create_app(settings, detector=fake_detector(), admin_token=ADMIN)) as base:
            assert httpx.get(f"{base}/metrics", timeout=10).status_code == expected


def _scrapes(client, viewer: str) -> None:
    anonymous = {"Authorization": ""}
    _error(client.get("/metrics", headers=anonymous), 401, "unauthorized")
    scraped = client.get("/metrics", headers=bearer("scrape-token-0123456789"))
    assert scraped.status_code == 200 and "maskwatch_http_request_duration_seconds" in scraped.text
    assert scraped.headers["content-type"].startswith("text/plain")
    _error(client.get("/metrics", headers=bearer("scrape-token-wrong-0000000")), 401)
    assert client.get("/metrics", headers=bearer(viewer)).status_code == 200  # an API token works too
    ready = client.get("/readyz", headers=anonymous)  # probes carry no token
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    _error(client.get(f"{API}/readyz", headers=anonymous), 401)  # the API's stay as they were
    assert client.get(f"{API}/readyz").status_code == 200 and client.get(f"{API}/metrics").status_code == 200


def _exported_samples() -> set[str]:
    """Every sample name the service's registry can export (counters' _total, histograms' _bucket, ...)."""
    from maskwatch.service.metrics import Metrics

    names = set()
    for family in Metrics().registry.collect():
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                    "gauge": ("",), "summary": ("", "_sum", "_count", "_created")}[family.type]  # fmt: skip
        names |= {family.name + suffix for suffix in suffixes}
    return names


def test_the_grafana_dashboard_queries_only_exported_metrics():
    assert GRAFANA.is_file(), f"{GRAFANA} is missing"
    dashboard = json.loads(GRAFANA.read_text())
    exported = _exported_samples()
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(queries) >= 8
    used = set()
    for expr in queries:
        names = set(re.findall(r"\bmaskwatch_[a-z_]+\b", expr))
        assert names, f"a query that names no maskwatch metric: {expr}"
        unknown = names - exported
        assert not unknown, f"{expr}: {sorted(unknown)} is not exported (exported: {sorted(exported)})"
        used |= names
    # the dashboard covers the cameras, ingest, HTTP, /infer and alerts
    for family in ("maskwatch_camera_analysed_fps", "maskwatch_ingest_backlog", "maskwatch_alerts_firing",
                   "maskwatch_http_request_duration_seconds_bucket", "maskwatch_people_total"):  # fmt: skip
        assert family in used, family
    variables = [v["name"] for v in dashboard.get("templating", {}).get("list", [])]
    assert "camera" in variables and dashboard["uid"] and dashboard["title"]


def test_exported_names_include_what_a_scrape_shows(svc):
    client, service, _ = svc
    service.pipeline.handle_event(person("lobby"))
    text = client.get(f"{API}/metrics").text
    scraped = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert scraped and scraped <= _exported_samples()  # the test's idea of what is exported is not too narrow


# -- people today: one definition, the rows add up to the tile --------------------------------------------------


def test_people_today_per_camera_adds_up_to_the_overview(svc):
    client, service, _ = svc
    for name in ("lobby-a", "lobby-b"):
        assert (
            client.post(
                f"{API}/cameras", json={"name": name, "url": f"rtsp://fake/{name}", "enabled": False}
            ).status_code
            == 201
        )
    today = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)
    if today.date() != datetime.now(UTC).date():
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    service.pipeline.handle_event(bucket("lobby-a", start=today, masked=3, unmasked=1))
    service.pipeline.handle_event(bucket("lobby-b", start=today, masked=1, unmasked=1))
    service.pipeline.handle_event(bucket("lobby-a", start=yesterday, masked=9, unmasked=9))  # not today
    service.pipeline.handle_event(bucket("gone", start=today, masked=5, unmasked=0))  # no such camera any more
    for i in range(3):  # tracks ended since start: not what people today counts
        service.pipeline.handle_event(person("lobby-a", track_id=100 + i))
    assert service.ingestor.flush(10)
    try:
        cams = {c["name"]: c for c in client.get(f"{API}/cameras").json()}
        assert (cams["lobby-a"]["people_today"], cams["lobby-a"]["compliant_today"]) == (4, 3)
        assert (cams["lobby-b"]["people_today"], cams["lobby-b"]["compliance_today"]) == (2, 0.5)
        assert cams["lobby-a"]["kind"] == "local" and cams["lobby-a"]["node"] is None
        overview = client.get(f"{API}/overview").json()
        assert overview["people_today"] == sum(c["people_today"] for c in cams.values()) == 6
        assert overview["compliance_today"] == round(4 / 6, 4)
        assert overview["day_start"] <= time.time() < overview["day_start"] + 86400
        info = client.get(f"{API}/console").json()
        assert "since 00:00 today in the site's time zone" in info["people_today"]
    finally:
        for name in ("lobby-a", "lobby-b"):
            client.delete(f"{API}/cameras/{name}")


# -- rules: an existing camera, webhook URLs for admins only, a signed test-fire ------------------------------------


def test_rules_need_an_existing_camera_hide_webhook_urls_and_test_fire_signed(svc):
    from maskwatch.service.alerts import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

    client, _, tokens = svc
    receiver = Receiver()
    try:
        rule = {"name": "door low", "kind": "compliance_below", "camera": "door", "threshold": 0.8,
                "webhook_url": receiver.url, "webhook_secret": "hook-secret"}  # fmt: skip
        detail = _error(client.post(f"{API}/alert-rules", json=rule), 422, "unknown_camera")
        assert "'door'" in detail
        _error(
            client.post(f"{API}/alert-rules", json={"name": "n", "kind": "node_offline", "camera": "gate-z"}),
            422,
            "unknown_node",
        )
        assert (
            client.post(
                f"{API}/cameras", json={"name": "door", "url": "rtsp://fake/door", "enabled": False}
            ).status_code
            == 201
        )
        made = client.post(f"{API}/alert-rules", json=rule)
        assert made.status_code == 201, made.text
        rule_id = made.json()["id"]
        _error(client.patch(f"{API}/alert-rules/{rule_id}", json={"camera": "nowhere"}), 422, "unknown_camera")
        # the URL may hold a credential: admins see it, everyone else only that there is one
        for role in ("viewer", "operator"):
            listed = next(
                r for r in client.get(f"{API}/alert-rules", headers=bearer(tokens[role])).json() if r["id"] == rule_id
            )
            assert listed["webhook_url"] is None and listed["has_webhook"] and listed["has_webhook_secret"]
            assert receiver.url not in client.get(f"{API}/alert-rules", headers=bearer(tokens[role])).text
        admin = next(r for r in client.get(f"{API}/alert-rules").json() if r["id"] == rule_id)
        assert admin["webhook_url"] == receiver.url
        _error(client.post(f"{API}/alert-rules/{rule_id}/test", headers=bearer(tokens["operator"])), 403)
        fired = client.post(f"{API}/alert-rules/{rule_id}/test")
        assert fired.status_code == 200, fired.text
        assert fired.json()["ok"] and fired.json()["status_code"] == 200 and fired.json()["signed"]
        headers, body = receiver.requests[-1]
        timestamp = int(headers[TIMESTAMP_HEADER.lower()])
        assert headers[SIGNATURE_HEADER.lower()] == sign("hook-secret", body, timestamp)  # the one signer
        sent = json.loads(body)
        assert headers["x-maskwatch-event"] == "test" and sent["transition"] == "test"
        assert sent["alert"]["rule"] == "door low" and sent["alert"]["camera"] == "door"
        assert "not a real alert" in sent["alert"]["message"]
        assert client.get(f"{API}/alerts").json()["items"] == []  # a test-fire raises no alert
        plain = client.post(f"{API}/alert-rules", json={"name": "plain", "kind": "camera_offline"}).json()
        _error(client.post(f"{API}/alert-rules/{plain['id']}/test"), 422, "no_webhook")
        broken = client.patch(f"{API}/alert-rules/{rule_id}", json={"webhook_url": "http://127.0.0.1:9/nothing"})
        assert broken.status_code == 200
        failed = client.post(f"{API}/alert-rules/{rule_id}/test").json()
        assert not failed["ok"] and failed["status_code"] is None and failed["error"]
        off = client.patch(f"{API}/alert-rules/{rule_id}", json={"enabled": False}).json()
        assert off["enabled"] is False
    finally:
        receiver.close()
        for r in client.get(f"{API}/alert-rules").json():
            client.delete(f"{API}/alert-rules/{r['id']}")
        client.delete(f"{API}/cameras/door")


# -- events: the CSV export of the filtered list ---------------------------------------------------------------


def test_events_csv_export_has_the_filtered_list(svc):
    client, service, _ = svc
    base = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
    for i in range(6):
        service.pipeline.handle_event(
            person("csv-cam", compliant=i % 2 == 0, at=base + timedelta(minutes=i), track_id=i)
        )
    assert service.ingestor.flush(10)
    window = {
        "camera": "csv-cam",
        "from": (base + timedelta(minutes=1)).isoformat(),
        "to": (base + timedelta(minutes=5)).isoformat(),
    }
    page = client.get(f"{API}/events", params={**window, "verdict": "compliant"}).json()["items"]
    exported = client.get(f"{API}/events/export.csv", params={**window, "verdict": "compliant"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [int(r["id"]) for r in rows] == [e["id"] for e in page] and len(rows) == 2  # minutes 2 and 4
    assert all(r["camera"] == "csv-cam" and r["compliant"] == "True" for r in rows)
    everything = list(
        csv.DictReader(io.StringIO(client.get(f"{API}/events/export.csv", params={"camera": "csv-cam"}).text))
    )
    assert len(everything) == 6
    assert (
        len(list(csv.DictReader(io.StringIO(client.get(f"{API}/events/export.csv?camera=csv-cam&limit=4").text)))) == 4
    )


# -- jobs: queued time is not analysis time; image jobs give each image's faces ------------------------------------


def test_job_summaries_keep_queueing_apart_and_give_each_images_faces(tmp_path):
    with running_service(tmp_path, jobs={"max_running": 1}) as (client, _):
        first = make_video(tmp_path / "long.mp4", 120, people=2)
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as z:
            for name, squares in (("one.jpg", [(20, 20, 40, GREEN)]), ("none.jpg", []),
                                  ("two.jpg", [(20, 20, 40, RED), (120, 60, 40, GREEN)])):  # fmt: skip
                z.writestr(f"photos/{name}", jpeg(scene(squares)))
        a = client.post(f"{API}/jobs", files={"file": ("long.mp4", first.read_bytes(), "video/mp4")}).json()["id"]
        b = client.post(f"{API}/jobs", files={"file": ("photos.zip", archive.getvalue(), "application/zip")}).json()[
            "id"
        ]
        done = lambda job: (
            lambda: (info := client.get(f"{API}/jobs/{job}").json())["state"] in ("done", "failed") and info
        )
        assert wait_until(done(a), 60) and (zipped := wait_until(done(b), 60))
        assert zipped["state"] == "done", zipped
        # b waited for a's slot: that wait is queued_s, and neither analysis_s nor the summary's seconds hold it
        assert zipped["queued_s"] > 0.2
        assert zipped["summary"]["seconds"] <= zipped["analysis_s"] + 0.5
        assert zipped["analysis_s"] + zipped["queued_s"] == pytest.approx(
            zipped["finished"] - zipped["created"], abs=0.01
        )
        images = client.get(f"{API}/jobs/{b}/images").json()
        faces = {i["name"]: (i["n_faces"], i["counts"]) for i in images["items"]}
        assert faces == {"one.jpg": (1, {"with_mask": 1, "without_mask": 0}),
                         "two.jpg": (2, {"with_mask": 1, "without_mask": 1}),
                         "none.jpg": (0, {"with_mask": 0, "without_mask": 0})}, faces  # fmt: skip
        assert all("/" not in name for name in faces)  # never the server's path
        assert client.get(f"{API}/jobs/{a}/images").json()["items"] == []  # a video has no images


# -- the dashboard's table of actions and roles agrees with the routes' own checks --------------------------------


def test_console_actions_name_the_roles_the_routes_check(svc):
    from maskwatch.service.routers.console import ACTIONS

    client, _, tokens = svc
    matrix = {(m, p.split("?")[0]): role for m, p, role, _ in MATRIX}
    templates = {"{alert_id}": "999", "{key}": "123"}
    for name, (role, _what, route) in ACTIONS.items():
        method, path = route.split(" ", 1)
        for template, concrete in templates.items():
            path = path.replace(template, concrete)
        assert matrix.get((method, path)) == role, (name, route, matrix.get((method, path)))
    viewer = client.get(f"{API}/console", headers=bearer(tokens["viewer"])).json()
    assert viewer["role"] == "viewer" and not viewer["actions"]["upload"]["allowed"]
    assert viewer["actions"]["upload"]["reason"] == (
        "Analysing an uploaded image needs the operator role; you are signed in as viewer"
    )
    assert viewer["snapshots"] is False
    operator = client.get(f"{API}/console", headers=bearer(tokens["operator"])).json()["actions"]
    assert operator["upload"]["allowed"] and not operator["rules"]["allowed"] and operator["upload"]["reason"] is None
    assert all(a["allowed"] for a in client.get(f"{API}/console").json()["actions"].values())
