"""The Python API without Docker: `wasmforge.load(dir).run({name: array})` on a sealed
artifact around a tiny WAT module."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

import wasmforge
from tests.wasm_modules import SLEEPER, identity_artifact
from wasmforge.paths import ROOT

X = np.arange(4, dtype=np.float32).reshape(1, 4)


@pytest.fixture
def artifact(tmp_path):
    return identity_artifact(tmp_path / "dist")


def test_load_describes_and_runs(artifact):
    model = wasmforge.load(artifact)
    assert [(t.name, t.dtype, t.shape) for t in model.inputs] == [("x", "float32", (1, 4))]
    assert [(t.name, t.dtype, t.shape) for t in model.outputs] == [("y", "float32", (1, 4))]
    sandbox = model.wasm._state["child"].process.pid
    for _ in range(3):
        out = model.run({"x": X})
        assert list(out) == ["y"]
        np.testing.assert_array_equal(out["y"], X)
    assert model.wasm._state["child"].process.pid == sandbox  # compiled once, reused
    model.close()


@pytest.mark.parametrize("feeds, message", [
    ({"z": X}, r"^m has no input named 'z'; its inputs: x$"),
    ({}, r"^missing input 'x' of m$"),
    ({"x": X.astype(np.float64)}, r"^input 'x' must be float32, got float64 \(convert with \.astype\(np\.float32\)\)$"),
    ({"x": X.reshape(4)}, r"^input 'x' must have shape \(1, 4\), got \(4,\)$"),
    ({"x": [[0, 1, 2, 3]]}, r"^input 'x' must be a numpy array, got list$"),
    ([X], r"^run\(\) takes a dict \{input name: array\}, got list$"),
])
def test_wrong_feeds_are_one_clear_error(artifact, feeds, message):
    with wasmforge.load(artifact) as model, pytest.raises(wasmforge.Error, match=message):
        model.run(feeds)


@pytest.mark.parametrize("name", ["m.wasm", "manifest.json", "reference/case0/output0.npy"])
def test_a_flipped_byte_is_refused_by_load(artifact, name):
    path = artifact / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(wasmforge.Error, match=rf"^{name} does not match its sha256 in SHA256SUMS$") as info:
        wasmforge.load(artifact)
    assert "\n" not in str(info.value)


def test_missing_directory_and_bad_limits(tmp_path, artifact):
    with pytest.raises(wasmforge.Error, match="^no artifact directory"):
        wasmforge.load(tmp_path / "nope")
    with pytest.raises(wasmforge.Error, match="^time_limit must be a positive number"):
        wasmforge.load(artifact, time_limit=0)


def test_a_sleeping_module_stops_at_the_time_limit(tmp_path):
    artifact = identity_artifact(tmp_path / "dist", wat=SLEEPER)
    model = wasmforge.load(artifact, time_limit=1)
    started = time.monotonic()
    with pytest.raises(wasmforge.Error, match=r"^time limit exceeded \(1 s\)$"):
        model.run({"x": X})
    assert time.monotonic() - started < 2.0


def test_import_wasmforge_is_light():
    script = ("import sys, json; import wasmforge; "
              "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
              "{'numpy', 'wasmtime', 'onnx', 'onnxruntime', 'tvm', 'docker', 'rich'})))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout) == []
