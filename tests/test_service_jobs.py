"""Jobs run to completion through a stream engine of their own: an uploaded video, an uploaded zip of
images and a server path inside an allow-listed folder; results are the engine's events and a summary,
with progress; a running or queued job can be cancelled; jobs survive a restart, and those cut short by a
stop or a crash are marked interrupted."""

from __future__ import annotations

import io
import zipfile

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")

import conftest_service
from conftest_service import running_service, wait_until
from fakes import GREEN, RED, make_video, save_rgb, scene

API = "/api/v1"
db_url, pg_server = conftest_service.db_url, conftest_service.pg_server  # the fixtures


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    allowed = tmp_path_factory.mktemp("allowed")
    with running_service(tmp_path_factory.mktemp("svc"), jobs={"allowed_dirs": [str(allowed)], "max_running": 1}) as (
        client,
        service,
    ):
        yield client, service, allowed


def _finished(client, job_id, timeout=30):
    def done():
        info = client.get(f"{API}/jobs/{job_id}").json()
        return info if info["state"] in ("done", "failed", "cancelled") else None

    return wait_until(done, timeout)


def _events(client, job_id):
    return client.get(f"{API}/jobs/{job_id}/events").json()


def test_uploaded_video_runs_to_completion_with_events_and_summary(svc, tmp_path):
    client, service, _ = svc
    video = make_video(tmp_path / "walk.mp4", 30, people=2)  # two people walk across: one masked, one not
    r = client.post(f"{API}/jobs", files={"file": ("walk.mp4", video.read_bytes(), "video/mp4")})
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    info = _finished(client, job)
    assert info and info["state"] == "done", info
    assert info["progress"] == 1.0 and info["frames"] == 30 and info["expected_frames"] == 30
    out = _events(client, job)
    people = [e for e in out["items"] if e["type"] == "track_ended"]
    assert sorted(e["label"] for e in people) == ["with_mask", "without_mask"]
    assert all(e["source"] == "walk.mp4" and e["id"] for e in people)
    assert out["summary"]["type"] == "source" and out["summary"]["frames"] == 30
    assert out["summary"]["people"]["n_people"] == 2 and out["summary"]["people"]["compliance"] == 0.5
    assert out["state"] == "done" and out["summary"]["error"] is None
    assert not (service.settings.data_dir / "jobs" / job).exists()  # the upload is removed when done


def test_uploaded_zip_of_images_runs_to_completion(svc, tmp_path):
    client, _, _ = svc
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, colour in enumerate((GREEN, RED, GREEN)):
            path = save_rgb(tmp_path / f"img{k}.png", scene([(40 + 30 * k, 50, 60, colour)]))
            z.write(path, f"photos/../img{k}.png")  # a traversal attempt: flattened to a safe name
        z.writestr("readme.txt", "not an image")
    r = client.post(f"{API}/jobs", files={"file": ("photos.zip", buf.getvalue(), "application/zip")})
    assert r.status_code == 202, r.text
    info = _finished(client, r.json()["id"])
    assert info and info["state"] == "done", info
    assert info["frames"] == 3 and info["progress"] == 1.0
    out = _events(client, info["id"])
    assert out["summary"]["frames"] == 3 and out["summary"].get("error") is None
    assert any(e["type"] == "source_status" for e in out["items"])
    assert out["summary"]["type"] == "source"
    assert not (tmp_path.parent / "img0.png").exists()


def test_server_path_job_runs_to_completion_and_a_folder_too(svc):
    client, _, allowed = svc
    make_video(allowed / "door.mp4", 20, people=1)
    folder = allowed / "stills"
    for k in range(2):
        save_rgb(folder / f"{k}.jpg", scene([(60, 60, 50, GREEN)]))
    for path, frames in (("door.mp4", 20), ("stills", 2)):
        r = client.post(f"{API}/jobs", json={"path": path})
        assert r.status_code == 202, r.text
        info = _finished(client, r.json()["id"])
        assert info and info["state"] == "done" and info["frames"] == frames, info
    people = [e for e in _events(client, info["id"])["items"] if e["type"] == "track_ended"]
    assert people == [] or all(e["source"] == "stills" for e in people)
    video_job = next(j for j in client.get(f"{API}/jobs").json() if j["name"] == "door.mp4")
    assert sum(e["type"] == "track_ended" for e in _events(client, video_job["id"])["items"]) == 1


def test_cancel_a_running_job_and_a_queued_one(svc):
    client, service, allowed = svc
    make_video(allowed / "long.mp4", 1500, people=1)
    running = client.post(f"{API}/jobs", json={"path": "long.mp4"}).json()["id"]
    queued = client.post(f"{API}/jobs", json={"path": "long.mp4"}).json()["id"]  # max_running is 1
    assert wait_until(lambda: client.get(f"{API}/jobs/{running}").json()["frames"] > 0, 20)
    engine = service.jobs.active[running].engine
    assert client.get(f"{API}/jobs/{queued}").json()["state"] == "queued"
    assert client.delete(f"{API}/jobs/{queued}").json()["state"] == "cancelled"
    r = client.delete(f"{API}/jobs/{running}")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    info = _finished(client, running, 10)
    assert info["state"] == "cancelled" and info["frames"] < 1500 and info["progress"] < 1.0
    assert wait_until(lambda: not engine.running, 10)
    assert wait_until(lambda: not service.jobs.active, 10)  # finished jobs live in the database only
    frames = client.get(f"{API}/jobs/{running}").json()["frames"]
    assert client.get(f"{API}/jobs/{queued}").json()["frames"] == 0
    assert client.get(f"{API}/jobs/{running}").json()["frames"] == frames  # nothing runs after a cancel
    audit = {a["action"] for a in client.get(f"{API}/audit").json()["items"]}
    assert {"job.create", "job.cancel"} <= audit


def test_jobs_survive_a_restart_and_cut_short_ones_are_marked_interrupted(tmp_path, db_url):
    """On SQLite and on a real PostgreSQL."""
    from sqlalchemy import select

    from maskwatch.service.storage.models import JobRecord

    allowed = tmp_path / "allowed"
    allowed.mkdir()
    make_video(allowed / "short.mp4", 20, people=2)
    make_video(allowed / "long.mp4", 3000, people=1)
    jobs = {"allowed_dirs": [str(allowed)], "max_running": 2}
    with running_service(tmp_path, db=db_url, jobs=jobs) as (client, service):
        done = client.post(f"{API}/jobs", json={"path": "short.mp4"}).json()["id"]
        assert _finished(client, done)["state"] == "done"
        cut = client.post(f"{API}/jobs", json={"path": "long.mp4"}).json()["id"]
        assert wait_until(lambda: client.get(f"{API}/jobs/{cut}").json()["frames"] > 0, 20)
        before, events_before = client.get(f"{API}/jobs/{done}").json(), _events(client, done)
        sessions = service.storage.sessions
    # the service stopped with `cut` running (graceful stop); a crash leaves a record 'running' and an upload
    with sessions() as s, s.begin():
        s.add(JobRecord(id="crashed00001", name="x.mp4", state="running", created_ts=1.0, frames=5, n_events=0))
    leftover = service.settings.data_dir / "jobs" / "crashed00001"
    (leftover / "upload.mp4").parent.mkdir(parents=True)
    (leftover / "upload.mp4").write_bytes(b"partial")
    with running_service(tmp_path, db=db_url, jobs=jobs) as (client, service):
        assert client.get(f"{API}/jobs/{done}").json() == before
        events = _events(client, done)
        assert events == events_before and events["state"] == "done"
        people = sorted(e["label"] for e in events["items"] if e["type"] == "track_ended")
        assert people == ["with_mask", "without_mask"]
        for job_id in (cut, "crashed00001"):
            info = client.get(f"{API}/jobs/{job_id}").json()
            assert info["state"] == "interrupted" and "send it again" in info["error"], info
            assert info["finished"] and 0 < info["frames"] < 3000
        assert client.get(f"{API}/jobs/{cut}/events").json()["items"]  # its events so far are kept
        assert not leftover.exists()  # the crashed job's upload is removed
        assert {done, cut, "crashed00001"} <= {j["id"] for j in client.get(f"{API}/jobs").json()}
        assert client.get(f"{API}/jobs/nope").status_code == 404
        assert client.get(f"{API}/jobs/a%00b").status_code == 404  # not looked up (NUL: an error on PostgreSQL)
        with service.storage.sessions() as s:
            assert not list(s.scalars(select(JobRecord).where(JobRecord.state.in_(("queued", "running")))))
        assert service.retention.purge(now=2e10)["jobs"] == 3  # retention removes old jobs and their event files
        assert not list((service.settings.data_dir / "jobs").glob("*.events.jsonl"))
