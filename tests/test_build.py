"""End to end: `invoke build` in Docker, the .wasm against onnxruntime, and bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

from tests.onnx_models import with_unsupported_ops
from wasmforge import reference
from wasmforge.build import load_case
from wasmforge.paths import DIST, ROOT
from wasmforge.runner import WasmModel

LENET_ONNX = ROOT / "models" / "lenet-digits" / "lenet-digits.onnx"


def invoke(*args, env=None, cwd=ROOT):
    """Run a task the way a user does; returns (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "invoke", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=1800)
    return proc.returncode, proc.stdout, proc.stderr


def dist_listing():
    return sorted(p.name for p in DIST.iterdir()) if DIST.exists() else []


def assert_one_line_error(code, stderr, expected_code, fragment):
    """Progress may come first; the failure itself is one `error:` line, last, no traceback."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == expected_code, stderr
    assert "Traceback" not in stderr, stderr
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert errors == [lines[-1]], stderr
    assert fragment in errors[0], errors[0]


@pytest.mark.docker
def test_lenet_digits_matches_onnxruntime_on_every_digit(built_artifact):
    from sklearn.datasets import load_digits

    directory = built_artifact("lenet-digits")
    module = WasmModel(directory / "lenet-digits.wasm")
    assert {m for m, _ in module.imports()} == {"wasi_snapshot_preview1"}

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    sess = reference.session(LENET_ONNX)
    max_diff, agree, correct = 0.0, 0, 0
    for image, label in zip(images, digits.target):
        x = image.reshape(1, 1, 8, 8)
        (got,) = module.run([x]).outputs
        (want,) = reference.run_reference(sess, [x])
        max_diff = max(max_diff, float(np.max(np.abs(got - want))))
        agree += int(np.argmax(got) == np.argmax(want))
        correct += int(np.argmax(got) == label)
    print(f"lenet-digits wasm: {correct}/{len(images)} correct ({correct / len(images):.4f}), "
          f"argmax equal to onnxruntime on {agree}/{len(images)}, max abs logit diff {max_diff:.2e}")
    assert agree == len(images) == 1797
    assert max_diff <= 1e-4
    assert correct / len(images) > 0.95


@pytest.mark.docker
def test_resnet50_synth_matches_onnxruntime(built_artifact):
    directory = built_artifact("resnet50-synth")
    module = WasmModel(directory / "resnet50-synth.wasm")
    assert {m for m, _ in module.imports()} == {"wasi_snapshot_preview1"}
    for case in range(3):
        inputs, expected = load_case(directory, case)
        (got,) = module.run(inputs).outputs
        (want,) = expected
        assert np.max(np.abs(got - want)) <= 1e-3 * np.max(np.abs(want))
        assert np.argmax(got) == np.argmax(want)


@pytest.mark.docker
def test_run_task_and_bad_run_inputs(built_artifact, tmp_path):
    built_artifact("lenet-digits")
    good = tmp_path / "x.npy"
    np.save(good, np.zeros((1, 1, 8, 8), np.float32))
    out = tmp_path / "y.npy"
    code, _, err = invoke("run", "--model", "lenet-digits", "--input", str(good), "--output", str(out))
    assert code == 0, err
    assert np.load(out).shape == (1, 10)

    cases = {
        "shape.npy": (np.zeros((1, 8, 8), np.float32), "expected float32 [1, 1, 8, 8]"),
        "dtype.npy": (np.zeros((1, 1, 8, 8), np.float64), "got float64"),
    }
    for name, (array, fragment) in cases.items():
        np.save(tmp_path / name, array)
        target = tmp_path / f"out-{name}"
        code, _, err = invoke("run", "--model", "lenet-digits", "--input", str(tmp_path / name),
                              "--output", str(target))
        assert_one_line_error(code, err, 2, fragment)
        assert not target.exists()

    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    code, _, err = invoke("run", "--model", "lenet-digits", "--input", str(tmp_path / "junk.npy"),
                          "--output", str(out))
    assert_one_line_error(code, err, 2, "junk.npy")


def test_unknown_model_name():
    before = dist_listing()
    code, _, err = invoke("build", "--model", "no-such-model")
    assert_one_line_error(code, err, 2, "no-such-model")
    assert dist_listing() == before


def test_missing_onnx_file(tmp_path):
    before = dist_listing()
    code, _, err = invoke("build", "--onnx", str(tmp_path / "missing.onnx"))
    assert_one_line_error(code, err, 2, "missing.onnx")
    assert dist_listing() == before


@pytest.mark.parametrize("content", [b"this is not protobuf \xff\xfe", b""])
def test_corrupt_onnx_file(tmp_path, content):
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(content)
    before = dist_listing()
    code, _, err = invoke("build", "--onnx", str(path))
    assert_one_line_error(code, err, 2, "corrupt.onnx")
    assert dist_listing() == before


def test_bad_artifact_name(tmp_path):
    code, _, err = invoke("build", "--onnx", str(LENET_ONNX), "--name", "../escape")
    assert code == 2 and "error:" in err
    assert not (ROOT / "escape").exists()


def test_docker_daemon_not_reachable(tmp_path):
    before = dist_listing()
    code, _, err = invoke("build", "--model", "lenet-digits",
                          env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    assert_one_line_error(code, err, 1, "Docker daemon not reachable")
    assert dist_listing() == before


@pytest.mark.docker
def test_unsupported_operators_are_named(tmp_path):
    path = tmp_path / "unsupported.onnx"
    onnx.save(with_unsupported_ops(), path)
    before = dist_listing()
    code, _, err = invoke("build", "--onnx", str(path))
    assert_one_line_error(code, err, 2, "not support: Celu, Det")
    assert dist_listing() == before


@pytest.mark.docker
def test_failed_build_keeps_previous_artifact(built_artifact, tmp_path):
    directory = built_artifact("lenet-digits")
    sums = (directory / "SHA256SUMS").read_bytes()
    path = tmp_path / "unsupported.onnx"
    onnx.save(with_unsupported_ops(), path)
    code, _, _ = invoke("build", "--onnx", str(path), "--name", "lenet-digits")
    assert code == 2
    assert (directory / "SHA256SUMS").read_bytes() == sums
    assert not [p for p in DIST.iterdir() if p.name.startswith(".")]
