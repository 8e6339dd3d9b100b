"""The self-contained HTML insight report (``maskwatch evaluate --report``, ``maskwatch report RUN_DIR``)."""

from __future__ import annotations

__all__ = ["ReportResult", "build_report", "report_for_run"]


def __getattr__(name: str):
    # Keep `import maskwatch.report` light; the builder imports torch and matplotlib.
    if name in __all__:
        from maskwatch.report import build

        return getattr(build, name)
    raise AttributeError(name)
