"""End to end in Docker: MobileNetV2, SqueezeNet and BERT stand-ins built to .wasm, against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

from wasmforge import reference
from wasmforge.build import load_case
from wasmforge.fetch import model_path
from wasmforge.registry import get_model
from wasmforge.runner import WasmModel, WasmRunError

pytestmark = pytest.mark.e2e


def assert_reference_cases_match(directory, name):
    module = WasmModel(directory / f"{name}.wasm")
    assert {m for m, _ in module.imports()} == {"wasi_snapshot_preview1"}
    diffs = []
    for case in range(3):
        inputs, expected = load_case(directory, case)
        got = module.run(inputs).outputs
        comparison = reference.compare(got, expected)
        assert comparison.ok, comparison
        diffs.append(comparison.max_abs_diff)
    print(f"{name}: max abs diff per reference case {diffs}")
    return module


@pytest.mark.parametrize("name", ["mobilenetv2-synth", "squeezenet-synth"])
def test_cnn_synth_matches_onnxruntime(built_artifact, name):
    directory = built_artifact(name)
    assert_reference_cases_match(directory, name)
    for case in range(3):
        inputs, (want,) = load_case(directory, case)
        assert inputs[0].shape == (1, 3, 224, 224) and want.shape == (1, 1000)


def test_bert_synth_matches_onnxruntime(built_artifact):
    directory = built_artifact("bert-synth")
    module = assert_reference_cases_match(directory, "bert-synth")
    info = module.info()
    assert [(i["name"], i["dtype"], i["shape"]) for i in info["inputs"]] == [
        ("input_ids", "int64", [1, 16]), ("attention_mask", "int64", [1, 16])]

    # Beyond the seeded cases (ids < 10): the whole vocabulary, and padding masked out.
    sess = reference.session(model_path(get_model("bert-synth")))
    rng = np.random.default_rng(11)
    ids = rng.integers(0, 1000, (1, 16)).astype(np.int64)
    ids[0, :2] = [0, 999]
    mask = np.ones((1, 16), np.int64)
    mask[0, 10:] = 0
    (got,) = module.run([ids, mask]).outputs
    (want,) = reference.run_reference(sess, [ids, mask])
    assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()

    with pytest.raises(WasmRunError) as caught:  # int32 ids: refused, not reinterpreted
        module.run([ids.astype(np.int32), mask])
    assert caught.value.exit_code == 2


def test_minilm_synth_matches_onnxruntime(built_artifact):
    # A transformer at a realistic size: every matmul packed and tiled (gemm.py), softmax
    # and GELU without libm calls (fastmath.py); ~1 min to build on 2 cores.
    directory = built_artifact("minilm-synth")
    module = assert_reference_cases_match(directory, "minilm-synth")
    sess = reference.session(model_path(get_model("minilm-synth")))
    rng = np.random.default_rng(12)
    ids = rng.integers(0, 30522, (1, 128)).astype(np.int64)
    ids[0, :2] = [0, 30521]
    mask = np.ones((1, 128), np.int64)
    mask[0, 90:] = 0
    (got,) = module.run([ids, mask]).outputs
    (want,) = reference.run_reference(sess, [ids, mask])
    assert got.shape == (1, 128, 384)
    assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()
