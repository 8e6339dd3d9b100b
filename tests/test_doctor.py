"""``maskwatch doctor`` and the bundled models it reports: real models, a real Mosquitto and SQLite file, the CLI
as a user runs it (exit codes, one-line errors, ``--json -``)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from maskwatch import bundled
from maskwatch.cli import app
from maskwatch.commands.common import run_app
from maskwatch.fleet.broker import MosquittoBroker, find_mosquitto, free_port

ROOT = Path(__file__).resolve().parents[1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def doctor_json(capsys, *args: str) -> tuple[int, dict]:
    code = run_app(app, ["doctor", "--json", "-", *args])
    out, err = capsys.readouterr()
    return code, json.loads(out) | {"_stderr": err}


@pytest.fixture
def broker(tmp_path):
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto mosquitto-clients; scripts/setup.sh does)")
    b = MosquittoBroker(tmp_path / "broker", {"node": "secret"})
    b.start()
    yield b
    b.stop()


def test_doctor_reports_cpu_models_extras_and_the_services_it_was_given(capsys, tmp_path, broker):
    db = tmp_path / "service.db"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE events (id TEXT)")
    code, report = doctor_json(capsys, "--broker", broker.url(), "--db", f"sqlite:///{db}")
    assert code == 0, report["_stderr"]
    assert isinstance(report["cpu"]["vnni"], bool) and report["cpu"]["logical_cpus"] >= 1
    assert report["advice"]["preset"] in ("fast", "balanced")
    assert report["advice"]["preset"] == "fast" or not report["cpu"]["vnni"]
    models = {m["role"]: m for m in report["models"]}
    assert {"classifier", "face_detector_int8"} <= set(models)
    for model in models.values():  # each one loaded, with the sha256 of the very file
        assert model["loaded"] and model["ok"] and model["sha256"] == sha256(Path(model["path"]))
    assert models["face_detector_int8"]["precision"] == "int8"
    extras = {e["name"]: e for e in report["extras"]}
    assert {"edge", "video", "fleet", "serve", "train", "full"} <= set(extras)
    assert extras["edge"]["installed"] and not extras["edge"]["missing"]
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["broker"]["ok"] is True and checks["broker"]["explicit"]
    assert "secret" not in checks["broker"]["target"]  # the password never shows
    assert checks["database"]["ok"] is True and "1 tables" in checks["database"]["detail"]
    assert report["problems"] == []


def test_doctor_exits_1_when_a_named_broker_or_database_does_not_answer(capsys, tmp_path):
    port = free_port()  # nothing listens there
    missing_db = tmp_path / "not-a-db.db"
    missing_db.write_bytes(b"this is not SQLite" * 100)
    code = run_app(app, ["doctor", "--broker", f"mqtt://127.0.0.1:{port}", "--db", f"sqlite:///{missing_db}"])
    err = capsys.readouterr().err
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: 2 check(s) failed") and f"127.0.0.1:{port}" in last and "Traceback" not in err
    # the defaults are reported, but a local broker that is not running is no failure
    code, report = doctor_json(capsys)
    assert code == 0 and report["checks"][0]["explicit"] is False


def test_doctor_usage_errors_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["doctor", "--model", str(tmp_path / "none.onnx")])
    assert result.exit_code == 2 and "error: --model" in result.output


def test_without_torch_the_int8_export_is_the_default_classifier(monkeypatch):
    monkeypatch.delenv("MASKWATCH_MODEL", raising=False)
    checkpoint = ROOT / "models" / bundled.BUNDLED_NAME
    int8 = ROOT / "models" / bundled.BUNDLED_INT8_NAME
    if not (checkpoint.is_file() and int8.is_file()):
        pytest.skip("the bundled model files are not in models/")
    monkeypatch.setattr(bundled, "torch_installed", lambda: True)
    assert bundled.default_model_path() == checkpoint  # a development checkout with torch: the checkpoint
    monkeypatch.setattr(bundled, "torch_installed", lambda: False)
    assert bundled.default_model_path() == int8  # no torch: the INT8 export, runnable with onnxruntime alone
    from maskwatch.detection.pipeline import MaskDetector

    detector = MaskDetector.load(preset="fast")  # the INT8 export is then the one classifier, loaded once
    assert detector.int8_classifier is None and detector.classifier.backend == "onnx-int8"
    assert detector.classifier_precision == "int8"


def test_a_packaged_model_that_differs_from_the_manifest_is_refused(monkeypatch, tmp_path):
    """What a wheel install does: the manifest written at build time is checked at load time."""
    assets = tmp_path / "assets"
    assets.mkdir()
    shutil.copy(ROOT / "src" / "maskwatch" / "assets" / "centerface-int8.onnx", assets)
    int8 = ROOT / "models" / bundled.BUNDLED_INT8_NAME
    if not int8.is_file():
        pytest.skip("models/ has no INT8 export")
    shutil.copy(int8, assets)
    manifest = json.loads(bundled.write_manifest(assets).read_text())
    assert {m["file"]: m["sha256"] for m in manifest["models"]} == {
        "centerface-int8.onnx": sha256(assets / "centerface-int8.onnx"),
        bundled.BUNDLED_INT8_NAME: sha256(int8),
    }
    monkeypatch.setattr(bundled, "_ASSETS", assets)
    monkeypatch.setattr(bundled, "_CHECKOUT_MODELS", tmp_path / "no-checkout")
    monkeypatch.setattr(bundled, "torch_installed", lambda: False)
    monkeypatch.delenv("MASKWATCH_MODEL", raising=False)
    assert bundled.default_model_path() == assets / bundled.BUNDLED_INT8_NAME
    assert all(m.verified for m in bundled.bundled_models())
    data = bytearray((assets / bundled.BUNDLED_INT8_NAME).read_bytes())
    data[-100] ^= 0xFF  # one flipped byte
    (assets / bundled.BUNDLED_INT8_NAME).write_bytes(bytes(data))
    with pytest.raises(bundled.BundledModelError, match="reinstall maskwatch"):
        bundled.default_model_path()
    assert [m.verified for m in bundled.bundled_models() if m.role == "classifier"] == [False]


def test_the_detector_file_name_agrees_with_the_detector_module():
    from maskwatch.detection.centerface import INT8_MODEL_FILE

    assert bundled.DETECTOR_INT8_NAME == INT8_MODEL_FILE
