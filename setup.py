"""One packaging step beyond pyproject.toml: the wheel carries the analysis models that live in ``models/``.

``models/`` is where the bundled classifier is made and replaced (its torch checkpoint, for training, and its
INT8 ONNX export, for analysis). A wheel built from a checkout or from the sdist copies the INT8 export into
``maskwatch/assets/`` beside the shipped INT8 face detector, and writes ``maskwatch/assets/models.json`` with
each packaged model's sha256 (:mod:`maskwatch.bundled` reads it and checks the files against it). So the wheel
always holds the file that is in ``models/`` at build time, never a stale hand-made copy. The torch checkpoint
stays out of the wheel. An editable install (``pip install -e .``) copies nothing: it reads ``models/`` in place.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _bundled_module():
    """``src/maskwatch/bundled.py`` alone (it imports nothing heavy): the file names and the manifest writer."""
    spec = importlib.util.spec_from_file_location("_maskwatch_bundled", ROOT / "src" / "maskwatch" / "bundled.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look the module up
    spec.loader.exec_module(module)
    return module


class BuildPyWithModels(build_py):
    """``build_py``, then the models of ``models/`` copied into the built package with their manifest."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        bundled = _bundled_module()
        assets = Path(self.build_lib) / "maskwatch" / "assets"
        for name in bundled.MODELS_TO_PACKAGE:
            source = ROOT / "models" / name
            if not source.is_file():
                raise SystemExit(f"models/{name} is missing: the wheel must carry it (see setup.py)")
            shutil.copyfile(source, assets / name)
        bundled.write_manifest(assets)


setup(cmdclass={"build_py": BuildPyWithModels})
