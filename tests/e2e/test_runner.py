"""The runner's limits on a real module."""

from __future__ import annotations

import numpy as np
import pytest

from tests.cli import assert_one_line_error, invoke
from wasmforge.errors import WasmRunError
from wasmforge.runner import WasmModel

pytestmark = pytest.mark.e2e


def test_real_module_under_tight_limits(built_artifact):
    # Enough to start, not for the activations: Rust's own abort path. (lenet's
    # few KB of activations fit in the slack of its initial memory.)
    resnet = built_artifact("resnet50-synth") / "resnet50-synth.wasm"
    image = np.zeros((1, 3, 224, 224), np.float32)
    start = WasmModel(resnet).initial_memory
    with pytest.raises(WasmRunError, match="^memory limit exceeded: an allocation of .* failed"):
        WasmModel(resnet, memory_limit=start).run([image])
    wasm = built_artifact("lenet-digits") / "lenet-digits.wasm"
    x = np.zeros((1, 1, 8, 8), np.float32)
    with pytest.raises(WasmRunError, match=r"^time limit exceeded \(0\.5 s\)$"):
        WasmModel(wasm, time_limit=0.5).run([x], repeat=10**7)


def test_run_task_limits(built_artifact, tmp_path):
    start = WasmModel(built_artifact("lenet-digits") / "lenet-digits.wasm").initial_memory
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    out = tmp_path / "y.npy"
    run = ("run", "--model", "lenet-digits", "--input", str(tmp_path / "x.npy"), "--output", str(out), "--overwrite")
    code, _, err = invoke(*run, "--time-limit", "30", "--memory-limit", "64M")
    assert code == 0, err
    code, _, err = invoke(*run, "--memory-limit", "1M")
    assert start > 2**20
    assert_one_line_error(code, err, 1, f"memory limit exceeded: the module needs {start / 2**20:.3f} MiB of memory "
                                        "to start")
    code, _, err = invoke(*run, "--time-limit", "never")
    assert_one_line_error(code, err, 2, "--time-limit must be a positive number")
    out.unlink()
    # resnet50-synth needs far more than 50 ms per inference.
    built_artifact("resnet50-synth")
    np.save(tmp_path / "img.npy", np.zeros((1, 3, 224, 224), np.float32))
    code, _, err = invoke("run", "--model", "resnet50-synth", "--input", str(tmp_path / "img.npy"),
                          "--output", str(out), "--time-limit", "0.05")
    assert_one_line_error(code, err, 1, "time limit exceeded (0.05 s)")
    assert not out.exists()
