"""maskwatch: train, evaluate, explain and deploy a face-mask classifier.

The top-level import stays light (no torch): heavy modules load on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"
