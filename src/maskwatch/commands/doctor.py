"""``maskwatch doctor``: what this install can do on this machine (the work is in :mod:`maskwatch.doctor`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from maskwatch.commands.common import EXIT_FAILED, check_output_path, console, fail, is_stdout, write_json

if TYPE_CHECKING:
    from maskwatch.doctor import DoctorReport


def _mark(ok: bool | None) -> str:
    return {True: "[green]ok[/]", False: "[red]FAILED[/]", None: "[yellow]-[/]"}[ok]


def doctor(
    json_out: Optional[str] = typer.Option(
        None, "--json", help="Write the report as JSON to this file (- for stdout)."
    ),
    broker: Optional[str] = typer.Option(
        None,
        "--broker",
        help="MQTT broker to check (mqtt://USER:PASS@HOST:PORT); a failure then exits 1.",
        show_default="mqtt://127.0.0.1:1883, reported only",
    ),
    db: Optional[str] = typer.Option(
        None,
        "--db",
        help="Database to check (sqlite:///FILE or postgresql://...); a failure then exits 1.",
        show_default="$MASKWATCH_DB, else the service's SQLite file, reported only",
    ),
    model: Optional[Path] = typer.Option(None, "--model", help="Classifier to load.", show_default="bundled"),
) -> None:
    """Check this install: CPU features (VNNI or not) and the preset they call for, the models it loads (with
    sha256), the extras installed, and whether the broker and the database answer. Exit 1 when a model does not
    load or a --broker / --db given does not answer."""
    from maskwatch.doctor import run_doctor

    check_output_path(json_out, "file", option="--json", stdout_ok=True)
    if model is not None and not model.is_file():
        fail(f"--model {model}: no such file")
    report = run_doctor(model=model, broker=broker, database=db)
    if json_out:
        write_json(json_out, report.to_dict())
    if not is_stdout(json_out):
        _print(report)
    if report.problems:
        fail(f"{len(report.problems)} check(s) failed: {'; '.join(report.problems)}", code=EXIT_FAILED)


def _print(report: DoctorReport) -> None:
    cpu = report.cpu
    console.print(f"maskwatch {report.maskwatch}, Python {report.python}, {report.platform}", soft_wrap=True)
    vnni = "[green]yes[/]" if cpu.vnni else "[yellow]no[/]"
    flags = " ".join(cpu.flags) or "-"
    console.print(f"CPU: {cpu.model}, {cpu.logical_cpus} logical CPUs; flags {flags}; VNNI {vnni}", soft_wrap=True)
    console.print(f"Preset for videos and streams: [bold]{report.advice.preset}[/] ({report.advice.reason})")
    console.print("Models:")
    for m in report.models:
        manifest = "" if m.expected_sha256 is None else (" (= manifest)" if m.ok else " (differs from the manifest!)")
        console.print(f"  {m.role}: {_mark(m.ok)} {m.detail}", soft_wrap=True)
        console.print(f"    {m.path}\n    sha256 {m.sha256 or '-'}{manifest}", soft_wrap=True, highlight=False)
    installed = [e.name for e in report.extras if e.installed]
    console.print(f"Extras installed: {', '.join(installed) or 'none'}")
    for e in report.extras:
        if not e.installed:
            console.print(f"  {e.name}: missing {', '.join(e.missing)}", soft_wrap=True)
    for c in report.checks:
        given = "" if c.explicit else " (the default; not counted)"
        mark = _mark(c.ok if c.explicit or c.ok else None)  # a default that does not answer is no failure
        console.print(f"{c.name.capitalize()} {c.target}{given}: {mark} {c.detail}", soft_wrap=True)
    for note in report.notes:
        console.print(f"note: {note}", soft_wrap=True)
