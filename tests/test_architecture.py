"""ARCHITECTURE.md's import rules, enforced on every import in src/ (module level and inside functions)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "maskwatch"

# the layer of every top-level module or package of maskwatch (ARCHITECTURE.md)
LAYERS: dict[str, int] = {
    "core": 0,
    "data": 1,
    "preprocess": 1,
    "metrics": 1,
    "plotting": 1,
    "paths": 1,
    "bundled": 1,
    "camera_color": 1,
    "runtime": 2,
    "models": 2,
    "checkpoint": 2,
    "calibration": 5,
    "feature_cache": 2,
    "config": 2,
    "provenance": 2,
    "detection": 3,
    "stream": 4,
    "training": 5,
    "evaluate": 5,
    "explain": 5,
    "report": 5,
    "mining": 5,
    "bench": 5,
    "robustness": 5,
    "doctor": 5,
    "service": 5,
    "fleet": 5,
    "commands": 6,
    "cli": 6,
    "__main__": 6,
}
# packages that must not import each other although they share a layer (rule 3 and 4)
FORBIDDEN: dict[str, set[str]] = {
    "runtime": {"config", "training", "data.datasets"},
    "detection": {"config", "training"},
    "stream": {"config", "training", "service", "fleet", "commands"},
    "service": {"config", "training", "commands", "cli"},
    "fleet": {"config", "training", "commands", "cli", "service"},
}
HEAVY = ("cv2", "onnxruntime", "torch", "torchvision")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported maskwatch module, line, at module level) for every import in a file; TYPE_CHECKING blocks
    are left out (they import nothing at run time)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    visit(sub, top)
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, top) for a in child.names if a.name.startswith("maskwatch"))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    module = ".".join([*base, child.module] if child.module else base)
                else:
                    module = child.module or ""
                if module.startswith("maskwatch"):
                    found.append((module, child.lineno, top))
            nested = top and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, nested)

    visit(tree, True)
    return found


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _all_imports() -> list[tuple[str, str, int]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = _module_name(path)
        for module, line, _ in _imports(path):
            out.append((importer, module, line))
    return out


def test_every_module_has_a_layer() -> None:
    tops = {_top(_module_name(p)) for p in PACKAGE.rglob("*.py")} - {""}
    assert not tops - set(LAYERS), f"add these to ARCHITECTURE.md and LAYERS: {sorted(tops - set(LAYERS))}"


def test_no_module_imports_from_a_higher_layer() -> None:
    bad = []
    for importer, module, line in _all_imports():
        a, b = _top(importer), _top(module)
        if a and b and LAYERS[b] > LAYERS[a]:
            bad.append(f"{importer}:{line} imports {module} (layer {LAYERS[a]} -> {LAYERS[b]})")
    assert not bad, "\n".join(bad)


def test_forbidden_neighbours() -> None:
    bad = []
    for importer, module, line in _all_imports():
        a = _top(importer)
        for banned in FORBIDDEN.get(a, ()):
            if module == f"maskwatch.{banned}" or module.startswith(f"maskwatch.{banned}."):
                bad.append(f"{importer}:{line} imports {module}")
    assert not bad, "\n".join(bad)


def test_core_imports_only_core_and_nothing_heavy_at_module_level() -> None:
    bad = []
    for path in sorted((PACKAGE / "core").rglob("*.py")):
        for module, line, _ in _imports(path):
            if not module.startswith("maskwatch.core"):
                bad.append(f"{path.name}:{line} imports {module}")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:  # module level only: a function may import OpenCV when called
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            bad += [f"{path.name}:{node.lineno} imports {n} at module level" for n in names if n.split(".")[0] in HEAVY]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "module", ["maskwatch", "maskwatch.core.events", "maskwatch.core.contract", "maskwatch.core.settings"]
)
def test_light_imports_load_no_vision_or_ml_runtime(module: str) -> None:
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", f"importing {module} loaded {out.stdout.strip()}"


def test_bundled_module_stands_alone_for_setup_py() -> None:
    """setup.py loads ``maskwatch/bundled.py`` by its path while building a wheel, before the package can be
    imported: the file may import nothing from maskwatch at module level."""
    bad = [f"bundled.py:{line} imports {module}" for module, line, top in _imports(PACKAGE / "bundled.py") if top]
    assert not bad, "\n".join(bad)
