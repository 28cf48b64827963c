"""`invoke build --external-params`: the weights beside the .wasm, hashed in SHA256SUMS
and checked by the module itself; the embedded default stays exactly as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from wasmforge import artifact, reference, smoke
from wasmforge.build import build, load_case
from wasmforge.paths import ROOT
from wasmforge.run import run_artifact
from wasmforge.runner import WasmModel, WasmRunError

pytestmark = pytest.mark.e2e

MODEL = "lenet-digits"
NAME = "lenet-digits-ext"
LENET_ONNX = ROOT / "models" / "lenet-digits" / "lenet-digits.onnx"


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    return tmp_path_factory.mktemp("dist")


@pytest.fixture(scope="module")
def ext(dist) -> Path:
    return build(model=MODEL, name=NAME, external_params=True, dist=dist, console=Console(stderr=True))


@pytest.fixture(scope="module")
def embedded(dist) -> Path:
    return build(model=MODEL, dist=dist, console=Console(stderr=True))


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def test_weights_are_beside_the_module_and_listed(ext, embedded):
    manifest = artifact.verify_artifact(ext)
    params_name = f"{NAME}.params.bin"
    params = (ext / params_name).read_bytes()
    assert manifest.params == artifact.ParamsRecord(params_name, artifact.sha256_file(ext / params_name),
                                                    len(params))
    assert len(params) == manifest.params_size > 0
    assert params_name in (ext / "SHA256SUMS").read_text()
    assert manifest.params_file == params_name
    # The same weights as the embedded build, and not inside the .wasm.
    wasm = (ext / f"{NAME}.wasm").read_bytes()
    embedded_wasm = (embedded / f"{MODEL}.wasm").read_bytes()
    middle = len(params) // 2
    assert params[middle:middle + 256] in embedded_wasm
    assert params[middle:middle + 256] not in wasm
    assert len(wasm) < len(embedded_wasm)
    print(f"{NAME}.wasm {len(wasm)} bytes + {params_name} {len(params)} bytes; "
          f"{MODEL}.wasm {len(embedded_wasm)} bytes")
    info = WasmModel(ext / f"{NAME}.wasm").info()
    assert info["params"] == {"external": True, "size": len(params), "sha256": manifest.params.sha256}


def test_embedded_default_is_unchanged(embedded, built_artifact):
    """No `params` key, no extra file, and the very bytes of dist/lenet-digits."""
    manifest = artifact.verify_artifact(embedded)
    assert manifest.params is None and '"params"' not in (embedded / "manifest.json").read_text()
    assert not list(embedded.glob("*.params.bin"))
    assert "params" not in WasmModel(embedded / f"{MODEL}.wasm").info()
    published = built_artifact(MODEL)
    assert (embedded / "SHA256SUMS").read_text() == (published / "SHA256SUMS").read_text()


def test_matches_onnxruntime(ext, tmp_path):
    module = WasmModel(ext / f"{NAME}.wasm")
    assert module.external_params
    sess = reference.session(LENET_ONNX)
    rng = np.random.default_rng(7)
    for _ in range(20):
        x = rng.random((1, 1, 8, 8), dtype=np.float32)
        (got,) = module.run([x]).outputs
        (want,) = reference.run_reference(sess, [x])
        assert np.max(np.abs(got - want)) <= 1e-4
        assert np.argmax(got) == np.argmax(want)
    # `invoke run` and the smoke gate, both hash-first, take the same path.
    np.save(tmp_path / "x.npy", x)
    run_artifact(NAME, [tmp_path / "x.npy"], [tmp_path / "y.npy"], dist=ext.parent)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), got)
    assert smoke.main([str(ext)]) == 0


def test_weights_file_is_read_only_to_the_module(ext, tmp_path):
    """/model is preopened read-only: the module cannot write its weights' directory."""
    module = WasmModel(ext / f"{NAME}.wasm")
    inputs, _ = load_case(ext, 0)
    np.save(tmp_path / "input0.npy", inputs[0])
    flag, model_dir = module.params_args()
    args = [*flag, "--input", "/io/input0.npy", "--output", "/model/stolen.npy"]
    with pytest.raises(WasmRunError, match=r"cannot create '/model/stolen\.npy'") as info:
        module._invoke(tmp_path, args, model_dir=model_dir)
    assert info.value.exit_code == 2
    assert not (ext / "stolen.npy").exists()


def test_a_flipped_weight_byte_is_caught_twice(ext, tmp_path):
    copy = tmp_path / NAME
    shutil.copytree(ext, copy)
    params = copy / f"{NAME}.params.bin"
    flip_byte(params, params.stat().st_size // 2)
    # 1. by SHA256SUMS, before anything runs
    with pytest.raises(artifact.ArtifactError,
                       match=rf"^{NAME}\.params\.bin does not match its sha256 in SHA256SUMS$"):
        artifact.verify_artifact(copy)
    assert smoke.main([str(copy)]) == smoke.EXIT_REFUSED
    # 2. bypassing that, by the module itself: exit 2, one line, nothing computed
    inputs, _ = load_case(copy, 0)
    refused = (r"params file '/model/lenet-digits-ext\.params\.bin' does not match "
               r"this module's weights: sha256 [0-9a-f]{64}, expected [0-9a-f]{64}$")
    with pytest.raises(WasmRunError, match=refused) as info:
        WasmModel(copy / f"{NAME}.wasm").run(inputs)
    assert info.value.exit_code == 2
    # A truncated file is refused for its size.
    params.write_bytes(params.read_bytes()[:-4])
    with pytest.raises(WasmRunError, match=r"has \d+ bytes, this module was built with \d+ bytes of weights$") as info:
        WasmModel(copy / f"{NAME}.wasm").run(inputs)
    assert info.value.exit_code == 2


def test_missing_weights_are_one_clear_error(ext, tmp_path):
    copy = tmp_path / NAME
    shutil.copytree(ext, copy)
    (copy / f"{NAME}.params.bin").unlink()
    inputs, _ = load_case(copy, 0)
    with pytest.raises(WasmRunError, match=r"keeps its weights in a separate file: .* is missing$") as info:
        WasmModel(copy / f"{NAME}.wasm").run(inputs)
    assert info.value.exit_code == 2
    # The module itself, run without --params.
    module = WasmModel(copy / f"{NAME}.wasm")
    np.save(tmp_path / "input0.npy", inputs[0])
    with pytest.raises(WasmRunError, match=r"give --params PATH") as info:
        module._invoke(tmp_path, ["--input", "/io/input0.npy", "--output", "/io/out.npy"])
    assert info.value.exit_code == 2
    # And the artifact check names it first.
    with pytest.raises(artifact.ArtifactError, match="listed in SHA256SUMS but missing"):
        artifact.verify_artifact(copy)
    assert artifact.load_manifest(copy).params_file == f"{NAME}.params.bin"
