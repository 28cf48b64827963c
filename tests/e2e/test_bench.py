"""`invoke bench` on a real lenet-digits build."""

from __future__ import annotations

import json

import pytest

from tests.cli import invoke
from tests.test_bench import assert_schema

pytestmark = pytest.mark.e2e


def test_bench_lenet_digits(built_artifact, tmp_path):
    built_artifact("lenet-digits")
    out_json = tmp_path / "bench.json"
    code, out, err = invoke("bench", "--model", "lenet-digits", "--runs", "3", "--rounds", "2", "--no-tract",
                            "--json", str(out_json))
    assert code == 0, err
    assert "wasm" in out and "ORT 1 thread" in out
    report = json.loads(out_json.read_text())
    assert_schema(report)
    assert report["ok"] is True and report["model"] == "lenet-digits" and report["runs"] == 3
    assert report["rounds"] == 2
    wasm = report["wasm"]
    assert wasm["available"] and wasm["agrees"] and len(wasm["times_ms"]) == 3 and wasm["rounds"] == 2
    assert wasm["engine_flags"]["epoch_interruption"] is False  # as the runner runs it
    # the same module with epoch interruption, through the worker's own WASI runner
    checked = report["wasm_epoch"]
    assert checked["available"] and checked["agrees"] and len(checked["times_ms"]) == 3
    assert checked["engine_flags"]["epoch_interruption"] is True and report["ratios"]["epoch_cost_wasm"] > 0
    assert report["tract_wasm"]["available"] is False and "--no-tract" in report["tract_wasm"]["note"]
    assert wasm["linear_memory_bytes"] > 0 and wasm["wasm_bytes"] > 0 and wasm["instantiate_ms"] > 0
    assert report["ratios"]["wasm_vs_ort_1t"] > 0
    if report["tvm_native"]["available"]:
        assert report["tvm_native"]["same_plan_as_wasm"] in (True, None)


def test_bench_with_the_tract_peer(built_artifact, tmp_path):
    """The real tract peer (rust_app/peers/tract-wasm) on lenet-digits. Building it
    takes ~20 min on 2 cores, more than CI has to spare: this runs where
    `invoke bench` has built it once (it is then cached by its inputs)."""
    from wasmforge import images, peers

    cached = peers.wasm_path(images.recipe_digest("builder", images.load_pins()))
    if not cached.is_file():
        pytest.skip(f"the tract peer is not built here ({cached.name}); `invoke bench --model lenet-digits` builds it")
    built_artifact("lenet-digits")
    out_json = tmp_path / "bench.json"
    code, out, err = invoke("bench", "--model", "lenet-digits", "--runs", "2", "--json", str(out_json))
    assert code == 0, err
    report = json.loads(out_json.read_text())
    for engine in ("tract_wasm", "tract_wasm_epoch"):
        entry = report[engine]
        assert entry["available"] and entry["agrees"], entry
        assert len(entry["times_ms"]) == 2 and "tract-onnx 0.22.5" in entry["version"]
    assert report["ratios"]["tract_wasm_vs_wasm"] > 0 and "tract wasm / wasm" in out
