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
    code, out, err = invoke("bench", "--model", "lenet-digits", "--runs", "2", "--json", str(out_json))
    assert code == 0, err
    assert "wasm" in out and "ORT 1 thread" in out
    report = json.loads(out_json.read_text())
    assert_schema(report)
    assert report["ok"] is True and report["model"] == "lenet-digits" and report["runs"] == 2
    wasm = report["wasm"]
    assert wasm["available"] and wasm["agrees"] and len(wasm["times_ms"]) == 2
    assert wasm["linear_memory_bytes"] > 0 and wasm["wasm_bytes"] > 0 and wasm["instantiate_ms"] > 0
    assert report["ratios"]["wasm_vs_ort_1t"] > 0
    if report["tvm_native"]["available"]:
        assert report["tvm_native"]["same_plan_as_wasm"] in (True, None)
