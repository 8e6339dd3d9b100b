"""A camera whose source dies is shown as lost / reconnecting while the engine reopens it with backoff,
comes back live when the source returns, and the other cameras go on analysing meanwhile."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")

from conftest_service import NoisyCamera, running_service, wait_until

API = "/api/v1"


class Switch:
    """The power switch of a fake camera: while off, reads fail and reopening fails."""

    def __init__(self) -> None:
        self.up = True
        self.opens = 0


class FlakyCamera(NoisyCamera):
    def __init__(self, switch: Switch):
        super().__init__(fps=20.0)
        self.switch = switch
        switch.opens += 1
        self.opened_up = switch.up

    def isOpened(self):
        return self.opened_up

    def read(self):
        if not self.switch.up:
            return False, None
        return super().read()


def test_a_dead_camera_reconnects_with_backoff_and_the_others_go_on(tmp_path):
    switch = Switch()
    engine = {"stall_timeout": 1.0, "failed_after": 60.0, "backoff": 0.1, "max_backoff": 0.4}
    cameras = {"door": lambda: FlakyCamera(switch)}
    with running_service(tmp_path, engine=engine, cameras=cameras) as (client, service):
        for name in ("door", "hall"):
            assert client.post(f"{API}/cameras", json={"name": name, "url": f"rtsp://fake/{name}"}).status_code == 201
        state = lambda name: client.get(f"{API}/cameras/{name}").json()["state"]
        assert wait_until(lambda: state("door") == "live" and state("hall") == "live", 10)
        opens_before = switch.opens

        switch.up = False  # the door camera dies
        assert wait_until(lambda: state("door") in ("lost", "reconnecting"), 10)
        hall_frames = service.engine.source_stats()["hall"].frames
        seen = set()
        assert wait_until(lambda: seen.add(state("door")) or "reconnecting" in seen, 10)
        assert wait_until(lambda: switch.opens >= opens_before + 3, 10)  # tried again and again (backoff)
        door = client.get(f"{API}/cameras/door").json()
        assert door["state"] in ("lost", "reconnecting") and "fake" not in (door["reason"] or "")
        # the others go on meanwhile
        assert wait_until(lambda: service.engine.source_stats()["hall"].frames > hall_frames + 10, 10)
        assert state("hall") == "live"
        metrics = client.get(f"{API}/metrics").text
        assert 'maskwatch_camera_up{camera="door"} 0.0' in metrics
        assert 'maskwatch_camera_errors_total{camera="door",state="lost"}' in metrics
        overview = client.get(f"{API}/overview").json()
        assert overview["cameras"]["door"]["state"] in ("lost", "reconnecting")

        switch.up = True  # it comes back
        assert wait_until(lambda: state("door") == "live", 15)
        frames = service.engine.source_stats()["door"].frames
        assert wait_until(lambda: service.engine.source_stats()["door"].frames > frames + 5, 10)
        assert "door" in service.engine.sources and "hall" in service.engine.sources


def test_enable_on_a_failed_camera_restarts_it_now(tmp_path):
    """Issue 18: ``POST /cameras/{name}/enable`` on a camera that is enabled but failed starts it again at once
    (it used to answer 200 and do nothing); meanwhile the API says why it failed and when it tries next."""
    switch = Switch()
    engine = {"stall_timeout": 0.5, "failed_after": 1.0, "backoff": 20.0, "max_backoff": 30.0}
    cameras = {"door": lambda: FlakyCamera(switch)}
    with running_service(tmp_path, engine=engine, cameras=cameras) as (client, service):
        assert client.post(f"{API}/cameras", json={"name": "door", "url": "rtsp://fake/door"}).status_code == 201
        door = lambda: client.get(f"{API}/cameras/door").json()
        assert wait_until(lambda: door()["state"] == "live", 10)
        switch.up = False
        assert wait_until(lambda: door()["state"] == "failed", 10), door()
        failed = door()
        assert failed["reason"] and "no frame for" in failed["reason"]
        assert failed["next_attempt"] and failed["next_attempt"] > time.time() + 5  # the backoff: ~20 s away
        switch.up = True  # the camera is back, but its next attempt is far off
        opens = switch.opens
        answer = client.post(f"{API}/cameras/door/enable")
        assert answer.status_code == 200
        assert wait_until(lambda: door()["state"] == "live", 5), door()
        assert switch.opens > opens and door()["next_attempt"] is None
        frames = service.engine.source_stats()["door"].frames
        assert wait_until(lambda: service.engine.source_stats()["door"].frames > frames + 5, 10)
