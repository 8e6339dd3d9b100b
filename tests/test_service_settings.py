"""Serve settings: the commented example is complete and loads, typos get a "did you mean", types are
checked, environment and CLI layers override the file, and `maskwatch serve --check` reports errors with
exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from maskwatch.core.errors import ConfigError
from maskwatch.core.redaction import redact
from maskwatch.service.settings import ServiceSettings, load_settings

EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "serve.yaml"


def _keys(model, prefix=""):
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and hasattr(sub, "model_fields"):
            yield from _keys(sub, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def test_example_config_loads_and_names_every_setting():
    settings = load_settings(EXAMPLE, env={})
    assert settings == ServiceSettings()  # the example shows the defaults
    text = EXAMPLE.read_text()
    for key in _keys(ServiceSettings):
        assert f"{key.split('.')[-1]}:" in text, f"{key} is not documented in configs/serve.yaml"


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("server:\n  prot: 9000\n", "did you mean 'port'"),
    ("limts:\n  upload_bytes: 5\n", "did you mean 'limits'"),
    ("cameras:\n  - name: a\n    url: x\n    enabeld: true\n", "cameras[0].enabeld"),
    (
        "alerts:\n  rules:\n    - name: r\n      kind: compliance_below\n      treshold: 0.5\n",
        "did you mean 'threshold'",
    ),
    ("server:\n  port: lots\n", "server.port"),
    ("cameras:\n  - name: ../x\n    url: x\n", "camera names"),
    ("cameras:\n  - {name: a, url: x}\n  - {name: a, url: y}\n", "duplicate"),
    ("alerts:\n  rules:\n    - {name: r, kind: camera_offline, active_hours: '9-5'}\n", "HH:MM-HH:MM"),
    ("- just\n- a list\n", "mapping"),
])  # fmt: skip
def test_config_errors_say_what_and_where(tmp_path, yaml_text, message):
    path = tmp_path / "serve.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=None) as info:
        load_settings(path, env={})
    assert message in str(info.value)


def test_layers_env_then_overrides(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("server:\n  port: 9000\n  db: sqlite:///from-file.db\n")
    env = {"MASKWATCH_DB": "postgresql://u@h/db"}
    s = load_settings(path, env=env, overrides={"server": {"port": 9100, "host": None}})
    assert (s.server.port, s.server.db, s.server.host) == (9100, "postgresql://u@h/db", "127.0.0.1")
    assert load_settings(env={"MASKWATCH_DATA_DIR": str(tmp_path)}).db_url.startswith(f"sqlite:///{tmp_path}")


def test_credentials_are_redacted():
    redacted = redact("cannot open rtsp://admin:pw@10.0.0.5/s1 (timeout)")
    assert redacted == "cannot open rtsp://***@10.0.0.5/s1 (timeout)"
    assert redact("webcam:0") == "webcam:0"


def test_serve_check_exits_2_on_a_typo(tmp_path):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from typer.testing import CliRunner

    from maskwatch.cli import app

    bad = tmp_path / "serve.yaml"
    bad.write_text("privacy:\n  blur_face: false\n")
    result = CliRunner().invoke(app, ["serve", "--config", str(bad), "--check"])
    assert result.exit_code == 2 and "did you mean 'blur_faces'" in result.output
    ok = CliRunner().invoke(app, ["serve", "--config", str(EXAMPLE), "--check", "--port", "8123"])
    assert ok.exit_code == 0 and "port: 8123" in ok.output


def test_serve_check_hides_every_credential(tmp_path):
    """The database URL (a password with '@' in it), camera URLs and webhooks: none is printed."""
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from typer.testing import CliRunner

    from maskwatch.cli import app

    config = tmp_path / "serve.yaml"
    config.write_text(
        "cameras:\n  - name: door\n    url: rtsp://cam:s3cr@t-cam@10.0.0.5/stream\n"
        "alerts:\n  rules:\n    - name: low\n      kind: compliance_below\n      threshold: 0.8\n"
        "      webhook_url: https://hooks.example/x?token=hook-t0ken\n      webhook_secret: hmac-key\n"
    )
    db = "postgresql://maskwatch:db-p@ss@db.local:5432/maskwatch"
    result = CliRunner().invoke(app, ["serve", "--config", str(config), "--db", db, "--check"])
    assert result.exit_code == 0, result.output
    for secret in ("db-p@ss", "p@ss", "s3cr@t", "hook-t0ken", "hmac-key"):
        assert secret not in result.output, secret
    assert "db.local:5432/maskwatch" in result.output and "10.0.0.5/stream" in result.output
