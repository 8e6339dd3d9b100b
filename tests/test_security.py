"""The security battery (issue 19): each test attacks the running service the way a holder of a token, a
stranger or a fleet node could, on the real app (fake models, fake and real cameras, real HTTP receivers on
127.0.0.1, SQLite):

* SSRF and file reads through camera sources (loopback, metadata, private addresses, decimal IPs, files,
  globs; a disabled camera changed through PATCH) and webhooks (checked when saved and at send time,
  against the address connected to; delivery errors without port detail);
* webhook signatures over a timestamp and the body (a replay outside the window fails);
* webhook URLs hidden from viewers;
* traversal and bombs through jobs (checked before anything is written, nothing left behind), a job whose
  inputs all failed, one pixel limit for every upload path, video frame size, the job queue cap;
* live stream caps per token and one encode per frame for every viewer;
* unauthenticated and failed attempts throttled without database lookups, login included; preset token
  entropy; token expiry; the first admin token in a mode-600 file, never in the log; ``--check`` output;
* malformed node statuses, remote payloads out of range, remote snapshot references, fleet caps.

Secrets in the logs and command lines of real ``serve`` / ``agent`` processes: ``test_security_process.py``.
"""

from __future__ import annotations

import io
import os
import re
import threading
import time
import zipfile
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("edgefirst.tracker", reason="tracking needs the video extra")

from conftest_service import ADMIN, bearer, person, running_service, service_settings, wait_until
from fakes import GREEN, fake_detector, make_video, save_rgb, scene
from PIL import Image

API = "/api/v1"


def video(path: Path, n: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return make_video(path, n, people=1)


def jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class Listener:
    """An HTTP server on ``host`` that records every request (path, headers, body) and answers 200."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                self._record()

            def do_POST(self):
                self._record()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


def _viewer(client) -> str:
    r = client.post(f"{API}/tokens", json={"name": f"viewer-{time.monotonic_ns()}", "role": "viewer"})
    assert r.status_code == 201, r.text
    return r.json()["token"]


# -- camera sources: SSRF and file reads ----------------------------------------------------------------------


def test_camera_sources_refuse_internal_addresses_local_files_and_globs(tmp_path, listener):
    media = tmp_path / "media"
    video(media / "door.mp4", 10)
    secret = tmp_path / "private"
    video(secret / "ward.mp4", 10)
    with running_service(tmp_path, security={"sources": {"hosts": ["fake"], "folders": [str(media)]}}) as (
        client,
        service,
    ):
        attempts = [
            f"{listener.url}/video.mjpg",  # loopback: the service would call itself or its neighbours
            f"http://localhost:{listener.port}/video.mjpg",
            f"http://2130706433:{listener.port}/video.mjpg",  # 127.0.0.1 in decimal
            f"http://[::ffff:127.0.0.1]:{listener.port}/video.mjpg",
            "http://169.254.169.254/latest/meta-data/iam/",  # cloud metadata (link-local)
            "rtsp://10.1.2.3/stream",  # private
            "rtsp://192.168.0.10/stream",
            "file:///etc/passwd",
            "/etc/passwd",
            str(secret / "ward.mp4"),  # a video outside the allowed folders
            str(secret),
            str(media / ".." / "private" / "ward.mp4"),  # traversal out of an allowed folder
            str(media / "*.mp4"),  # globs: one source, one file or folder
            "webcam:0",
        ]
        for i, url in enumerate(attempts):
            r = client.post(f"{API}/cameras", json={"name": f"x{i}", "url": url})
            assert r.status_code == 422 and r.json()["error"] == "bad_source", (url, r.text)
        time.sleep(1.0)
        assert listener.requests == []  # nothing was fetched from the refused addresses
        assert client.get(f"{API}/cameras").json() == []
        assert not service.engine.sources
        ok = client.post(f"{API}/cameras", json={"name": "door", "url": str(media / "door.mp4")})
        assert ok.status_code == 201, ok.text  # inside security.sources.folders
        assert client.post(f"{API}/cameras", json={"name": "cam", "url": "rtsp://fake/cam"}).status_code == 201


def test_every_camera_write_path_validates_like_create(tmp_path, listener):
    with running_service(tmp_path) as (client, service):
        r = client.post(f"{API}/cameras", json={"name": "door", "url": "rtsp://fake/door", "enabled": False})
        assert r.status_code == 201
        for url in ("/no/such/file.mp4", f"{listener.url}/x.mjpg", "http://169.254.169.254/"):
            r = client.patch(f"{API}/cameras/door", json={"url": url})  # disabled: nothing starts, still checked
            assert r.status_code == 422, (url, r.text)
        assert client.get(f"{API}/cameras/door").json()["url"] == "rtsp://fake/door"
        # a source stored before the policy existed (written straight to the database) is checked on enable
        camera = service.storage.cameras.get("door")
        camera.url = f"{listener.url}/x.mjpg"
        service.storage.cameras.save(camera, ("url",))
        assert client.post(f"{API}/cameras/door/enable").status_code == 422
        time.sleep(0.5)
        assert listener.requests == [] and "door" not in service.engine.sources


# -- webhooks ------------------------------------------------------------------------------------------------------


def _fire(service, camera: str = "door") -> None:
    for i in range(6):
        service.pipeline.handle_event(person(camera, compliant=False, track_id=100 + i, at=datetime.now(UTC)))
    assert service.ingestor.flush(10)  # the rules read what is stored
    service.alerts.evaluate()


RULE = {"name": "low", "kind": "compliance_below", "threshold": 0.8, "min_people": 3}  # every camera


def test_webhook_targets_are_checked_when_saved_and_again_at_send_time(tmp_path, listener):
    alerts = {"evaluate_every": 3600, "webhook_backoff": 0.05, "webhook_attempts": 2}
    with running_service(tmp_path, alerts=alerts) as (client, service):
        for url in (f"{listener.url}/hook", "http://169.254.169.254/hook", "http://10.0.0.1/hook", "ftp://x/y"):
            r = client.post(f"{API}/alert-rules", json={**RULE, "webhook_url": url})
            assert r.status_code == 422 and "webhook_url" in r.json()["detail"], (url, r.text)
        service.settings.security.webhooks.hosts = ["127.0.0.1"]  # an internal receiver, listed by the admin
        r = client.post(f"{API}/alert-rules", json={**RULE, "webhook_url": f"{listener.url}/hook"})
        assert r.status_code == 201, r.text
        service.settings.security.webhooks.hosts = []  # taken back: the next send is refused, not sent
        _fire(service)
        deliveries = wait_until(lambda: service.storage.alerts.deliveries(1), 10)
        assert deliveries and not deliveries[0].ok and "refused" in deliveries[0].error
        assert len(deliveries) == 1  # a refused target is not retried
        time.sleep(0.3)
        assert listener.requests == []


def test_delivery_errors_do_not_tell_open_from_closed_ports(tmp_path):
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    alerts = {"evaluate_every": 3600, "webhook_backoff": 0.05, "webhook_attempts": 1, "webhook_timeout": 1}
    security = {"webhooks": {"hosts": ["127.0.0.1"]}}
    with running_service(tmp_path, alerts=alerts, security=security) as (client, service):
        rule = {**RULE, "webhook_url": f"http://127.0.0.1:{closed}/hook"}
        assert client.post(f"{API}/alert-rules", json=rule).status_code == 201
        _fire(service)
        deliveries = wait_until(lambda: client.get(f"{API}/alerts/1/deliveries").json(), 10)
        error = deliveries[0]["error"]
        assert error == "not delivered: no connection or no answer", error
        assert "refused" not in error.lower() and "errno" not in error.lower() and str(closed) not in error


def test_webhooks_are_signed_over_a_timestamp_and_the_body(tmp_path, listener):
    from maskwatch.service.alerts import verify

    security = {"webhooks": {"hosts": ["127.0.0.1"]}}
    with running_service(tmp_path, alerts={"evaluate_every": 3600}, security=security) as (client, service):
        rule = {**RULE, "webhook_url": f"{listener.url}/hook", "webhook_secret": "s3cret"}
        assert client.post(f"{API}/alert-rules", json=rule).status_code == 201
        _fire(service)
        assert wait_until(lambda: listener.requests, 10)
    _, headers, body = listener.requests[0]
    stamp, signature = headers["x-maskwatch-timestamp"], headers["x-maskwatch-signature"]
    sent = int(stamp)
    assert verify("s3cret", body, stamp, signature, now=sent + 5)
    assert not verify("s3cret", body, stamp, signature, now=sent + 301)  # a replay after the window
    assert not verify("s3cret", body.replace(b"firing", b"resolved"), stamp, signature, now=sent)  # tampered
    assert not verify("s3cret", body, str(sent + 60), signature, now=sent + 60)  # a fresh stamp on old bytes
    assert not verify("other", body, stamp, signature, now=sent)


def test_the_webhook_sender_connects_to_the_address_it_checked():
    """DNS rebinding: the name resolves to an allowed address when checked and to a refused one a moment
    later; the request must go to the address that was checked."""
    from maskwatch.core.netpolicy import NetPolicy
    from maskwatch.service.alerts import AlertOut, AlertTransition, WebhookSender

    allowed = Listener("127.0.0.2")
    refused = Listener("127.0.0.1", allowed.port)  # same port, the refused address
    answers = iter(["127.0.0.2"] + ["127.0.0.1"] * 10)

    def rebinding(host, port, *args):
        return [(2, 1, 6, "", (next(answers), port))]

    policy = NetPolicy.of(["http"], ["127.0.0.2/32"], resolve=rebinding)

    class Deliveries:
        def __init__(self):
            self.rows = []

        def record_delivery(self, delivery):
            self.rows.append(delivery)

    sender = WebhookSender(Deliveries(), timeout=2, attempts=1, backoff=0.01, policy=lambda: policy)
    alert = AlertOut(id=1, rule_id=1, rule="r", kind="camera_offline", camera="c", state="firing", message="m",
                     value=None, started=0.0, resolved=None, acknowledged_by=None, acknowledged=None)  # fmt: skip
    try:
        ok = sender.send(f"http://hooks.example:{allowed.port}/hook", None, AlertTransition(transition="firing",
                         alert=alert), alert_id=1, rule_id=1).result(10)  # fmt: skip
        assert ok and len(allowed.requests) == 1 and refused.requests == []
        assert allowed.requests[0][1]["host"] == f"hooks.example:{allowed.port}"  # the name, not the address
    finally:
        sender.close()
        allowed.close()
        refused.close()


def test_viewers_cannot_read_webhook_urls(tmp_path):
    with running_service(tmp_path) as (client, _):
        rule = {**RULE, "webhook_url": "https://8.8.8.8/services/T000/B000/XXXXSECRET"}
        assert client.post(f"{API}/alert-rules", json=rule).status_code == 201
        viewer = _viewer(client)
        seen = next(r for r in client.get(f"{API}/alert-rules", headers=bearer(viewer)).json() if r["name"] == "low")
        assert seen["webhook_url"] is None and seen["has_webhook"] is True
        assert "XXXXSECRET" not in client.get(f"{API}/alert-rules", headers=bearer(viewer)).text
        mine = next(r for r in client.get(f"{API}/alert-rules").json() if r["name"] == "low")
        assert mine["webhook_url"].endswith("XXXXSECRET")  # admins see it


# -- jobs: traversal, bombs, limits ------------------------------------------------------------------------------


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".events.jsonl")]


def test_a_zip_bomb_is_refused_before_anything_is_written(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("huge.bmp", b"BM" + bytes(300_000_000))  # 300 MB of zeros, ~300 kB compressed
    bomb = buf.getvalue()
    assert len(bomb) < 1_000_000
    with running_service(tmp_path) as (client, service):
        jobs_dir = service.settings.data_dir / "jobs"
        began = time.monotonic()
        r = client.post(f"{API}/jobs", files={"file": ("bomb.zip", bomb, "application/zip")})
        assert r.status_code == 413 and r.json()["error"] == "too_large", r.text
        assert time.monotonic() - began < 10
        assert _files_under(jobs_dir) == [] and [p for p in jobs_dir.iterdir() if p.is_dir()] == []
        assert client.get(f"{API}/jobs").json() == []


def test_archive_entries_and_traversal_names(tmp_path):
    many = io.BytesIO()
    with zipfile.ZipFile(many, "w") as z:
        for i in range(12):
            z.writestr(f"{i}.png", b"x")
    with running_service(tmp_path, limits={"archive_members": 10}) as (client, service):
        r = client.post(f"{API}/jobs", files={"file": ("many.zip", many.getvalue(), "application/zip")})
        assert r.status_code == 413 and "entries" in r.json()["detail"], r.text
        png = io.BytesIO()
        Image.fromarray(scene([(60, 60, 50, GREEN)])).save(png, format="PNG")
        sneaky = io.BytesIO()
        with zipfile.ZipFile(sneaky, "w") as z:
            z.writestr("../../../../escaped.png", png.getvalue())
            z.writestr("/tmp/absolute-escape.png", png.getvalue())
        r = client.post(f"{API}/jobs", files={"file": ("s.zip", sneaky.getvalue(), "application/zip")})
        assert r.status_code == 202, r.text
        assert wait_until(lambda: client.get(f"{API}/jobs/{r.json()['id']}").json()["state"] == "done", 20)
        assert not (tmp_path / "escaped.png").exists() and not Path("/tmp/absolute-escape.png").exists()
        assert not (service.settings.data_dir / "escaped.png").exists()


def test_refused_jobs_leave_nothing_on_disk_and_failed_inputs_fail(tmp_path):
    with running_service(tmp_path, limits={"upload_pixels": 100_000}) as (client, service):
        jobs_dir = service.settings.data_dir / "jobs"
        empty = io.BytesIO()
        with zipfile.ZipFile(empty, "w") as z:
            z.writestr("readme.txt", "no images here")
        big = jpeg(np.zeros((400, 400, 3), np.uint8))  # 160 000 pixels
        with_big = io.BytesIO()
        with zipfile.ZipFile(with_big, "w") as z:
            z.writestr("big.jpg", big)
        for name, data, kind, code in (
            ("empty.zip", empty.getvalue(), "application/zip", 422),
            ("big.jpg", big, "image/jpeg", 413),
            ("big.zip", with_big.getvalue(), "application/zip", 413),
            ("broken.zip", b"PK\x03\x04" + b"\x00" * 100, "application/zip", 415),
        ):
            r = client.post(f"{API}/jobs", files={"file": (name, data, kind)})
            assert r.status_code == code, (name, r.text)
            assert _files_under(jobs_dir) == [], name
            assert [p for p in jobs_dir.iterdir() if p.is_dir()] == [], name
        broken = io.BytesIO()
        with zipfile.ZipFile(broken, "w") as z:
            for i in range(3):
                z.writestr(f"{i}.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)  # images by name, not by content
        r = client.post(f"{API}/jobs", files={"file": ("broken.zip", broken.getvalue(), "application/zip")})
        assert r.status_code == 202, r.text
        job = r.json()["id"]
        info = wait_until(lambda: (j := client.get(f"{API}/jobs/{job}").json())["state"] in ("done", "failed") and j)
        assert info["state"] == "failed" and "no input could be analysed" in info["error"], info
        assert "3 skipped" in info["error"]
        assert wait_until(lambda: not (jobs_dir / job).exists(), 5)


def test_one_pixel_limit_for_every_upload_path_and_video_frames(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    save_rgb(allowed / "big.png", np.zeros((400, 400, 3), np.uint8))
    video(allowed / "clip.mp4", 5)  # 320 x 240 = 76 800 pixels per frame
    limits = {"upload_pixels": 100_000, "frame_pixels": 50_000}
    with running_service(tmp_path, limits=limits, jobs={"allowed_dirs": [str(allowed)]}) as (client, _):
        big = jpeg(np.zeros((400, 400, 3), np.uint8))
        assert client.post(f"{API}/infer", files={"file": ("a.jpg", big, "image/jpeg")}).status_code == 413
        assert client.post(f"{API}/jobs", files={"file": ("a.jpg", big, "image/jpeg")}).status_code == 413
        assert client.post(f"{API}/jobs", json={"path": "big.png"}).status_code == 413
        r = client.post(f"{API}/jobs", json={"path": "clip.mp4"})
        assert r.status_code == 413 and "frame_pixels" in r.json()["detail"], r.text
        clip = (allowed / "clip.mp4").read_bytes()
        assert client.post(f"{API}/jobs", files={"file": ("c.mp4", clip, "video/mp4")}).status_code == 413
        assert client.get(f"{API}/jobs").json() == []


def test_the_job_queue_is_capped(tmp_path):
    allowed = tmp_path / "allowed"
    video(allowed / "long.mp4", 1500)
    jobs = {"allowed_dirs": [str(allowed)], "max_queued": 2}
    with running_service(tmp_path, jobs=jobs) as (client, _):
        ids = [client.post(f"{API}/jobs", json={"path": "long.mp4"}).json()["id"] for _ in range(2)]
        r = client.post(f"{API}/jobs", json={"path": "long.mp4"})
        assert r.status_code == 429 and r.json()["error"] == "too_many_jobs", r.text
        r = client.post(f"{API}/jobs", files={"file": ("a.jpg", jpeg(scene([(40, 40, 60, GREEN)])), "image/jpeg")})
        assert r.status_code == 429
        for job in ids:
            client.delete(f"{API}/jobs/{job}")


# -- live streams ------------------------------------------------------------------------------------------------


def _jpegs(body: bytes) -> list[bytes]:
    """The JPEGs of a multipart MJPEG body, by their Content-Length."""
    out, at = [], 0
    while (found := re.search(rb"Content-Length: (\d+)\r\n\r\n", body[at:])) is not None:
        start = at + found.end()
        out.append(body[start : start + int(found.group(1))])
        at = start + int(found.group(1))
    return out


def test_live_streams_are_capped_per_token_and_each_frame_is_encoded_once(tmp_path):
    with running_service(tmp_path, limits={"streams_per_token": 3}) as (client, service):
        assert client.post(f"{API}/cameras", json={"name": "door", "url": "rtsp://fake/door"}).status_code == 201
        assert wait_until(lambda: service.engine.latest("door") is not None, 10)
        results: list[bytes] = []
        opened = threading.Barrier(4)

        def watch():
            with client.stream("GET", f"{API}/cameras/door/live.mjpeg?frames=6&fps=10") as r:
                assert r.status_code == 200
                opened.wait(10)
                results.append(b"".join(r.iter_bytes()))

        before = service.live.jpegs.encoded
        threads = [threading.Thread(target=watch) for _ in range(3)]
        for t in threads:
            t.start()
        opened.wait(10)  # three streams open: a fourth (MJPEG or SSE) is refused
        extra = client.get(f"{API}/cameras/door/live.mjpeg?frames=1")
        assert extra.status_code == 429 and extra.json()["error"] == "too_many_streams", extra.text
        assert client.get(f"{API}/stream?limit=1").status_code == 429
        other = _viewer(client)  # another token has its own streams
        single = client.get(f"{API}/cameras/door/live.mjpeg?frames=1", headers=bearer(other))
        assert single.status_code == 200
        for t in threads:
            t.join(20)
        assert [r.count(b"--frame") for r in results] == [6, 6, 6]
        encodes = service.live.jpegs.encoded - before
        # each frame encoded once, whoever asked for it (the camera's noise makes every frame's JPEG unique;
        # before, three viewers cost 18 encodes); how many frames the viewers share depends on their timing
        distinct = {jpeg for body in (*results, single.content) for jpeg in _jpegs(body)}
        assert encodes == len(distinct), (encodes, len(distinct))
        assert wait_until(lambda: service.live.streams.held(1) == 0, 5)  # every slot given back
        assert client.get(f"{API}/cameras/door/live.mjpeg?frames=1").status_code == 200


# -- authentication -----------------------------------------------------------------------------------------------


def test_failed_credentials_are_throttled_without_database_lookups(tmp_path):
    with running_service(tmp_path, auth={"failed_burst": 5, "failed_per_minute": 6}) as (client, service):
        assert client.get(f"{API}/cameras").status_code == 200  # the admin token, cached from now on
        repo = service.auth.tokens
        lookups = []
        original = repo.active

        def counted(digest):
            lookups.append(digest)
            return original(digest)

        repo.active = counted
        codes = [client.get(f"{API}/cameras", headers=bearer(f"mw_guess_{i:06d}")).status_code for i in range(40)]
        assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}, codes
        assert len(lookups) <= 5  # the throttled ones cost nothing
        anonymous = [client.get(f"{API}/cameras", headers={"Authorization": ""}).status_code for _ in range(3)]
        assert anonymous == [429] * 3
        login = client.post(f"{API}/auth/login", json={"token": "mw_guess_login"}, headers={"Authorization": ""})
        assert login.status_code == 429 and int(login.headers["Retry-After"]) >= 1
        assert client.get(f"{API}/cameras").status_code == 200  # a valid, cached token still works
        assert len(lookups) <= 5


def test_unknown_tokens_cannot_flush_the_cache_of_valid_ones(tmp_path):
    auth = {"failed_burst": 100_000, "failed_per_minute": 100_000, "cache_s": 60}  # the flood takes seconds
    with running_service(tmp_path, auth=auth) as (client, svc):
        assert client.get(f"{API}/cameras").status_code == 200  # the admin token is cached now
        repo = svc.auth.tokens
        lookups = []
        original = repo.active
        repo.active = lambda digest: (lookups.append(digest), original(digest))[1]
        for i in range(10_050):  # more unknown tokens than the cache holds
            svc.auth.by_token(f"mw_flood_{i}", "203.0.113.9")
        lookups.clear()
        assert client.get(f"{API}/cameras").status_code == 200
        assert lookups == []  # still cached: a flood of wrong tokens did not push it out


def test_preset_tokens_need_entropy_and_little_is_kept_in_clear(tmp_path):
    from maskwatch.service.app import create_app

    for weak in ("abcdefgh", "t" * 40, "password"):
        with pytest.raises(ValueError, match="too weak"):
            create_app(service_settings(tmp_path), detector=fake_detector(), admin_token=weak)
    with running_service(tmp_path) as (client, _):
        admin = next(t for t in client.get(f"{API}/tokens").json() if t["name"] == "admin")
        assert len(admin["prefix"]) <= len(ADMIN) // 8 and ADMIN[8:] not in admin["prefix"]


def test_tokens_expire(tmp_path):
    with running_service(tmp_path) as (client, service):
        made = client.post(f"{API}/tokens", json={"name": "short", "role": "viewer", "expires_days": 5 / 86400}).json()
        assert made["expires"] == pytest.approx(time.time() + 5, abs=2.5)  # room for a loaded machine
        assert client.get(f"{API}/cameras", headers=bearer(made["token"])).status_code == 200
        default = client.post(f"{API}/tokens", json={"name": "default", "role": "viewer"}).json()
        assert default["expires"] == pytest.approx(time.time() + 365 * 86400, abs=60)  # auth.token_days
        time.sleep(max(0.0, made["expires"] - time.time()) + 0.5)
        r = client.get(f"{API}/cameras", headers=bearer(made["token"]))
        assert r.status_code == 401 and "expired" in r.json()["detail"]
        login = client.post(f"{API}/auth/login", json={"token": made["token"]}, headers={"Authorization": ""})
        assert login.status_code == 401
        service.auth.write_usage()
        listed = {t["name"]: t for t in client.get(f"{API}/tokens").json()}
        assert listed["short"]["last_used"] is not None  # its use was recorded while it lived


def test_the_first_admin_token_goes_to_a_private_file_not_the_log(tmp_path, caplog, monkeypatch):
    from fastapi.testclient import TestClient

    from maskwatch.service.app import create_app

    monkeypatch.delenv("MASKWATCH_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("MASKWATCH_ADMIN_TOKEN_FILE", raising=False)
    shown: list[tuple[str, Path]] = []
    settings = service_settings(tmp_path)
    app = create_app(settings, detector=fake_detector(), on_admin_token=lambda t, p: shown.append((t, p)))
    with caplog.at_level("DEBUG"), TestClient(app) as client:
        path = settings.data_dir / "admin-token"
        token = path.read_text().strip()
        assert (path.stat().st_mode & 0o777) == 0o600
        assert shown == [(token, path)]
        assert token not in caplog.text and str(path) in caplog.text
        assert client.get(f"{API}/auth/me", headers=bearer(token)).json()["role"] == "admin"


def test_check_output_hides_every_credential(tmp_path):
    import subprocess
    import sys

    config = tmp_path / "serve.yaml"
    config.write_text(
        'cameras:\n  - {name: door, url: "rtsp://cam:pa\'ss@10.0.0.5/s1"}\n'
        "alerts:\n  rules:\n    - name: r\n      kind: camera_offline\n"
        "      webhook_url: https://hooks.slack.example/services/T000/B000/HOOKSECRET\n"
        "      webhook_secret: SIGNSECRET\n"
    )
    # a raw "@" and quotes in the password (a "/" must be written %2F in any URL)
    db = "postgresql://mw:db'p@ss\"w%2Frd@db.example:5432/mw"
    env = {**os.environ, "MASKWATCH_DB": db, "MASKWATCH_OFFLINE": "1"}
    cli = [sys.executable, "-c", "from maskwatch.cli import main; main()"]
    out = subprocess.run([*cli, "serve", "--config", str(config), "--check", "--no-demo"],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    for secret in ("pa'ss", "db'p", 'ss"w', "w%2Frd", "HOOKSECRET", "SIGNSECRET"):
        assert secret not in text, secret
    assert "db.example" in text and "hooks.slack.example" in text  # the rest is shown


def test_docs_use_local_assets_under_a_content_policy(tmp_path):
    with running_service(tmp_path) as (client, _):
        page = client.get("/docs", headers={"Authorization": ""})
        assert page.status_code == 200
        policy = page.headers["content-security-policy"]
        script_src = next(p for p in policy.split(";") if p.strip().startswith("script-src"))
        assert script_src.strip() == "script-src 'self'" and "frame-ancestors 'none'" in policy
        assert "https://" not in page.text and "http://" not in page.text and "<script>" not in page.text
        for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/static/docs.js"):
            assert client.get(asset, headers={"Authorization": ""}).status_code == 200, asset
    with running_service(tmp_path / "off", security={"docs": False}) as (client, _):
        assert client.get("/docs", headers={"Authorization": ""}).status_code == 404


# -- the fleet's remote payloads -----------------------------------------------------------------------------------


def test_malformed_node_status_and_remote_payloads_are_rejected_and_the_fleet_view_stays_up(tmp_path):
    import json
    from datetime import UTC, datetime, timedelta

    from conftest_service import bucket

    from maskwatch.service.core import FleetLink

    limits = {"fleet_nodes": 2, "fleet_cameras_per_node": 2}
    link = FleetLink("mqtt://127.0.0.1:1", client_id="security-test")  # no broker: receive() is fed directly
    with running_service(tmp_path, fleet=link, limits=limits, privacy={"snapshots": True}) as (client, service):
        ingest = service.fleet

        def status(node, **fields):
            body = {"schema": "maskwatch.node/1", "node": node, "state": "online", **fields}
            return ingest.receive(f"maskwatch/{node}/status", json.dumps(body).encode())

        status("n1", cameras=["door"])
        for bad in ({"reason": {"a": [1]}}, {"outbox": {"messages": "lots"}}, {"outbox": {"messages": -3}},
                    {"cameras": "door"}, {"cameras": [{"x": 1}]}, {"cameras": ["../etc"]}, {"time": "soon"},
                    {"reason": "x" * 10_000}):  # fmt: skip
            status("n1", **bad)
        assert ingest.rejected["invalid"] == 8
        r = client.get(f"{API}/fleet")
        assert r.status_code == 200, r.text
        node = r.json()["nodes"][0]
        assert node["outbox"] is None and [c["name"] for c in node["cameras"]] == ["door"]
        # remote events: out of the time window, negative or inconsistent counts
        now = datetime.now(UTC)
        bad_events = [
            bucket("door", start=now + timedelta(days=2)),  # in the future
            bucket("door", start=now - timedelta(days=400)),  # older than remote_past_s
            bucket("door", start=now, masked=-5, unmasked=1),
            bucket("door", start=now).model_copy(update={"compliant_people": 99}),
            bucket("door", start=now).model_copy(update={"frames_dropped": -1_000_000}),
        ]
        for event in bad_events:
            ingest.receive("maskwatch/n1/door/stats", event.to_json().encode())
        assert ingest.rejected["remote"] == 5
        # a remote snapshot reference names a file of the control room: dropped, the file untouched
        ours = service.media.store("lobby", 1, np.zeros((32, 32, 3), np.uint8))
        ended = person("door", at=now).model_copy(update={"snapshot": ours})
        assert ingest.receive("maskwatch/n1/door/events", ended.to_json().encode()) is not None
        assert service.ingestor.flush(10)
        stored = client.get(f"{API}/events?camera=n1:door").json()["items"]
        assert len(stored) == 1 and stored[0]["event"].get("snapshot") is None
        assert client.get(f"{API}/events/{stored[0]['id']}/snapshot").status_code == 404
        assert service.media.read(ours) is not None
        # caps: nodes and cameras per node
        status("n2")
        status("n3")
        ok = bucket("cam1", start=now)
        for camera in ("cam1", "cam2", "cam3"):
            ingest.receive(f"maskwatch/n2/{camera}/stats", ok.model_copy(update={"source": camera}).to_json().encode())
        assert ingest.rejected["cap"] == 2  # the third node and the third camera of n2
        assert {n["name"] for n in client.get(f"{API}/fleet").json()["nodes"]} == {"n1", "n2"}
