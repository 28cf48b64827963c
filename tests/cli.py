"""Running tasks in tests: in-process through the CLI's own `Program` (fast, the
same parsing and error handling as `invoke` and `wasmforge`), or as a real
command for the few tests about the command line itself."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

from invoke import Program

from wasmforge import cli
from wasmforge.paths import DIST, ROOT

LENET_ONNX = ROOT / "models" / "lenet-digits" / "lenet-digits.onnx"


def invoke(*args: str, env: dict | None = None) -> tuple[int, str, str]:
    """Run a task in this process as `wasmforge ARGS...` would; returns (exit code, stdout, stderr).

    A traceback is not caught: an unexpected exception fails the test with it."""
    program = Program(namespace=cli.namespace, name="wasmforge", binary="wasmforge")
    saved = {key: os.environ.get(key) for key in env or {}}
    os.environ.update(env or {})
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                program.run(["wasmforge", *args])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return code, out.getvalue(), err.getvalue()


def invoke_command(*args: str, env: dict | None = None, cwd=ROOT, timeout: float = 1800) -> tuple[int, str, str]:
    """Run `python -m invoke ARGS...` as a user does (a new process); returns (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "invoke", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def dist_listing() -> list[str]:
    return sorted(p.name for p in DIST.iterdir()) if DIST.exists() else []


def assert_one_line_error(code, stderr, expected_code, fragment):
    """Progress may come first; the failure itself is one `error:` line, last, no traceback."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == expected_code, stderr
    assert "Traceback" not in stderr, stderr
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert errors == [lines[-1]], stderr
    assert fragment in errors[0], errors[0]
