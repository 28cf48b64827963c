"""The command line itself, as real commands: `invoke` in a checkout, `python -m
wasmforge.cli` (what the `wasmforge` console script runs), and start-up cost.

(The tasks' behaviour is tested in-process, through `tests.cli.invoke`, in the
test module of the package module each task calls.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.cli import assert_one_line_error, invoke, invoke_command
from wasmforge import cli
from wasmforge.paths import ROOT

TASKS = {"bench", "build", "check", "conformance", "corpus", "image", "models", "run", "smoke", "tune", "verify"}
HEAVY = {"numpy", "onnx", "onnxruntime", "tvm", "wasmtime", "docker", "cyclonedx", "rich", "sklearn"}


def test_invoke_in_the_checkout_lists_every_task():
    code, out, err = invoke_command("--list")
    assert code == 0, err
    assert TASKS <= {line.split()[0] for line in out.splitlines()[1:] if line.strip()}


def test_the_console_script_is_the_same_collection():
    assert set(cli.namespace.task_names) == TASKS
    proc = subprocess.run([sys.executable, "-m", "wasmforge.cli", "--help", "build"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: wasmforge [--core-opts] build" in proc.stdout and "--external-params" in proc.stdout


def test_a_bad_argument_is_one_line_before_any_heavy_import(tmp_path):
    """`invoke build --model no-such-model` must answer at once: the registry is read
    before numpy, onnx, onnxruntime, TVM, wasmtime, docker-py or rich is imported."""
    script = ("import json, sys\nfrom wasmforge.cli import program\n"
              "try:\n    program.run(sys.argv[1:])\nexcept SystemExit as exc:\n    code = exc.code\n"
              "print(json.dumps([code, sorted({m.split('.')[0] for m in sys.modules})]))")
    for args in (["build", "--model", "no-such-model"], ["build", "--onnx", str(tmp_path / "missing.onnx")],
                 ["build", "--model", "lenet-digits", "--name", "../x"],
                 ["build", "--model", "lenet-digits", "--input-shape", "input=1xAx8"]):
        proc = subprocess.run([sys.executable, "-c", script, "wasmforge", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        code, modules = json.loads(proc.stdout.splitlines()[-1])
        assert_one_line_error(code, proc.stderr, 2, "")
        assert not HEAVY & set(modules), (args, sorted(HEAVY & set(modules)))


def test_unknown_task_and_option_are_refused():
    code, _, err = invoke("no-such-task")
    assert code == 1 and "No idea what 'no-such-task' is!" in err
    code, _, err = invoke("build", "--no-such-option")
    assert code == 1 and "--no-such-option" in err


@pytest.mark.parametrize("filename", ["/data/dist/x/big.bin", None])
def test_a_full_disk_in_any_task_is_one_line(monkeypatch, filename):
    import errno

    from wasmforge import verify

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), *([filename] if filename else []))

    monkeypatch.setattr(verify, "verify_hashes", full)
    code, _, stderr = invoke("verify", "--model", "lenet-digits")
    assert code == 1 and "Traceback" not in stderr
    assert stderr.strip() == "error: no space left on device" + (f" writing {filename}" if filename else "")
