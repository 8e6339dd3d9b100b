"""Installed size of the three installs, dependency by dependency, each in a fresh virtual environment.

    .venv/bin/python benchmarks/bench_footprint.py --json benchmarks/results/footprint.json   # ~6 min

Builds the project's wheel (from a clean copy of the packaging inputs, as ``tests/test_lean_install.py`` does),
then installs it into a new venv per install, its dependencies from the package index as a user's would:

* ``base``: ``pip install maskwatch`` (detect, evaluate, bench on ONNX models);
* ``edge``: ``pip install 'maskwatch[edge]'`` (the agent: tracking + MQTT, no torch), target <= 400 MB;
* ``serve``: ``pip install 'maskwatch[serve]'`` (the monitoring service, with tracking; no torch);
* ``full``: ``pip install 'maskwatch[full]'`` (training, explaining, the service; torch from this machine's
  local wheels).

Sizes are bytes on disk of each distribution's files (its RECORD, bytecode included; ``maskwatch.doctor.
installed_footprint``), pip, setuptools, wheel and build not counted. The venvs are kept under ``--work``
(``runs/footprint/``), so ``benchmarks/bench_memory.py`` can run the agent of the edge install.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
INSTALLS = {"base": "", "edge": "[edge]", "serve": "[serve]", "full": "[full]"}
EDGE_TARGET_MB = 400


def build_wheel(work: Path) -> Path:
    """The project's wheel, built without isolation by this interpreter's setuptools from a clean copy."""
    source, dist = work / "src-copy", work / "dist"
    shutil.rmtree(source, ignore_errors=True)
    shutil.rmtree(dist, ignore_errors=True)
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    shutil.copytree(ROOT / "models", source / "models")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(source)], check=True)  # fmt: skip
    return next(dist.glob("maskwatch-*.whl"))


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def make_venv(folder: Path, wheel: Path, extra: str) -> tuple[Path, float]:
    """A fresh venv at ``folder`` with ``wheel{extra}`` installed; its python and the install's seconds."""
    shutil.rmtree(folder, ignore_errors=True)
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(folder)], check=True)
    python = folder / "bin" / "python"
    start = time.perf_counter()
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"{wheel}{extra}"], check=True, env=clean_env())
    return python, time.perf_counter() - start


def footprint(python: Path) -> dict[str, Any]:
    script = "import json; from maskwatch.doctor import installed_footprint as f; print(json.dumps(f().to_dict()))"
    done = subprocess.run([str(python), "-c", script], check=True, capture_output=True, text=True, env=clean_env())
    return json.loads(done.stdout)


def mb(value: int) -> float:
    return round(value / 1e6, 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "footprint", help="where the venvs are made (kept)")
    p.add_argument("--installs", default=",".join(INSTALLS), help="which installs (comma-separated)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    wheel = build_wheel(args.work)
    result: dict[str, Any] = {
        "command": " ".join(["benchmarks/bench_footprint.py", *(argv if argv is not None else sys.argv[1:])]),
        "python": sys.version.split()[0],
        "wheel": {"file": wheel.name, "mb": mb(wheel.stat().st_size)},
        "unit": "MB = 10^6 bytes on disk (file sizes), pip/setuptools/wheel/build not counted",
        "installs": {},
    }
    for name in [n.strip() for n in args.installs.split(",") if n.strip()]:
        python, seconds = make_venv(args.work / name, wheel, INSTALLS[name])
        data = footprint(python)
        entry = {
            "pip_install": f"pip install 'maskwatch{INSTALLS[name]}'",
            "total_mb": mb(data["total_bytes"]),
            "by_distribution_mb": {k: mb(v) for k, v in data["by_distribution"].items()},
            "unclaimed_mb": mb(data["unclaimed_bytes"]),
            "not_counted_mb": {k: mb(v) for k, v in data["left_out"].items()},
            "install_seconds": round(seconds, 1),
            "distributions": len(data["by_distribution"]),
        }
        if name == "edge":
            entry["target_mb"] = EDGE_TARGET_MB
            entry["target_met"] = entry["total_mb"] <= EDGE_TARGET_MB
        result["installs"][name] = entry
        top = ", ".join(f"{k} {v}" for k, v in list(entry["by_distribution_mb"].items())[:8])
        print(f"[{name}] {entry['total_mb']} MB in {entry['distributions']} distributions: {top}", flush=True)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
