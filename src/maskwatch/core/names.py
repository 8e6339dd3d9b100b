"""Names of cameras, nodes and jobs: one rule, one length, everywhere they are checked or stored.

A camera name is also an MQTT topic level and part of a database key (``node:camera`` for a remote
camera), so it is short and plain: letters, digits, ``_ . -``, starting with a letter or digit.

A job id is the service's own (12 hex digits today) and a path level: :data:`JOB_ID` (letters, digits,
``_ -``, at most :data:`MAX_JOB_ID`) says which ids any job can have, so an impossible one is never looked up."""

from __future__ import annotations

import re

__all__ = [
    "CAMERA_NAME",
    "JOB_ID",
    "MAX_JOB_ID",
    "MAX_NAME",
    "MAX_QUALIFIED_NAME",
    "NAME_PATTERN",
    "NODE_SEPARATOR",
    "check_name",
    "is_job_id",
    "is_name",
    "qualified",
    "split_qualified",
]

MAX_NAME = 64  # a camera's or a node's name
NODE_SEPARATOR = ":"
MAX_QUALIFIED_NAME = 2 * MAX_NAME + len(NODE_SEPARATOR)  # ``node:camera``: what storage columns must hold
NAME_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_NAME - 1}}}$"
CAMERA_NAME = re.compile(NAME_PATTERN)
MAX_JOB_ID = 32  # the jobs table's key length
JOB_ID = re.compile(rf"^[A-Za-z0-9_-]{{1,{MAX_JOB_ID}}}$")


def is_name(value: object) -> bool:
    return isinstance(value, str) and CAMERA_NAME.match(value) is not None


def is_job_id(value: object) -> bool:
    return isinstance(value, str) and JOB_ID.match(value) is not None


def check_name(value: str, what: str = "name") -> str:
    """``value`` when it is a valid name; else ValueError saying the rule."""
    if not is_name(value):
        raise ValueError(
            f"{what} {value!r} is not valid: 1-{MAX_NAME} letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return value


def qualified(node: str, camera: str) -> str:
    """A remote camera's name in the control room: ``node:camera``."""
    return f"{check_name(node, 'node')}{NODE_SEPARATOR}{check_name(camera, 'camera')}"


def split_qualified(name: str) -> tuple[str | None, str]:
    """``("node", "camera")`` for ``node:camera``; ``(None, name)`` for a local camera."""
    node, sep, camera = name.partition(NODE_SEPARATOR)
    return (node, camera) if sep else (None, name)
