"""The smoke test without Docker: `wasmforge.smoke` (the in-container runner)
refuses a tampered artifact before running anything, imports only what the smoke
image has, and the container settings are locked down.

Running real modules, on the host and in the container: tests/e2e/test_smoke.py.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.manifests import seal
from wasmforge import artifact, smoke, smoke_host
from wasmforge.paths import ROOT

MODEL = "lenet-digits"
TAMPERED = [f"{MODEL}.wasm", "reference/case1/output0.npy", "manifest.json"]


@pytest.fixture
def lenet(tmp_path):
    """A sealed artifact shaped like dist/lenet-digits/ (hashes, manifest, reference
    data) whose module is never run: the runner must refuse it before that."""
    directory = tmp_path / MODEL
    directory.mkdir()
    (directory / f"{MODEL}.wasm").write_bytes(b"\0asm\1\0\0\0 not run")
    for case in range(3):
        case_dir = directory / "reference" / f"case{case}"
        case_dir.mkdir(parents=True)
        np.save(case_dir / "input0.npy", np.full((1, 1, 8, 8), case, np.float32))
        np.save(case_dir / "output0.npy", np.full((1, 10), case, np.float32))
    seal(directory, name=MODEL, wasm=f"{MODEL}.wasm")
    return directory


def flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def reseal(directory):
    """Rewrite the manifest's file list and SHA256SUMS, as a build would have."""
    manifest = artifact.load_manifest(directory)
    (directory / "manifest.json").unlink()
    files = {n: artifact.FileRecord.of(directory / n) for n in artifact.artifact_files(directory)}
    dataclasses.replace(manifest, files=files).write(directory)
    artifact.write_sums(directory)


def table_rows(text):
    return [ln.split() for ln in text.splitlines() if ln.split() and ln.split()[0].isdigit()]


# --- the runner on the host ---------------------------------------------------------


@pytest.mark.parametrize("name", TAMPERED)
def test_tampered_artifact_is_refused_before_anything_runs(lenet, capsys, monkeypatch, name):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the runner loaded the module or reference data of a tampered artifact")

    monkeypatch.setattr(smoke, "Model", must_not_run)
    monkeypatch.setattr(smoke, "load_case", must_not_run)
    flip_byte(lenet / name)
    assert smoke.main([str(lenet)]) == smoke.EXIT_REFUSED
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"error: artifact refused: {name} does not match its sha256 in SHA256SUMS"]


def test_rewritten_sums_do_not_hide_a_changed_module(lenet, capsys, monkeypatch):
    monkeypatch.setattr(smoke, "Model", None)  # calling it would fail the test
    flip_byte(lenet / f"{MODEL}.wasm")
    artifact.write_sums(lenet)
    assert smoke.main([str(lenet)]) == smoke.EXIT_REFUSED
    assert f"{MODEL}.wasm does not match its sha256 in manifest.json" in capsys.readouterr().err


def test_runner_imports_only_stdlib_numpy_and_wasmtime():
    """What the smoke image has; rich, docker or onnx would fail there."""
    script = ("import sys; before = set(sys.modules); import wasmforge.smoke; "
              "import json; print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before}"
              " - set(sys.stdlib_module_names))))")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert set(json.loads(out.stdout)) <= {"wasmforge", "numpy", "wasmtime"}, out.stdout


def test_container_settings_are_locked_down(tmp_path):
    settings = smoke_host.container_settings(tmp_path)
    assert settings["network_mode"] == "none" and settings["read_only"] is True
    assert settings["user"] not in ("root", "0") and settings["cap_drop"] == ["ALL"]
    assert settings["security_opt"] == ["no-new-privileges"]
    assert settings["mem_limit"] == settings["memswap_limit"] and settings["nano_cpus"] and settings["pids_limit"]
    assert {v["mode"] for v in settings["volumes"].values()} == {"ro"}
    assert list(settings["tmpfs"]) == ["/tmp"]


# Run as `python -c` in the smoke container; prints one JSON line of findings.


def test_a_module_blocked_in_a_host_call_fails_its_case_in_time(tmp_path, capsys):
    """The runner's wall clock, here without the container (tests/e2e/test_smoke.py runs
    the same inside it)."""
    import time

    from tests.wasm_modules import SLEEPER, identity_artifact

    artifact = identity_artifact(tmp_path / "dist", wat=SLEEPER)
    started = time.monotonic()
    assert smoke.main([str(artifact), "--time-limit", "1"]) == smoke.EXIT_FAILED
    assert time.monotonic() - started < 1 + 1 + 2  # the limit, its grace, loading the module
    out, err = capsys.readouterr()
    assert table_rows(out)[0][1] == "FAIL" and "time limit exceeded (1 s)" in out
    assert err.splitlines() == ["error: m: 1 of 1 reference cases failed"]
