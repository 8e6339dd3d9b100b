"""The dashboard in headless Chromium (Debian's chromium driven by Playwright) against a real uvicorn
server on fake models and fake cameras: every page loads with no console error, live numbers update while
a camera runs, the upload flow shows a result, a camera added in the UI appears and reports, a rule fires
and shows, acknowledging works. Screenshots go to a temporary folder (printed)."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("edgefirst.tracker", reason="tracking needs the video extra")

from conftest_service import ADMIN, NoisyCamera, fake_cameras, service_settings, wait_until

pytestmark = pytest.mark.slow
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]  # fmt: skip


def _browser_or_skip():
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright python package is not installed (pip install playwright)")
    return chromium, sync_playwright


@pytest.fixture
def server(tmp_path):
    import uvicorn
    from fakes import fake_detector

    from maskwatch.service.app import create_app

    settings = service_settings(
        tmp_path, cameras=[{"name": "door", "url": "rtsp://fake/door"}], privacy={"snapshots": True}
    )
    app = create_app(settings, detector=fake_detector(), admin_token=ADMIN,
                     capture_factory=fake_cameras(gate=lambda: NoisyCamera(unmasked=True)))  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", app.state.service
    srv.should_exit = True
    thread.join(15)


def test_dashboard_pages_live_numbers_upload_cameras_and_alerts(server, tmp_path_factory):
    chromium, sync_playwright = _browser_or_skip()
    base, _service = server
    shots = tmp_path_factory.mktemp("dashboard-screenshots")
    errors: list[str] = []
    from fakes import GREEN, scene
    from test_service_api import jpeg

    upload = shots / "face.jpg"
    upload.write_bytes(jpeg(scene([(40, 40, 60, GREEN)])))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(f"{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        page.goto(base + "/")
        page.wait_for_selector("#login:not([hidden])")
        page.screenshot(path=str(shots / "login.png"))
        page.fill("#token", ADMIN)
        page.click("#login-form button")
        page.wait_for_selector("#camera-list tr[data-camera=door]")
        # live numbers: people counted on the running camera show up without a reload
        people = "#camera-list tr[data-camera=door] .people"  # (CSP forbids eval, so poll from here)
        deadline = time.monotonic() + 30
        while int(page.text_content(people) or 0) == 0 and time.monotonic() < deadline:
            page.wait_for_timeout(250)
        assert int(page.text_content(people)) > 0
        page.wait_for_selector("#chart svg")
        # the chart follows the stored buckets live (redrawn on stats events), not only at page load
        page.wait_for_selector("#chart[data-redraws]", timeout=20000)
        assert int(page.get_attribute("#chart", "data-redraws")) >= 1
        # its compliance is drawn from the first bucket on (one minute so far: a point, later a line)
        # attached, not "visible": two points at one value draw a flat line, whose box Playwright counts as hidden
        page.wait_for_selector("#chart svg :is(circle, polyline)[data-camera=door]", state="attached")
        page.screenshot(path=str(shots / "overview.png"), full_page=True)
        for name, selector in (("events", "#events"), ("camera/door", "#live-view"), ("upload", "#drop"),
                               ("settings", "#camera-form"), ("alerts", "#rule-form")):  # fmt: skip
            page.goto(f"{base}/#/{name}")
            page.wait_for_selector(selector)
            if name == "events":  # snapshots on: the gallery shows each person's blurred view
                page.wait_for_selector("#events img.snap")
            page.wait_for_timeout(300)
            page.screenshot(path=str(shots / f"{name.replace('/', '-')}.png"), full_page=True)
        # upload
        page.goto(f"{base}/#/upload")
        page.set_input_files("#file", str(upload))
        page.wait_for_selector("#counts")
        assert "1 face" in page.text_content("#counts")
        assert page.get_attribute("#result img", "src").startswith("data:image/jpeg")
        page.screenshot(path=str(shots / "upload-result.png"), full_page=True)
        # a camera, then a rule it breaks, both added in the UI (a rule names a camera that exists)
        page.goto(f"{base}/#/settings")
        page.fill("#camera-form [name=name]", "gate")
        page.fill("#camera-form [name=url]", "rtsp://fake/gate")
        page.click("#camera-form button")
        page.wait_for_selector("#settings-cameras tr[data-camera=gate]")
        page.goto(f"{base}/#/alerts")
        page.wait_for_selector("#rule-form")
        page.fill("#rule-form [name=name]", "gate unmasked")
        page.select_option("#rule-form [name=kind]", "unmasked_person")
        page.select_option("#rule-form [name=camera]", "gate")
        page.click("#rule-form #rule-save")
        page.wait_for_selector("#rule-list >> text=gate unmasked")
        page.goto(f"{base}/#/")
        page.wait_for_selector("#camera-list tr[data-camera=gate] .state-live", timeout=20000)
        page.goto(f"{base}/#/alerts")
        page.wait_for_selector("#alert-list td.firing", timeout=30000)  # pushed by SSE, no reload
        page.screenshot(path=str(shots / "alert-firing.png"), full_page=True)
        page.click("#alert-list button.ack")
        page.wait_for_selector("#alert-list >> text=ack by admin")
        page.screenshot(path=str(shots / "alert-acknowledged.png"), full_page=True)
        browser.close()
    print(f"dashboard screenshots: {shots}")
    assert not errors, errors


# -- the fleet page: a real agent (in-process, fake models) and a published node status over a real broker ------


@pytest.fixture
def fleet_server(tmp_path):
    import uvicorn
    from fakes import fake_detector

    from maskwatch.fleet.broker import MosquittoBroker, find_mosquitto
    from maskwatch.service.app import create_app
    from maskwatch.service.core import FleetLink

    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto mosquitto-clients)")
    broker = MosquittoBroker(tmp_path / "broker", {"agent": "agent-secret", "control": "control-secret"})
    broker.start()
    settings = service_settings(tmp_path, alerts={"evaluate_every": 0.2})
    link = FleetLink(broker.url("control"), client_id="browser-ingest", state_every=0.5)
    app = create_app(settings, detector=fake_detector(), admin_token=ADMIN, fleet=link)
    service = app.state.service
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not (srv.started and service.fleet is not None and service.fleet.connected.is_set()):
        assert time.monotonic() < deadline, "the control room did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", service, broker
    srv.should_exit = True
    thread.join(15)
    broker.stop()


def test_fleet_page_shows_nodes_cameras_and_the_offline_alert(fleet_server, tmp_path, tmp_path_factory):
    """Node gate-a is a real agent (engine on fake models, two cameras on a video played in real time); node
    gate-b's last will (offline) is retained on the broker. The fleet page shows both nodes, gate-a's
    cameras with FPS, lag and compliance, then gate-a offline once its video ends; the built-in node-offline
    rule raises an alert for gate-b on the alerts page; a garbage message from gate-b is in the dead letters
    panel. No console error."""
    import json

    from fakes import fake_detector, make_video

    from maskwatch.fleet import topics
    from maskwatch.fleet.agent import Agent, AgentConfig
    from maskwatch.fleet.publisher import make_client
    from maskwatch.fleet.topics import BrokerURL
    from maskwatch.stream import EngineConfig, StreamEngine

    chromium, sync_playwright = _browser_or_skip()
    base, service, broker = fleet_server
    gone = {"schema": topics.NODE_SCHEMA, "node": "gate-b", "state": "offline", "time": time.time(),
            "reason": "connection lost (last will)"}  # fmt: skip
    url = BrokerURL.parse(broker.url("agent"))
    other = make_client(url, "gate-b-will")
    other.connect(url.host, url.port)
    other.loop_start()
    other.publish(topics.node_status("gate-b"), json.dumps(gone), qos=1, retain=True).wait_for_publish(5)
    other.publish(topics.camera_topic("gate-b", "door", "events"), b"not json", qos=1).wait_for_publish(5)
    other.disconnect()
    other.loop_stop()
    video = make_video(tmp_path / "walk.mp4", 200, people=2)  # 20 s in real time
    config = AgentConfig(broker=broker.url("agent"), node="gate-a", data_dir=str(tmp_path / "agent"),
                         engine={"stats_interval": 1.0, "camera_defaults": {"realtime": True}})  # fmt: skip
    agent = Agent(config, StreamEngine(fake_detector(), EngineConfig(stats_interval=1.0, stop_when_done=True)))
    runner = threading.Thread(target=agent.run, args=([("door", str(video)), ("hall", str(video))],), daemon=True)
    runner.start()
    shots = tmp_path_factory.mktemp("fleet-screenshots")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(f"{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        page.goto(base + "/")
        page.wait_for_selector("#login:not([hidden])")
        page.fill("#token", ADMIN)
        page.click("#login-form button")
        page.wait_for_selector("#camera-list")
        page.click("#nav a[href='#/fleet']")
        page.wait_for_selector("#fleet-nodes tr[data-node=gate-a] .state-online", timeout=20000)
        page.wait_for_selector("#fleet-nodes tr[data-node=gate-b] .state-offline")
        fps = "#fleet-nodes tr[data-camera='gate-a:door'] .fps"  # stored stats buckets reach the page
        deadline = time.monotonic() + 30
        while (page.text_content(fps) or "–") == "–" and time.monotonic() < deadline:
            page.wait_for_timeout(250)
        assert float(page.text_content(fps)) > 0
        assert page.text_content("#fleet-online") == "1" and page.text_content("#fleet-offline") == "1"
        assert "connected" in page.text_content("#fleet-ingest")
        page.wait_for_selector("#dead-letters tr.dead-letter[data-reason=json]")  # the garbage, kept with why
        assert "gate-b" in page.text_content("#dead-letters tr.dead-letter[data-reason=json]")
        page.screenshot(path=str(shots / "fleet.png"), full_page=True)
        runner.join(120)  # the video ends: the agent exits once its last event is acknowledged (slow when loaded)
        assert not runner.is_alive()
        page.wait_for_selector("#fleet-nodes tr[data-node=gate-a] .state-offline", timeout=20000)
        people = "#fleet-nodes tr[data-camera='gate-a:door'] .people"
        deadline = time.monotonic() + 20
        while int(page.text_content(people) or 0) == 0 and time.monotonic() < deadline:
            page.wait_for_timeout(250)
        assert int(page.text_content(people)) > 0
        assert "%" in page.text_content("#fleet-nodes tr[data-node=gate-a] .compliance")
        page.screenshot(path=str(shots / "fleet-offline.png"), full_page=True)
        service.alerts.evaluate(now=time.time() + 60)  # the built-in rule waits 30 s: move its clock on
        page.goto(f"{base}/#/alerts")
        page.wait_for_selector("#alert-list >> text=gate-b", timeout=10000)
        page.screenshot(path=str(shots / "fleet-alert.png"), full_page=True)
        browser.close()
    print(f"fleet screenshots: {shots}")
    assert not errors, errors


def test_an_admin_draws_a_privacy_zone_on_the_camera_page(server):
    chromium, sync_playwright = _browser_or_skip()
    base, service = server
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        page.goto(base + "/")
        page.wait_for_selector("#login:not([hidden])")
        page.fill("#token", ADMIN)
        page.click("#login-form button")
        page.wait_for_selector("#camera-list tr[data-camera=door]")
        page.goto(f"{base}/#/camera/door")
        page.wait_for_selector("#zone-layer.editable")
        # the layer moves until the page is laid out: the cards below it are added, the live view above it
        # and the frame under it take their sizes when their first images arrive (a slow first MJPEG frame
        # pushed the layer down after it was measured, and the clicks missed it)
        page.wait_for_selector("#camera-alerts")
        for image in ("#live-view", "#zone-frame"):  # polled here: the page's CSP forbids wait_for_function's eval
            loaded = wait_until(lambda image=image: page.locator(image).evaluate("i => i.naturalWidth") > 0, timeout=30)
            assert loaded, f"{image} has no image after 30 s"
        layer = page.locator("#zone-layer")
        for fx, fy in ((0.5, 0.0), (1.0, 0.0), (1.0, 0.5), (0.5, 0.5)):  # the top-right quarter
            # relative to the layer where it is at each click (Playwright waits until it stops moving): a page
            # coordinate measured once missed it when a late layout change moved the layer after measuring
            box = layer.bounding_box()
            assert box is not None and box["width"] > 50
            layer.click(position={"x": min(fx, 0.999) * box["width"], "y": max(fy, 0.001) * box["height"]})
        page.wait_for_selector("#zone-count:has-text('4 corner(s) drawn')")
        page.click("#zone-close")
        page.click("#zone-save")
        page.wait_for_selector("#zone-status:has-text('Saved 1 zone')")
        browser.close()
    (zone,) = service.storage.cameras.get("door").privacy_zones
    assert len(zone) == 4
    assert zone[0] == pytest.approx([0.5, 0.001], abs=0.01) and zone[2] == pytest.approx([0.999, 0.5], abs=0.01)
    assert errors == []
