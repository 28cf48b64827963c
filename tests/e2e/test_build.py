"""End to end: `invoke build` in Docker, the .wasm against onnxruntime, and bad input."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tests.cli import LENET_ONNX, assert_one_line_error, dist_listing, invoke
from tests.onnx_models import with_unsupported_ops
from wasmforge import reference
from wasmforge.paths import DIST
from wasmforge.reference import load_case
from wasmforge.runner import WasmModel

pytestmark = pytest.mark.e2e


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


def test_run_task_and_bad_run_inputs(built_artifact, tmp_path):
    built_artifact("lenet-digits")
    good = tmp_path / "x.npy"
    np.save(good, np.zeros((1, 1, 8, 8), np.float32))
    out = tmp_path / "y.npy"
    code, _, err = invoke("run", "--model", "lenet-digits", "--input", str(good), "--output", str(out))
    assert code == 0, err
    assert np.load(out).shape == (1, 10)

    cases = {
        "shape.npy": (np.zeros((1, 8, 8), np.float32), "expected float32 (1, 1, 8, 8)"),
        "dtype.npy": (np.zeros((1, 1, 8, 8), np.float64), "holds float64 (1, 1, 8, 8), expected float32"),
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


def test_unsupported_operators_are_named(tmp_path):
    path = tmp_path / "unsupported.onnx"
    onnx.save(with_unsupported_ops(), path)
    before = dist_listing()
    code, _, err = invoke("build", "--onnx", str(path))
    assert_one_line_error(code, err, 2, "not support: Det")
    assert dist_listing() == before


def test_failed_build_keeps_previous_artifact(built_artifact, tmp_path):
    directory = built_artifact("lenet-digits")
    sums = (directory / "SHA256SUMS").read_bytes()
    path = tmp_path / "unsupported.onnx"
    onnx.save(with_unsupported_ops(), path)
    code, _, _ = invoke("build", "--onnx", str(path), "--name", "lenet-digits")
    assert code == 2
    assert (directory / "SHA256SUMS").read_bytes() == sums
    assert not [p for p in DIST.iterdir() if p.name.startswith(".")]


def test_paddle_style_minus_one_dims_and_a_frozen_input_build(tmp_path):
    """A dynamic batch written as dim_value -1 (paddle2onnx) builds with --input-shape;
    a frozen input drives shape arithmetic that folds away; the frozen value is in
    the manifest and the module takes only the remaining input."""
    import json

    from onnx import TensorProto, helper

    from tests.onnx_models import tiny_cnn
    from wasmforge.build import build

    model = tiny_cnn()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = -1
    # y2 = y * scale, where `scale` is an extra graph input frozen at build time.
    model.graph.input.append(helper.make_tensor_value_info("scale", TensorProto.FLOAT, []))
    old = model.graph.output[0].name
    model.graph.node.append(helper.make_node("Mul", [old, "scale"], ["y2"]))
    model.graph.output[0].name = "y2"
    path = tmp_path / "paddle.onnx"
    onnx.save(model, path)
    final = build(onnx=str(path), name="paddle-minus-one", input_shapes=("x=1x1x8x8",),
                  freeze=("scale=0.5",), dist=tmp_path / "dist")
    manifest = json.loads((final / "manifest.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["x"]
    assert manifest["inputs"][0]["shape"] == [1, 1, 8, 8]
    assert manifest["frozen"] == {"scale": {"value": 0.5}}
    x = np.random.default_rng(0).standard_normal([1, 1, 8, 8]).astype(np.float32)
    (got,) = WasmModel(final / "paddle-minus-one.wasm").run([x]).outputs
    (want,) = reference.run_reference(reference.session(path), [x], {"scale": np.array(0.5, np.float32)})
    assert np.max(np.abs(got - want)) <= 1e-4
