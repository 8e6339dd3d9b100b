"""Issue 22, the command line: ``evaluate-detection`` says how far it is when its output is not a terminal (a
log, a pipe: a live bar prints nothing there, and a full run takes minutes), and the ``serve`` banner never
breaks a URL across lines."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys

import pytest
from test_detection_eval import _split_voc, fake_load  # noqa: F401 (a fixture)


def test_evaluate_detection_prints_progress_lines_when_not_a_terminal(tmp_path, fake_load):  # noqa: F811
    from typer.testing import CliRunner

    from maskwatch.cli import app

    data, _ = _split_voc(tmp_path)
    out = tmp_path / "m.json"
    res = CliRunner().invoke(app, ["evaluate-detection", "--data", str(data), "--json", str(out), "--preset", "fast"])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("evaluate-detection:")]
    assert lines[0] == "evaluate-detection: started", res.output  # at once, before the first image
    assert any(line.startswith("evaluate-detection: 3/3 images (100 %)") for line in lines), res.output
    assert all("images/s" in line for line in lines[1:])
    quiet = CliRunner().invoke(app, ["evaluate-detection", "--data", str(data), "--json", str(out), "--no-progress"])
    assert quiet.exit_code == 0 and "evaluate-detection:" not in quiet.output


@pytest.mark.slow  # a real process; seconds on an idle machine
def test_serve_banner_keeps_every_url_on_one_line(tmp_path):
    """A real ``maskwatch serve`` on a port already taken: it prints its banner, then exits 1 (the port); the
    banner's URLs are whole lines at the 80 columns of a log, even with a long data folder."""
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = tmp_path / ("a-rather-long-folder-name-for-the-service-data-" * 2) / "data"
        token = secrets.token_urlsafe(32)  # strong enough for auth.min_token_bits
        env = {**os.environ, "MASKWATCH_OFFLINE": "1", "COLUMNS": "80", "MASKWATCH_ADMIN_TOKEN": token}
        cmd = [
            sys.executable,
            "-m",
            "maskwatch.cli",
            "serve",
            "--port",
            str(port),
            "--no-demo",
            "--data-dir",
            str(data),
        ]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    base = f"http://127.0.0.1:{port}/"
    lines = output.splitlines()
    assert f"  dashboard  {base}" in lines, output
    assert any(line.startswith(f"  API        {base}api/v1  (OpenAPI: {base}docs)") for line in lines), output
    assert f"  data       {data}" in lines, output
