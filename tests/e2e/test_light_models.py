"""The nine `light_*` model-zoo topologies shipped in the pinned onnx wheel build as wasm.

Caffe2 exports (IR 3, initializers listed as graph inputs, multi-input Sum,
Dropout, LRN, opset 9) that nobody on this team wrote. Each is built twice in
one builder run: as shipped (uniform `ConstantOfShape` weights, so the outputs
are flat and only prove the build) and with seeded random weights
(tests/light_models.py), whose outputs must agree with onnxruntime within
1e-4 x max|reference| with the same argmax.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tests.light_models import NAMES, light_path, with_random_weights
from wasmforge import reference
from wasmforge.runner import WasmModel

pytestmark = pytest.mark.e2e

STRICT_RELATIVE = 1e-4


@pytest.fixture(scope="module")
def light_builds(tmp_path_factory):
    from wasmforge.build import build_many
    from wasmforge.source import resolve_source

    from concurrent.futures import ThreadPoolExecutor

    work = tmp_path_factory.mktemp("light")
    shipped, random = [], []
    for name in NAMES:
        shipped.append(resolve_source(None, str(light_path(name)), f"light-{name.replace('_', '-')}"))
        path = work / f"random_{name}.onnx"
        onnx.save(with_random_weights(onnx.load(light_path(name)), seed=1), path)
        random.append(resolve_source(None, str(path), f"random-{name.replace('_', '-')}"))
    # Two builder containers at once: each build is single-threaded, CI has two cores.
    with ThreadPoolExecutor(2) as pool:
        batches = list(pool.map(lambda sources: build_many(sources, dist=work / "dist"), [shipped, random]))
    return {o.name: o for outcomes in batches for o in outcomes}


@pytest.mark.parametrize("name", NAMES)
def test_shipped_light_model_builds_and_matches_onnxruntime(light_builds, name):
    outcome = light_builds[f"light-{name.replace('_', '-')}"]
    assert outcome.error is None, str(outcome.error)
    assert (outcome.path / "manifest.json").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_random_weights_match_onnxruntime_closely(light_builds, name):
    outcome = light_builds[f"random-{name.replace('_', '-')}"]
    assert outcome.error is None, str(outcome.error)
    model = WasmModel(outcome.path / f"{outcome.name}.wasm")
    for case in range(3):
        inputs, expected = reference.load_case(outcome.path, case)
        got = model.run(inputs).outputs
        for g, want in zip(got, expected, strict=True):
            scale = float(np.max(np.abs(want)))
            assert scale > 0 and np.std(want) > 0, "random weights must give non-uniform outputs"
            assert float(np.max(np.abs(g - want))) <= STRICT_RELATIVE * scale
            assert np.argmax(g) == np.argmax(want)
