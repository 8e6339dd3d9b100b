"""One redactor for credentials in URLs, DSNs and free text (logs, names, error messages, ``--check``)."""

from __future__ import annotations

import re

__all__ = ["REDACTED", "redact"]

REDACTED = "***"

# scheme://userinfo@host...: the user info runs to the *last* "@" before the authority ends ("/", "?", "#" or
# whitespace), so a password holding a raw "@", a quote or "<" (``rtsp://cam:p@s's@host``) is hidden whole
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#]*@")
# key=value secrets in DSNs and query strings (``password=...``, ``?token=...``)
_KEY_VALUE = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?token)\s*[=:]\s*)(?P<value>[^\s&;,]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with every URL's ``user:password@`` replaced by ``***@`` and every ``password=``/``token=``
    value by ``***``. Correct for any password, including ones that hold ``@``, ``:`` or ``%``."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    return _KEY_VALUE.sub(lambda m: f"{m.group('key')}{REDACTED}", text)
