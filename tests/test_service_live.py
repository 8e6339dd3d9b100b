"""The service on the engine's newer features: live figures (``StreamEngine.source_stats()``) in the camera
table, the overview and the Prometheus gauges without waiting for a stats bucket; the demo camera as a
slideshow of still images; snapshots of each person (faces blurred), served, shown and purged; unblurred
snapshots only for admins when blurring is off, each view audited."""

from __future__ import annotations

import io
import re
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")

from conftest_service import ADMIN, NoisyCamera, bearer, person, running_service, wait_until
from fakes import GREEN, RED, save_rgb, scene
from PIL import Image

API = "/api/v1"


def _texture(rgb: np.ndarray) -> float:
    return float(rgb.astype(float).std(axis=(0, 1)).mean())


def _centre(rgb: np.ndarray, half: int = 16) -> np.ndarray:
    h, w = rgb.shape[:2]
    return rgb[h // 2 - half : h // 2 + half, w // 2 - half : w // 2 + half]


def _jpeg(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_live_figures_come_from_the_engine_before_any_stats_bucket(tmp_path):
    # buckets every hour: the camera table, the overview and the gauges must still show live numbers
    with running_service(tmp_path, engine={"stats_interval": 3600}) as (client, _service):
        assert client.post(f"{API}/cameras", json={"name": "door", "url": "rtsp://fake/door"}).status_code == 201

        def live_fps():
            cam = client.get(f"{API}/cameras/door").json()
            return cam["state"] == "live" and (cam["fps"] or 0) > 1 and cam

        cam = wait_until(live_fps, 15)
        assert cam and cam["lag_p95"] is not None
        overview = client.get(f"{API}/overview").json()
        assert overview["people_now"] == 1 and overview["cameras"]["door"]["present"] == 1
        assert overview["cameras"]["door"]["fps_now"] > 1 and overview["cameras"]["door"]["last_analysed"]
        metrics = client.get(f"{API}/metrics").text
        fps = re.search(r'maskwatch_camera_analysed_fps\{camera="door"\} ([0-9.e+-]+)', metrics)
        assert fps and float(fps.group(1)) > 1
        assert re.search(r'maskwatch_camera_lag_seconds\{camera="door",quantile="p95"\}', metrics)
        assert not client.get(f"{API}/stats/compliance?camera=door&bucket=1m").json()["cameras"]  # no bucket yet


def test_demo_camera_is_a_slideshow_of_the_scene_images(tmp_path):
    folder = tmp_path / "scenes"
    for k in range(3):
        save_rgb(folder / f"{k}.png", scene([(30 + 90 * k, 60, 50, GREEN if k != 1 else RED)]))
    (tmp_path / "notes.txt").write_text("not an image")
    demo = {"enabled": True, "images": str(folder), "seconds_per_image": 1.0, "fps": 5}
    with running_service(tmp_path, demo=demo) as (client, service):
        cam = client.get(f"{API}/cameras/demo").json()
        assert cam["url"] == str(folder.resolve()) and cam["realtime"] and cam["loop"] and cam["target_fps"] == 5
        assert not (service.settings.data_dir / "demo.mp4").exists()  # no video is made any more
        assert wait_until(lambda: client.get(f"{API}/cameras/demo").json()["state"] == "live", 10)
        # each image is held 1 s at 5 frames/s: a tracked person per image, counted once, in real time
        people = wait_until(lambda: len(client.get(f"{API}/events?camera=demo").json()["items"]) >= 2, 15)
        assert people
        events = client.get(f"{API}/events?camera=demo").json()["items"]
        assert all(e["n_frames"] >= 3 for e in events)
        assert {e["label"] for e in events} <= {"with_mask", "without_mask"}
        assert service.engine.source_stats()["demo"].analysed_fps <= 7  # paced, not as fast as possible


def test_demo_is_skipped_without_images(tmp_path):
    with running_service(tmp_path, demo={"enabled": None, "images": str(tmp_path / "missing")}) as (client, _):
        assert client.get(f"{API}/cameras/demo").status_code == 404


def _person_with_snapshot(client, camera="door"):
    def found():
        items = client.get(f"{API}/events?camera={camera}").json()["items"]
        return next((e for e in items if e["has_snapshot"]), None)

    return wait_until(found, 20)


def _settled(count, quiet: float = 1.0, timeout: float = 30.0) -> bool:
    """``count()`` has not changed for ``quiet`` seconds (False if it kept changing for ``timeout``)."""
    last, since, deadline = count(), time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return True
    return False


def test_snapshots_blurred_served_shown_and_purged_with_retention(tmp_path):
    with running_service(tmp_path, privacy={"snapshots": True}, cameras={"door": NoisyCamera}) as (client, service):
        assert client.post(f"{API}/cameras", json={"name": "door", "url": "rtsp://fake/door"}).status_code == 201
        event = _person_with_snapshot(client)
        assert event, "no person event with a snapshot"
        assert event["event"]["snapshot"] and event["event"]["type"] == "track_ended"
        r = client.get(f"{API}/events/{event['id']}/snapshot")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        shot = _jpeg(r.content)
        assert shot.shape[0] >= 80 and shot.shape[1] >= 80
        latest = service.engine.latest("door")
        x0, y0, x1, y1 = (int(v) for v in latest.result.faces[0].box)
        face = latest.frame.image[y0 + 20 : y1 - 20, x0 + 20 : x1 - 20]
        assert _texture(_centre(shot)) < 8 < 20 < _texture(face)  # the face in the snapshot is blurred
        path = service.media.root / event["event"]["snapshot"]
        assert path.is_file() and not path.name.endswith(".unblurred.jpg")
        assert path.resolve().is_relative_to((service.settings.data_dir / "snapshots").resolve())
        client.delete(f"{API}/cameras/door")
        # the camera's last people (tracks ended by its removal) may still bring snapshots: wait until it has
        # left the engine and no snapshot has appeared for a second (a loaded machine wrote one after the
        # purges below)
        assert wait_until(lambda: "door" not in service.engine.sources, 20)
        assert _settled(lambda: len(list(service.media.root.rglob("*.jpg"))))
        # retention: media after media_days (the event stays), events (and any media) after events_days
        counts = service.retention.purge(now=time.time() + 8 * 86400)
        assert counts["snapshots"] >= 1 and not path.exists()
        again = client.get(f"{API}/events/{event['id']}").json()
        assert again["has_snapshot"] is False
        assert client.get(f"{API}/events/{event['id']}/snapshot").status_code == 404
        service.retention.purge(now=time.time() + 31 * 86400)
        assert client.get(f"{API}/events/{event['id']}").status_code == 404
        assert not list(service.media.root.rglob("*.jpg"))
        # the dashboard's gallery shows snapshots (an <img> per event that has one)
        assert "/snapshot" in client.get("/static/events.js").text


def test_a_snapshot_whose_event_is_refused_is_not_left_on_disk(tmp_path):
    with running_service(tmp_path, privacy={"snapshots": True}) as (_, service):
        rgb = np.zeros((40, 40, 3), np.uint8)
        kept, refused = service.media.store("door", 1, rgb), service.media.store("door", 2, rgb)
        assert service.pipeline.handle_event(person(track_id=1).model_copy(update={"snapshot": kept}))
        service.ingestor.capacity = 0  # the buffer is full (the database has been away for long)
        assert not service.pipeline.handle_event(person(track_id=2).model_copy(update={"snapshot": refused}))
        service.ingestor.capacity = 1000
        assert (service.media.root / kept).is_file() and not (service.media.root / refused).exists()
        assert service.ingestor.dropped == 1


def test_snapshots_off_by_default(tmp_path):
    with running_service(tmp_path, cameras={"door": NoisyCamera}) as (client, service):
        assert service.engine.snapshot_sink is None and service.engine_config.snapshots is False
        assert client.post(f"{API}/cameras", json={"name": "door", "url": "rtsp://fake/door"}).status_code == 201
        assert wait_until(lambda: client.get(f"{API}/events?camera=door").json()["items"], 20)
        assert not any(e["has_snapshot"] for e in client.get(f"{API}/events").json()["items"])
        assert not (service.settings.data_dir / "snapshots").exists()


def test_unblurred_snapshots_only_for_admins_when_blurring_is_off_and_each_view_audited(tmp_path):
    privacy = {"snapshots": True, "blur_faces": False}
    with running_service(tmp_path, privacy=privacy, cameras={"door": NoisyCamera}) as (client, service):
        assert service.engine_config.snapshot_blur is False
        viewer = client.post(f"{API}/tokens", json={"name": "v", "role": "viewer"}).json()["token"]
        assert client.post(f"{API}/cameras", json={"name": "door", "url": "rtsp://fake/door"}).status_code == 201
        event = _person_with_snapshot(client)
        assert event and event["event"]["snapshot"].endswith(".unblurred.jpg")
        url = f"{API}/events/{event['id']}/snapshot"
        raw = _jpeg(client.get(url, headers=bearer(ADMIN)).content)
        assert _texture(_centre(raw)) > 20  # the admin sees the face
        seen_by_viewer = client.get(url, headers=bearer(viewer))
        assert seen_by_viewer.status_code == 200 and _texture(_centre(_jpeg(seen_by_viewer.content))) < 8
        audit = client.get(f"{API}/audit").json()["items"]
        views = [a for a in audit if a["action"] == "media.unblurred_view" and a["target"] == event["event_id"]]
        assert len(views) == 1
        # blurring turned back on: nobody gets the unblurred file any more
        service.settings.privacy.blur_faces = True
        assert _texture(_centre(_jpeg(client.get(url, headers=bearer(ADMIN)).content))) < 8
