"""Issue 22, one view of every camera: with real edge agents over a real Mosquitto (``console_world.py``), the
fleet's cameras are in ``GET /cameras`` and ``GET /cameras/{node:camera}`` with the same fields as a local
one (``kind``, ``node`` say which), filtered by node; a remote camera's latest frame comes from its node on
demand (blurred there), and is refused with the reason when the node runs without ``--snapshots`` or is
offline; a remote camera is managed on its node, not here; rules take remote cameras and nodes that exist.
A node stopped cleanly turns its cameras ``lost`` (what docs/deploy.md says) and shows no FPS, while a camera
whose file had ended stays ``ended``."""

from __future__ import annotations

import io

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("paho.mqtt")
pytest.importorskip("edgefirst.tracker", reason="tracking needs the video extra")

from conftest_service import ADMIN, wait_until
from console_world import fleet_world, start_nodes

API = "/api/v1"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from fastapi.testclient import TestClient

    lobby = [{"name": "lobby", "url": "rtsp://fake/lobby"}]  # a local camera beside the remote ones
    with fleet_world(tmp_path_factory.mktemp("fleet-world"), cameras=lobby) as w, TestClient(w.app) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN}"
        start_nodes(w)
        yield w, client


def _cameras(client, query: str = "") -> dict[str, dict]:
    return {c["name"]: c for c in client.get(f"{API}/cameras{query}").json()}


def test_remote_cameras_are_listed_like_local_ones_and_filtered_by_node(world):
    _, client = world
    wanted = {"lobby", "gate-a:door", "gate-b:hall"}

    def ready():  # every camera listed, and gate-a's door live with a stats bucket (its FPS) received
        cams = _cameras(client)
        door = cams.get("gate-a:door") or {}
        return cams if wanted <= set(cams) and door.get("state") == "live" and door.get("fps") else None

    cams = wait_until(ready, 40)
    assert cams, _cameras(client)
    local, remote = cams["lobby"], cams["gate-a:door"]
    assert set(local) == set(remote)  # the same shape
    assert (local["kind"], local["node"]) == ("local", None)
    assert (remote["kind"], remote["node"], remote["node_state"]) == ("remote", "gate-a", "online")
    assert remote["url"] is None and remote["fps"] > 0
    one = client.get(f"{API}/cameras/gate-a:door")
    assert one.status_code == 200 and one.json()["name"] == "gate-a:door"
    assert set(_cameras(client, "?node=gate-a")) == {"gate-a:door"}
    assert set(_cameras(client, "?kind=local")) == {"lobby"}
    assert {"gate-a:door", "gate-b:hall"} <= set(_cameras(client, "?kind=remote"))
    assert client.get(f"{API}/cameras/gate-z:door").status_code == 404
    # people today: remote buckets are stored under node:camera, and the rows add up to the overview
    assert wait_until(lambda: _cameras(client)["gate-a:door"]["people_today"] > 0, 30)
    def rows_add_up() -> bool:  # buckets keep arriving: compare a listing and an overview taken together
        before = {name: c["people_today"] for name, c in _cameras(client).items()}
        overview = client.get(f"{API}/overview").json()
        after = {name: c["people_today"] for name, c in _cameras(client).items()}
        return before == after and overview["people_today"] == sum(before.values())

    assert wait_until(rows_add_up, 30)
    assert {"gate-a", "gate-b"} <= set(client.get(f"{API}/console").json()["nodes"])
    # people in view now: a remote camera's open tracks (track_started without its track_ended yet)
    assert wait_until(lambda: _cameras(client)["gate-a:door"]["present"] > 0, 30)


def test_a_remote_frame_comes_from_its_node_or_a_reason(world):
    from PIL import Image

    _, client = world
    assert wait_until(lambda: "gate-b:hall" in _cameras(client), 30)
    frame = wait_until(lambda: (r := client.get(f"{API}/cameras/gate-a:door/latest.jpg")).status_code == 200 and r, 20)
    assert frame, client.get(f"{API}/cameras/gate-a:door/latest.jpg").text
    assert frame.headers["content-type"] == "image/jpeg" and frame.headers["cache-control"] == "no-store"
    assert Image.open(io.BytesIO(frame.content)).size == (320, 240)  # the node's frame, blurred there
    refused = client.get(f"{API}/cameras/gate-b:hall/latest.jpg")
    assert refused.status_code == 409 and refused.json()["error"] == "snapshots_disabled"
    assert "--snapshots" in refused.json()["detail"] and "gate-b" in refused.json()["detail"]
    # a remote camera is managed on its node: no changes and no live stream here
    for method, path in (("PATCH", "gate-a:door"), ("DELETE", "gate-a:door"), ("POST", "gate-a:door/disable"),
                         ("GET", "gate-a:door/live.mjpeg?frames=1")):  # fmt: skip
        r = client.request(method, f"{API}/cameras/{path}", json={"enabled": False} if method == "PATCH" else None)
        assert r.status_code == 409 and r.json()["error"] == "remote_camera", (path, r.text)
        assert "gate-a" in r.json()["detail"]


def test_rules_take_remote_cameras_and_nodes_that_exist(world):
    _, client = world
    assert wait_until(lambda: "gate-a:door" in _cameras(client), 30)
    ok = client.post(f"{API}/alert-rules", json={"name": "gate door", "kind": "compliance_below",
                                                 "camera": "gate-a:door", "threshold": 0.5})  # fmt: skip
    assert ok.status_code == 201, ok.text
    node = client.post(f"{API}/alert-rules", json={"name": "gate-b down", "kind": "node_offline", "camera": "gate-b"})
    assert node.status_code == 201, node.text
    bad = client.post(f"{API}/alert-rules", json={"name": "x", "kind": "camera_offline", "camera": "gate-a:nope"})
    assert bad.status_code == 422 and bad.json()["error"] == "unknown_camera"


def test_a_node_stopped_cleanly_turns_its_cameras_lost_without_fps(world):
    w, client = world

    def fleet_camera(node: str, camera: str):
        nodes = {n["name"]: n for n in client.get(f"{API}/fleet").json()["nodes"]}
        return next((c for c in nodes.get(node, {"cameras": []})["cameras"] if c["name"] == camera), None)

    # gate-c's file ends: the agent exits by itself and its camera stays "ended" (its source really ended)
    assert wait_until(lambda: not w.threads["gate-c"].is_alive(), 60)
    clip = lambda: fleet_camera("gate-c", "clip") or {}
    assert wait_until(lambda: clip().get("state") == "ended", 20), clip()
    # gate-b is stopped (SIGTERM): its camera is no longer watched: lost, and no last FPS is shown
    assert wait_until(lambda: (fleet_camera("gate-b", "hall") or {}).get("fps"), 20)
    w.stop_node("gate-b")
    assert wait_until(lambda: fleet_camera("gate-b", "hall")["state"] == "lost", 20), fleet_camera("gate-b", "hall")
    hall = fleet_camera("gate-b", "hall")
    assert (hall["fps"], hall["lag_p50"], hall["lag_p95"]) == (None, None, None)
    node = next(n for n in client.get(f"{API}/fleet").json()["nodes"] if n["name"] == "gate-b")
    assert (node["state"], node["reason"]) == ("offline", "stopped")
    camera = client.get(f"{API}/cameras/gate-b:hall").json()
    assert (camera["state"], camera["node_state"], camera["fps"]) == ("lost", "offline", None)
    offline = client.get(f"{API}/cameras/gate-b:hall/latest.jpg")
    assert offline.status_code == 503 and offline.json()["error"] == "node_offline"
    assert "gate-b is offline (stopped)" in offline.json()["detail"]
    assert fleet_camera("gate-a", "door")["state"] == "live"  # the others go on
