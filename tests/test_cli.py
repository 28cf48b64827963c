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

TASKS = {"bench", "build", "check", "compare-builds", "conformance", "corpus", "image", "keygen", "models", "profile", "run", "sign", "smoke", "tune", "verify"}
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
                 ["build", "--model", "lenet-digits", "--input-shape", "input=1xAx8"],
                 ["build", "--model", "lenet-digits", "--features", "avx2"]):
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


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_after_any_task_is_its_help(task, flag):
    """`invoke run --help` shows run's options: no task takes a positional argument,
    which invoke would fill with the `--help` that follows it."""
    code, out, err = invoke(task, flag)
    assert code == 0, err
    assert out.startswith(f"Usage: wasmforge [--core-opts] {task} "), out[:200]
    assert not any(arg.positional for arg in cli.namespace[task].get_arguments())


def test_models_show_the_preprocessing():
    code, out, _ = invoke("models")
    assert code == 0
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("lenet-digits "))
    assert lines[at + 1].split()[0] == "preprocessing:" and "input = pixel / 16 as float32" in lines[at + 1]


# Each task with bad values: one `error:` line and a non-zero exit, never a traceback,
# all refused before Docker is asked for anything (these run without a daemon).
BAD_ARGUMENTS = [
    (("build", "--model", "lenet-digit"), "did you mean lenet-digits?"),
    (("build", "--onnx", "/nonexistent/m.onnx"), "no such file: /nonexistent/m.onnx"),
    (("build", "--onnx-dir", "/nonexistent"), "no such directory: /nonexistent"),
    (("build", "--model", "lenet-digits", "--name", "../x"), "invalid model name '../x'"),
    (("build", "--model", "lenet-digits", "--input-shape", "input=1xAx8"), "bad --input-shape"),
    (("build", "--model", "lenet-digits", "--freeze", "x"), "bad --freeze 'x'"),
    (("run", "--model", "lenet-digit", "--input", "x.npy", "--output", "y.npy"), "no artifact dist/lenet-digit"),
    (("run", "--model", "../x", "--input", "x.npy", "--output", "y.npy"), "invalid model name '../x'"),
    (("run", "--model", "lenet-digits", "--time-limit", "-1", "--input", "x", "--output", "y"),
     "--time-limit must be a positive number"),
    (("run", "--model", "lenet-digits", "--time-limit", "abc", "--input", "x", "--output", "y"),
     "--time-limit must be a positive number"),
    (("run", "--model", "lenet-digits", "--memory-limit", "9G", "--input", "x", "--output", "y"),
     "--memory-limit must be a size up to 4G"),
    (("verify", "--model", "no-such-model"), "no artifact dist/no-such-model"),
    (("verify", "--model", "lenet-digits", "--rebuild", "--onnx", "/nonexistent/m.onnx"),
     "--onnx: no such file"),
    (("smoke", "--model", "lenet-digit"), "did you mean lenet-digits?"),
    (("bench", "--model", "lenet-digits", "--runs", "abc"), "--runs must be an integer >= 1, got 'abc'"),
    (("bench", "--model", "lenet-digits", "--runs", "-3"), "--runs must be an integer >= 1, got '-3'"),
    (("bench", "--model", "lenet-digits", "--runs", "0"), "--runs must be an integer >= 1"),
    (("bench", "--model", "lenet-digits", "--json", "/nonexistent/out.json"), "no such directory /nonexistent"),
    (("bench", "--model", "lenet-digits", "--onnx", "/nonexistent/m.onnx"), "--onnx: no such file"),
    (("check", "--onnx", "/nonexistent/m.onnx"), "--onnx: no such file"),
    (("check",), "give exactly one of --model NAME or --onnx PATH"),
    (("check", "--model", "no-such-model"), "unknown model 'no-such-model'"),
    (("tune", "--model", "lenet-digits", "--trials", "abc"), "--trials must be an integer >= 1, got 'abc'"),
    (("tune", "--model", "lenet-digits", "--max-tasks", "-1"), "--max-tasks must be an integer >= 0"),
    (("tune", "--model", "lenet-digit"), "did you mean lenet-digits?"),
    (("tune", "--onnx", "/nonexistent/m.onnx"), "--onnx: no such file"),
    (("tune", "--model", "lenet-digits", "--measure", "proxy"), "--measure must be wasm or native, got 'proxy'"),
    (("tune", "--model", "lenet-digits", "--min-gain", "abc"), "--min-gain must be a number >= 0, got 'abc'"),
    (("corpus", "--only", "no-such-model"), "no corpus model named 'no-such-model'"),
    (("conformance", "--suite", "nodes"), "unknown suite 'nodes'"),
    (("conformance", "--jobs", "0"), "--jobs must be an integer >= 1"),
    (("conformance", "--jobs", "two"), "--jobs must be an integer >= 1, got 'two'"),
    (("conformance", "--limit", "x"), "--limit must be an integer >= 1"),
    (("conformance", "--seed", "-1"), "--seed must be an integer >= 0"),
    (("conformance", "--chunk", "1.5"), "--chunk must be an integer >= 1"),
    (("conformance", "--min-pass", "abc"), "--min-pass must be a number >= 0"),
    (("conformance", "--json", "/nonexistent/out.json"), "no such directory /nonexistent"),
    (("run", "--input", "x.npy"), "give --model NAME"),
    (("verify",), "give --model NAME"),
    (("smoke",), "give --model NAME"),
    (("profile",), "give --model NAME"),
    (("compare-builds", "--first", "dist"), "give --second DIR"),
]


@pytest.mark.parametrize("args, fragment", BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_every_task_refuses_bad_values_with_one_line(args, fragment, monkeypatch):
    from wasmforge import images

    def no_docker(*_a, **_k):
        raise AssertionError("a bad argument reached Docker")

    monkeypatch.setattr(images, "docker_client", no_docker)
    code, _, err = invoke(*args)
    assert code != 0, err
    assert_one_line_error(code, err, code, fragment)


def test_unknown_model_names_get_a_suggestion(tmp_path):
    from wasmforge.errors import UserError
    from wasmforge.run import artifact_dir

    (tmp_path / "my-net").mkdir()
    (tmp_path / "my-net" / "manifest.json").write_text("{}")
    with pytest.raises(UserError, match=r"^no artifact dist/my-nte; did you mean my-net\?$"):
        artifact_dir("my-nte", tmp_path)
    with pytest.raises(UserError, match=r"^no artifact dist/zzz; build it with `invoke build --onnx FILE --name zzz`"):
        artifact_dir("zzz", tmp_path)
    with pytest.raises(UserError, match=r"^no artifact dist/squeezenet-synth; build it with "
                                        r"`invoke build --model squeezenet-synth`$"):
        artifact_dir("squeezenet-synth", tmp_path)


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


def test_sigterm_cleans_up_like_ctrl_c():
    """SIGTERM during a task: its clean-up (finally / except BaseException) runs and
    the exit is one `error: terminated` line with 143, like a shell's SIGTERM."""
    import signal
    import threading

    from invoke import Exit

    from wasmforge.cli import user_errors

    cleaned = []

    @user_errors
    def slow_task():
        try:
            threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM)).start()
            threading.Event().wait(10)
            pytest.fail("SIGTERM did not interrupt the task")
        finally:
            cleaned.append(True)

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Exit) as caught:
        slow_task()
    assert caught.value.code == 143 and str(caught.value.message) == "error: terminated"
    assert cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) is before  # the task's handler is gone again
