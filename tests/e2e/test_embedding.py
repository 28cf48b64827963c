"""The embedding ABI (docs/embedding.md) from wasmtime-py, on the lenet-digits
artifacts: the default build and the portable one (`--features simd128`).

The host here is what a browser or a Node program is: it instantiates the
module once with WASI imports that only record their calls, writes inputs into
linear memory, calls `wasmforge_run` many times and reads the outputs. The
results must equal the WASI command's (the same module run with files) and the
onnxruntime reference cases recorded in the artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import wasmtime

from wasmforge import artifact, reference
from wasmforge.reference import load_case
from wasmforge.runner import WasmModel, new_engine

ENOSYS = 52  # WASI errno: what the stubs answer, had they been called


class AbiModule:
    """One instance driven through the embedding ABI, no WASI behind it."""

    def __init__(self, wasm: Path):
        engine = new_engine()
        module = wasmtime.Module.from_file(engine, str(wasm))
        self.store = wasmtime.Store(engine)
        self.store.set_epoch_deadline(1 << 40)
        self.wasi_calls: list[str] = []
        linker = wasmtime.Linker(engine)
        for imp in module.imports:
            assert imp.module == "wasi_snapshot_preview1", imp.module
            linker.define(self.store, imp.module, imp.name,
                          wasmtime.Func(self.store, imp.type, self._stub(imp.name)))
        self.exports = linker.instantiate(self.store, module).exports(self.store)
        self.memory = self.exports["memory"]

    def _stub(self, name: str):
        def call(*_args):
            self.wasi_calls.append(name)
            return ENOSYS
        return call

    def call(self, name: str, *args):
        return self.exports[name](self.store, *args)

    def read(self, pointer: int, length: int) -> bytes:
        return self.memory.read(self.store, pointer, pointer + length)

    def info(self) -> dict:
        return json.loads(self.read(self.call("wasmforge_info_ptr"), self.call("wasmforge_info_len")))

    def error(self) -> str:
        return self.read(self.call("wasmforge_error_ptr"), self.call("wasmforge_error_len")).decode()

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        info = self.info()
        for i, (array, spec) in enumerate(zip(inputs, info["inputs"])):
            data = np.ascontiguousarray(array, dtype=spec["dtype"]).tobytes()
            assert self.call("wasmforge_input_len", i) == len(data)
            self.memory.write(self.store, data, self.call("wasmforge_input_ptr", i))
        status = self.call("wasmforge_run")
        assert status == 0, (status, self.error())
        outputs = []
        for i, spec in enumerate(info["outputs"]):
            raw = self.read(self.call("wasmforge_output_ptr", i), self.call("wasmforge_output_len", i))
            outputs.append(np.frombuffer(raw, dtype=spec["dtype"]).reshape(spec["shape"]))
        return outputs


def check_abi_against_wasi_and_reference(directory: Path) -> AbiModule:
    manifest = artifact.verify_artifact(directory)
    wasm = directory / manifest.wasm
    abi = AbiModule(wasm)
    assert abi.call("wasmforge_abi_version") == 1
    wasi = WasmModel(wasm)
    assert abi.info() == wasi.info(), "wasmforge_info is --info"
    assert abi.call("wasmforge_init") == 0
    pointers = (abi.call("wasmforge_input_ptr", 0), abi.call("wasmforge_output_ptr", 0))
    cases = [load_case(directory, case) for case in range(manifest.reference.cases)]
    # Every case twice, interleaved: nothing of one run leaks into the next.
    for inputs, expected in cases + cases:
        outputs = abi.run(inputs)
        assert reference.compare(outputs, expected).ok
        for got, by_file in zip(outputs, wasi.run(inputs).outputs):
            np.testing.assert_array_equal(got, by_file)
    pages = abi.memory.size(abi.store)
    for _ in range(50):
        abi.run(cases[0][0])
    assert abi.memory.size(abi.store) == pages, "repeated runs allocate nothing"
    assert (abi.call("wasmforge_input_ptr", 0), abi.call("wasmforge_output_ptr", 0)) == pointers
    assert abi.wasi_calls == [], "the ABI needs no WASI call at all"
    return abi


def test_abi_runs_lenet_digits_like_the_wasi_command(built_artifact):
    directory = built_artifact("lenet-digits")
    abi = check_abi_against_wasi_and_reference(directory)
    info = abi.info()
    assert {"simd128", "relaxed-simd"} <= set(info["features"])
    assert "pixel / 16" in info["preprocessing"]

    # Bad indexes: a null pointer, 0 bytes and a message; the instance goes on.
    assert abi.call("wasmforge_input_ptr", 5) == 0
    assert abi.error() == "no input 5: the model has 1"
    assert abi.call("wasmforge_output_len", 9) == 0
    assert abi.call("wasmforge_run") == 0


def test_portable_build_passes_the_same_checks(built_artifact, portable_artifact):
    manifest = artifact.verify_artifact(portable_artifact)
    assert manifest.features == "simd128" and manifest.target.tvm["mattr"] == ["+simd128"]
    default = artifact.verify_artifact(built_artifact("lenet-digits"))
    assert default.features is None and "features" not in default.to_dict()
    assert manifest.preprocessing == default.preprocessing and "pixel / 16" in manifest.preprocessing

    abi = check_abi_against_wasi_and_reference(portable_artifact)
    features = abi.info()["features"]
    assert "simd128" in features and "relaxed-simd" not in features


def test_digit_from_the_preprocessing_text(built_artifact):
    """The registry's preprocessing (pixel / 16 on sklearn's 8x8 digits) classifies
    a real digit: the text the module reports is the one that works."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    abi = AbiModule(built_artifact("lenet-digits") / "lenet-digits.wasm")
    right = 0
    for image, label in zip(digits.images[:40], digits.target[:40]):
        x = (image / 16).astype(np.float32).reshape(1, 1, 8, 8)
        right += int(np.argmax(abi.run([x])[0]) == label)
    assert right >= 38
