"""No secret in the logs, the command lines or the environment of real processes: ``maskwatch serve`` with
PostgreSQL (its URL, password included, from ``$MASKWATCH_DB_FILE``) and MQTT ingest (the broker password
from ``$MASKWATCH_MQTT_PASSWORD_FILE``), and a ``maskwatch agent`` (its password from the same kind of
file), on a real Mosquitto with a password file and a throwaway PostgreSQL server. The first start's admin
token goes to a mode-600 file and, the output not being a terminal, nowhere else."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("paho.mqtt", reason="the edge extra is not installed")

import conftest_service
from fakes import make_video

from maskwatch.fleet.broker import MosquittoBroker, find_mosquitto, free_port

pytestmark = pytest.mark.slow

pg_server = conftest_service.pg_server  # the fixture
CLI = [sys.executable, "-c", "from maskwatch.cli import main; main()"]
DB_SECRET = "Db-s3cret'@pw"
CONTROL_SECRET = "control-s3cret-pw"
AGENT_SECRET = "agent-s3cret-pw"


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _listing(pid: int) -> str:
    """What ``ps`` shows of a process tree: command lines, and (``ps e``) environments."""
    text = []
    for p in _descendants(pid):
        for name in ("cmdline", "environ"):
            with contextlib.suppress(OSError):
                raw = (Path("/proc") / str(p) / name).read_bytes()
                text.append(raw.replace(b"\0", b" ").decode(errors="replace"))
    return "\n".join(text)


def test_no_secret_in_logs_command_lines_or_environments_of_serve_and_agent(tmp_path, pg_server):
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto mosquitto-clients)")
    broker = MosquittoBroker(tmp_path / "broker", {"control": CONTROL_SECRET, "agent": AGENT_SECRET})
    broker.start()
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(mode=0o700)
    password = DB_SECRET.replace("@", "%40")  # (the PostgreSQL server trusts 127.0.0.1: any password works)
    db_url = pg_server.create_db().replace("postgresql://postgres@", f"postgresql://postgres:{password}@")
    files = {"db": db_url, "control": CONTROL_SECRET, "agent": AGENT_SECRET}
    for name, value in files.items():
        (secrets_dir / name).write_text(value + "\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith("MASKWATCH_")} | {"MASKWATCH_OFFLINE": "1"}
    data = tmp_path / "control"
    port = free_port()
    serve_env = base | {"MASKWATCH_DB_FILE": str(secrets_dir / "db"),
                        "MASKWATCH_MQTT_PASSWORD_FILE": str(secrets_dir / "control")}  # fmt: skip
    agent_env = base | {"MASKWATCH_MQTT_PASSWORD_FILE": str(secrets_dir / "agent")}
    video = make_video(tmp_path / "door.mp4", 200, fps=10)
    (tmp_path / "agent.yaml").write_text(
        "engine:\n  stats_interval: 1.0\n  camera_defaults:\n    realtime: true\n    loop: true\n"
    )
    mqtt = f"mqtt://control@127.0.0.1:{broker.port}"
    logs = {name: tmp_path / f"{name}.log" for name in ("serve", "agent", "check")}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        with logs["check"].open("wb") as out:
            checked = subprocess.run([*CLI, "serve", "--check", "--no-demo", "--data-dir", str(data)], env=serve_env,
                                     stdout=out, stderr=subprocess.STDOUT, timeout=120)  # fmt: skip
        assert checked.returncode == 0, logs["check"].read_text()
        with logs["serve"].open("wb") as out:
            procs["serve"] = subprocess.Popen(
                [*CLI, "serve", "--no-demo", "--port", str(port), "--data-dir", str(data), "--mqtt", mqtt,
                 "--mqtt-id", "control-room"], env=serve_env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        with logs["agent"].open("wb") as out:
            procs["agent"] = subprocess.Popen(
                [*CLI, "agent", "--config", str(tmp_path / "agent.yaml"), "--broker",
                 f"mqtt://agent@127.0.0.1:{broker.port}", "--node", "n1", "--camera", f"door={video}",
                 "--data-dir", str(tmp_path / "agent")],
                env=agent_env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip

        def node_online() -> bool:
            try:
                state = json.loads((data / "fleet.json").read_text())
            except (OSError, ValueError):
                return False
            return state["connected"] and state["nodes"].get("n1", {}).get("state") == "online"

        deadline = time.monotonic() + 120
        while not node_online() and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs.values()), {k: v.read_text()[-2000:] for k, v in logs.items()}
            time.sleep(0.5)
        assert node_online(), {k: v.read_text()[-2000:] for k, v in logs.items()}  # both passwords worked
        token_file = data / "admin-token"
        assert (token_file.stat().st_mode & 0o777) == 0o600
        token = token_file.read_text().strip()
        listings = {name: _listing(p.pid) for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.stop()
    texts = {name: path.read_text(errors="replace") for name, path in logs.items()}
    texts |= {f"ps {name}": text for name, text in listings.items()}
    for where, text in texts.items():
        for secret in (DB_SECRET, DB_SECRET.replace("@", "%40"), CONTROL_SECRET, AGENT_SECRET, token):
            assert secret not in text, f"a secret in {where}"
    assert "admin-token" in texts["serve"]  # the log says where the token is, not what it is
    assert "postgres:***@" in texts["check"] or "***@127.0.0.1" in texts["check"]


def test_docs_render_in_chromium_under_the_content_policy(tmp_path):
    """Swagger UI from the installed assets works under the dashboard's content policy: every operation is
    listed and Chromium reports no policy violation and no request outside the service."""
    from test_service_browser import CHROMIUM_ARGS, _browser_or_skip

    chromium, sync_playwright = _browser_or_skip()
    import socket
    import threading

    import uvicorn
    from conftest_service import ADMIN, service_settings
    from fakes import fake_detector

    from maskwatch.service.app import create_app

    app = create_app(service_settings(tmp_path), detector=fake_detector(), admin_token=ADMIN)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not srv.started and time.monotonic() < deadline:
            time.sleep(0.05)
        messages: list[str] = []
        hosts: set[str] = set()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.on("console", lambda m: messages.append(m.text))
            page.on("request", lambda r: hosts.add(r.url.split("/")[2]))
            page.goto(f"http://127.0.0.1:{port}/docs")
            page.wait_for_selector(".opblock", timeout=30_000)
            operations = page.locator(".opblock").count()
            browser.close()
        assert operations >= 40
        assert not [m for m in messages if "Content Security Policy" in m], messages
        assert hosts == {f"127.0.0.1:{port}"}
    finally:
        srv.should_exit = True
        thread.join(15)
