"""Errors that cross layers: every layer raises them and the CLI, the service and the agent map them to
exit codes and HTTP answers. Domain errors that stay inside one package live there."""

from __future__ import annotations

__all__ = ["ConfigError", "MaskwatchError"]


class MaskwatchError(Exception):
    """Base of maskwatch's own errors (the CLI prints their message as one line, no traceback)."""


class ConfigError(MaskwatchError, ValueError):
    """A configuration value or key is invalid; the message says which and why."""
