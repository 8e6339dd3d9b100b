"""Where maskwatch looks for the project's shared data when no path is given."""

from __future__ import annotations

import os
from pathlib import Path


def shared_data_dir() -> Path:
    """``$MASKWATCH_SHARED_DATA``, else ``../shared/data`` beside a source checkout, else beside the cwd."""
    override = os.environ.get("MASKWATCH_SHARED_DATA")
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parents[2]
    for base in (checkout, Path.cwd()):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return checkout.parent / "shared" / "data"
