"""wasmforge.terminal: progress output stays plain and whole without a terminal."""

from __future__ import annotations

import io
import os
import shutil

from tests.cli import LENET_ONNX, invoke_command
from wasmforge.terminal import WIDTH_WITHOUT_TERMINAL, make_console


def test_a_long_progress_line_is_not_wrapped_when_piped(tmp_path):
    # A real task in a new process, stderr a pipe and no COLUMNS: the line
    # naming the file must come out whole (rich would wrap it at 80 columns).
    long_name = "lenet-" + "x" * 180 + ".onnx"
    shutil.copyfile(LENET_ONNX, tmp_path / long_name)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"  # stop right after the line, before any build
    code, _, stderr = invoke_command("build", "--onnx", str(tmp_path / long_name), "--name", "lenet",
                                     env=env, timeout=120)
    lines = stderr.splitlines()
    assert code == 1 and lines[-1].startswith("error: Docker daemon not reachable"), stderr
    assert f"building lenet from {long_name}" in lines, lines  # whole, on one line
    assert "\x1b[" not in stderr


def test_console_settings(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    console = make_console(file=io.StringIO())
    assert console.width == WIDTH_WITHOUT_TERMINAL and console.soft_wrap
    monkeypatch.setenv("COLUMNS", "120")
    assert make_console(file=io.StringIO()).width == 120
    out = io.StringIO()
    make_console(file=out).print("[bold]word[/] " * 100)
    assert out.getvalue().count("\n") == 1 and "\x1b[" not in out.getvalue()
