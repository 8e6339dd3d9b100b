"""The CLI's contract, command by command: exit codes, one-line user errors without a traceback, output
paths checked before any work, ``-`` as stdout for JSON, ``--version``, defaults in help.

Every case runs through :func:`maskwatch.commands.common.run_app`, as the ``maskwatch`` script does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from maskwatch.cli import app
from maskwatch.commands.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, check_output_path, fail, run_app

BUNDLED = Path(__file__).resolve().parents[1] / "models" / "maskwatch-mobilenet_v2.pt"


def _run(capsys, args: list[str]) -> tuple[int, str, str]:
    code = run_app(app, args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(err: str, *needles: str) -> None:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], err


@pytest.fixture
def bad_paths(tmp_path) -> dict[str, Path]:
    a_file = tmp_path / "a-file.txt"
    a_file.write_text("x")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    return {"under-a-file": a_file / "sub" / "out", "folder": folder, "file": a_file}


# command -> (arguments before the output option, the option, what it expects: file | dir)
COMMANDS = {
    "train": (["train", "--data", "{data}"], "--out", "dir"),
    "evaluate-json": (["evaluate", "--data", "{data}"], "--json", "file"),
    "evaluate-report": (["evaluate", "--data", "{data}"], "--report", "file"),
    "explain": (["explain", "{image}"], "--out", "dir"),
    "export": (["export", "--model", "{model}"], "--out", "file"),
    "bench": (["bench", "--backend", "onnx"], "--json", "file"),
    "report": (["report", "{run}"], "--out", "file"),
    "calibrate": (["calibrate", "--model", "{model}", "--data", "{data}", "--split", "valid"], "--out", "file"),
    "mine": (["mine", "--data", "{data}"], "--out", "dir"),
}


@pytest.mark.parametrize("problem", ["under-a-file", "wrong-kind"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_unusable_output_path_exits_2_before_any_work(command, problem, bad_paths, tiny_dataset, tmp_path, capsys):
    if command in ("export", "calibrate") and not BUNDLED.is_file():
        pytest.skip("no bundled model to export")
    args, option, kind = COMMANDS[command]
    image = next(tiny_dataset.rglob("*.png"), None) or next(tiny_dataset.rglob("*.jpg"))
    fill = {"data": str(tiny_dataset), "image": str(image), "model": str(BUNDLED), "run": str(tmp_path)}
    wrong_kind = bad_paths["folder" if kind == "file" else "file"]
    target = bad_paths["under-a-file"] if problem == "under-a-file" else wrong_kind
    before = set(tmp_path.rglob("*"))
    code, _, err = _run(capsys, [a.format(**fill) for a in args] + [option, str(target)])
    assert code == EXIT_USAGE, err
    _assert_one_line_error(err, option)
    assert set(tmp_path.rglob("*")) == before, "nothing may be written before the check"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(typer.Exit) as exit_info:
            check_output_path(folder / "x.json", option="--json")
        assert exit_info.value.exit_code == EXIT_USAGE
        assert "cannot write" in capsys.readouterr().err
    finally:
        folder.chmod(0o700)


def test_output_path_check_accepts_what_is_usable(tmp_path):
    assert check_output_path(None) is None
    assert check_output_path("-", stdout_ok=True) == Path("-")
    assert check_output_path(tmp_path / "new" / "deeper" / "x.json") == tmp_path / "new" / "deeper" / "x.json"
    assert check_output_path(tmp_path / "new-run", "dir") == tmp_path / "new-run"
    assert check_output_path(tmp_path, "dir") == tmp_path
    assert not (tmp_path / "new").exists(), "the check creates nothing"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".maskwatch")] == []


def test_evaluate_json_dash_writes_json_on_stdout(tiny_dataset, tmp_path, capsys, monkeypatch):
    if not BUNDLED.is_file():
        pytest.skip("no bundled model")
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, ["evaluate", "--model", str(BUNDLED), "--data", str(tiny_dataset), "--json", "-"])
    assert code == 0, err
    report = json.loads(out)
    assert report["n_images"] > 0 and "macro_f1" in report
    assert not (tmp_path / "-").exists()
    assert "accuracy" in err  # the table goes to stderr, stdout stays pure JSON


def test_evaluate_refuses_a_one_class_split(tiny_dataset, capsys):
    if not BUNDLED.is_file():
        pytest.skip("no bundled model")
    import shutil

    for folder in (tiny_dataset / "test").iterdir():
        if folder.name != "with_mask":
            shutil.rmtree(folder)
    code, _, err = _run(capsys, ["evaluate", "--model", str(BUNDLED), "--data", str(tiny_dataset)])
    assert code == EXIT_USAGE
    _assert_one_line_error(err, "one class")


@pytest.mark.parametrize(
    "args, option",
    [
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--batch-size", "0"], "--batch-size"),
        (["train", "--image-size", "8"], "--image-size"),
        (["bench", "--batch", "0"], "--batch"),
        (["bench", "--rounds", "0"], "--rounds"),
        (["report", ".", "--cam-samples", "0"], "--cam-samples"),
        (["export", "--calibration-size", "0"], "--calibration-size"),
        (["evaluate", "--data", ".", "--min-face", "0"], "--min-face"),
    ],
)
def test_numeric_options_are_validated_up_front(args, option, capsys):
    code, _, err = _run(capsys, args)
    assert code == EXIT_USAGE
    assert option in err and "Traceback" not in err


def test_version(capsys):
    from maskwatch import __version__

    code, out, _ = _run(capsys, ["--version"])
    assert code == 0 and out.strip() == f"maskwatch {__version__}"


def test_unexpected_errors_are_one_line_unless_debug(monkeypatch, capsys):
    import maskwatch.commands.runtime as runtime

    def broken(*_args, **_kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("maskwatch.bench.run_bench", broken)
    monkeypatch.setattr(runtime, "_model_or_bundled", lambda _m: Path("model.onnx"))
    code, _, err = _run(capsys, ["bench", "--backend", "onnx", "--scenes", "0"])
    assert code == EXIT_FAILED
    _assert_one_line_error(err, "RuntimeError: disk on fire", "--debug")
    code, _, err = _run(capsys, ["--debug", "bench", "--backend", "onnx", "--scenes", "0"])
    assert code == EXIT_FAILED and "Traceback" in err and "disk on fire" in err
    from maskwatch.commands.common import set_debug

    set_debug(False)


def test_interrupt_exits_130(monkeypatch, capsys):
    import maskwatch.commands.runtime as runtime

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("maskwatch.bench.run_bench", interrupted)
    monkeypatch.setattr(runtime, "_model_or_bundled", lambda _m: Path("model.onnx"))
    code, _, _ = _run(capsys, ["bench", "--backend", "onnx", "--scenes", "0"])
    assert code == EXIT_INTERRUPTED


def test_fail_is_one_plain_line(capsys):
    with pytest.raises(typer.Exit) as exit_info:
        fail("a [bold]path[/bold] with brackets " + "x" * 200)
    assert exit_info.value.exit_code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err == "error: a [bold]path[/bold] with brackets " + "x" * 200 + "\n"


@pytest.mark.parametrize("command", ["train", "evaluate", "explain", "export", "bench", "report"])
def test_every_option_shows_its_default(command):
    cmd = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    for param in cmd.params:
        if param.param_type_name != "option" or param.name in ("help",) or param.required:
            continue
        if param.is_flag and not param.secondary_opts and param.default is False:
            continue  # a plain switch: off unless given
        shown = param.show_default
        assert shown, f"{command} {param.opts}: no default in help"
        assert isinstance(shown, str) or param.default is not None, f"{command} {param.opts}: default None"
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "default:" in result.output


EXIT_WITH_NATIVE_THREADS = """
import sys, threading, time
import cv2, numpy as np
from maskwatch.commands.common import exit_process

image = np.zeros((1500, 1500, 3), np.uint8)

def read_forever():  # a capture thread: always inside an OpenCV call that releases the GIL
    while True:
        cv2.GaussianBlur(image, (31, 31), 0)

for k in range(2):
    threading.Thread(target=read_forever, name=f"maskwatch-capture-{k}", daemon=True).start()
time.sleep(0.3)
print("stopping", flush=False)
exit_process(3)
"""


def test_the_process_exits_with_its_code_while_a_thread_is_inside_opencv():
    """Issue 18: a daemon thread still inside OpenCV when the interpreter goes down is ended by a forced
    unwind through OpenCV's C++ frames, which aborts the process (SIGABRT; with ``raise SystemExit(3)`` in
    this script, three runs in three). ``exit_process``, how ``maskwatch`` ends (``cli.main``), exits with the
    code and loses no output."""
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", EXIT_WITH_NATIVE_THREADS], capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert done.returncode == 3, (done.returncode, done.stderr[-500:])
        assert done.stdout == "stopping\n"
