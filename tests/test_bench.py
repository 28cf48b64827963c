"""`invoke bench`: it runs, reports every engine, and its JSON has the fields.

Benchmarks are not tests: nothing here looks at the timings themselves. Tests
without Docker use a hand-made artifact whose `.wasm` is junk, which still runs
onnxruntime and TVM native for real and exercises the failure report; the real
module is benchmarked in the `docker` test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from tests.cli import invoke
from tests.manifests import seal
from wasmforge import bench, build
from wasmforge.artifact import ArtifactError
from wasmforge.errors import UserError
from wasmforge.hashing import sha256_file
from wasmforge.paths import ROOT

LENET = ROOT / "models" / "lenet-digits" / "lenet-digits.onnx"
LENET_INPUTS = [{"name": "input", "shape": [1, 1, 8, 8], "dtype": "float32"}]
LENET_OUTPUTS = [{"name": "logits", "shape": [1, 10], "dtype": "float32"}]

TOP_FIELDS = {"model", "runs", "seed", "wasm", "ort_1t", "ort_all", "tvm_native", "ratios", "host", "notes", "ok"}
WASM_FIELDS = {"instantiate_ms", "min_ms", "median_ms", "wasm_bytes", "linear_memory_bytes", "peak_rss_bytes"}
ENGINE_FIELDS = {"available", "min_ms", "median_ms", "peak_rss_bytes", "max_abs_diff", "agrees", "note"}
RATIO_FIELDS = {"wasm_vs_ort_1t", "wasm_vs_tvm_native", "wasm_vs_ort_all", "tvm_native_vs_ort_1t"}
HOST_FIELDS = {"cpu_model", "cores", "python", "versions"}


def fake_artifact(dist: Path, wasm_bytes: bytes = b"\0asm junk") -> Path:
    """dist/lenet-digits/ with correct hashes, real reference data and a .wasm of our choosing."""
    directory = dist / "lenet-digits"
    directory.mkdir(parents=True)
    (directory / "lenet-digits.wasm").write_bytes(wasm_bytes)
    build.write_reference(directory, LENET, {"inputs": LENET_INPUTS})
    seal(directory, name="lenet-digits", wasm="lenet-digits.wasm",
         source={"registry": "lenet-digits", "sha256": sha256_file(LENET)},
         inputs=LENET_INPUTS, outputs=LENET_OUTPUTS)
    return directory


def assert_schema(report: dict) -> None:
    assert TOP_FIELDS <= report.keys()
    assert WASM_FIELDS <= report["wasm"].keys()
    for engine in bench.ENGINES:
        assert ENGINE_FIELDS <= report[engine].keys(), engine
    assert RATIO_FIELDS <= report["ratios"].keys()
    assert HOST_FIELDS <= report["host"].keys()
    assert {"wasmtime", "onnxruntime", "tvm"} <= report["host"]["versions"].keys()


# --- without Docker ----------------------------------------------------------------


def test_missing_artifact_is_one_line_error(tmp_path):
    with pytest.raises(UserError) as info:
        bench.bench("lenet-digits", runs=2, dist=tmp_path, tract=False)
    message = str(info.value)
    assert "\n" not in message and "invoke build --model lenet-digits" in message


def test_invoke_bench_without_artifact_exits_with_one_line():
    code, _, err = invoke("bench", "--model", "no-such-model-built")
    assert code == 2
    assert err.strip().splitlines() == [
        "error: no artifact dist/no-such-model-built; build it with `invoke build --onnx FILE --name "
        "no-such-model-built` (not a registry model: `invoke models` lists them)"]


def test_tampered_artifact_is_refused_before_anything_runs(tmp_path):
    directory = fake_artifact(tmp_path)
    (directory / "lenet-digits.wasm").write_bytes(b"\0asm changed")
    with pytest.raises(ArtifactError, match="lenet-digits.wasm does not match"):
        bench.bench("lenet-digits", runs=2, dist=tmp_path, tract=False)


def test_runs_must_be_positive(tmp_path):
    with pytest.raises(UserError, match="--runs"):
        bench.bench("lenet-digits", runs=0, dist=tmp_path, tract=False)


def test_failing_engine_is_reported_and_the_others_still_measured(tmp_path):
    """A junk .wasm: the bench fails loudly, after a complete report with every field."""
    fake_artifact(tmp_path / "dist")
    out_json = tmp_path / "bench.json"
    record = Console(record=True, width=100)
    with pytest.raises(UserError, match="wasm failed: wasmtime cannot compile"):
        bench.bench("lenet-digits", runs=2, json_path=str(out_json), dist=tmp_path / "dist", tract=False,
                    console=record, out=record)
    report = json.loads(out_json.read_text())
    assert_schema(report)
    assert report["ok"] is False and report["runs"] == 2
    assert report["wasm"]["available"] is False and "cannot compile" in report["wasm"]["error"]
    assert report["wasm"]["wasm_bytes"] == len(b"\0asm junk")
    for engine in ("ort_1t", "ort_all"):
        entry = report[engine]
        assert entry["available"] and entry["agrees"], entry
        assert len(entry["times_ms"]) == 2 and entry["min_ms"] <= entry["median_ms"]
        assert entry["peak_rss_bytes"] > 0
    assert report["ort_1t"]["threads"] == 1
    assert report["ort_all"]["threads"] == bench.usable_cores()
    native = report["tvm_native"]
    if native["available"]:
        assert native["agrees"] and native["max_abs_diff"] < 1e-4
        assert report["ratios"]["tvm_native_vs_ort_1t"] > 0
    else:
        assert "TVM" in native["note"]
    assert report["ratios"]["wasm_vs_ort_1t"] is None
    text = record.export_text()
    assert "BENCH FAILED" in text and "FAILED" in text


def test_missing_tvm_skips_the_native_column(tmp_path, monkeypatch):
    shadow = tmp_path / "no-tvm"
    (shadow / "tvm").mkdir(parents=True)
    (shadow / "tvm" / "__init__.py").write_text("raise ImportError('no TVM here')\n")
    monkeypatch.setenv("PYTHONPATH", str(shadow))  # the workers see it after the repository root
    fake_artifact(tmp_path / "dist")
    record = Console(record=True, width=100)
    with pytest.raises(UserError):  # the junk .wasm still fails the bench
        bench.bench("lenet-digits", runs=1, json_path=str(tmp_path / "b.json"), dist=tmp_path / "dist", tract=False,
                    console=record, out=record)
    report = json.loads((tmp_path / "b.json").read_text())
    native = report["tvm_native"]
    assert native["available"] is False and native["error"] is None
    assert "no TVM here" in native["note"]
    assert any(note.startswith("TVM native skipped") for note in report["notes"])
    assert not any("TVM native" in problem for problem in bench.problems(report))
    assert "skipped" in record.export_text()


def _entry(median: float, agrees: bool = True, diff: float = 0.0) -> dict:
    entry = bench.empty_engine()
    entry.update(available=True, threads=1, min_ms=median, median_ms=median, times_ms=[median],
                 load_ms=1.0, peak_rss_bytes=2**20, max_abs_diff=diff, agrees=agrees, tolerance=1e-3)
    return entry


def _report(**engines) -> dict:
    report = {"model": "m", "runs": 1, "seed": 0, "notes": [],
              "host": {"cpu_model": "cpu", "cores": 4, "usable_cores": 4, "python": "3",
                       "versions": {"wasmtime": "1", "onnxruntime": "2", "tvm": "3"}},
              "wasm": {**_entry(2.0), "wasm_bytes": 1000, "linear_memory_bytes": 2**20, "instantiate_ms": 0.5,
                       "compile_ms": 10.0},
              "ort_1t": _entry(1.0), "ort_all": _entry(0.5), "tvm_native": _entry(1.6)}
    report.update(engines)
    report["ratios"] = bench.ratios(report)
    return report


def test_ratios_are_ratios_of_medians():
    ratios = bench.ratios(_report())
    assert ratios["wasm_vs_ort_1t"] == pytest.approx(2.0)
    assert ratios["wasm_vs_tvm_native"] == pytest.approx(1.25)
    assert ratios["wasm_vs_ort_all"] == pytest.approx(4.0)
    skipped = bench.ratios(_report(tvm_native=bench.empty_engine("no TVM")))
    assert skipped["wasm_vs_tvm_native"] is None and skipped["wasm_vs_ort_1t"] == pytest.approx(2.0)


def test_the_fastest_runs_ratio_is_taken_from_the_minima():
    report = _report()
    report["wasm"].update(min_ms=1.5, times_ms=[1.5, 2.0, 2.5])
    report["ort_1t"].update(min_ms=0.5, times_ms=[0.5, 1.0, 1.5])
    assert bench.ratios(report)["wasm_vs_ort_1t_fastest"] == pytest.approx(3.0)
    assert bench.ratios(_report(ort_1t=bench.empty_engine("skipped")))["wasm_vs_ort_1t_fastest"] is None


def test_a_quiet_run_gets_no_noise_note():
    report = _report()
    report["wasm"]["times_ms"] = [2.0, 2.1, 2.3, 2.2, 2.0, 2.6, 2.1, 2.0]  # one slow run of 8
    assert bench.noise_note(report) is None


def test_a_quarter_of_slow_runs_is_called_not_quiet_with_the_fastest_runs_ratio():
    report = _report()
    report["wasm"].update(min_ms=2.0, times_ms=[2.0, 2.1, 3.0, 2.9, 2.1, 2.0, 2.2, 2.05])  # 2 of 8 slow
    report["ratios"] = bench.ratios(report)
    note = bench.noise_note(report)
    assert note.startswith("not a quiet machine: 2 of 8 wasm runs over 1.2x the fastest (2.000-3.000 ms)")
    assert "ORT" not in note.split(";")[0]  # onnxruntime's single run says nothing either way
    assert note.endswith("wasm / ORT-1T by fastest runs: 2.00x")


def test_onnxruntime_runs_count_too():
    report = _report()
    report["ort_1t"].update(min_ms=1.0, times_ms=[1.0, 1.5, 1.5, 1.0])
    assert "2 of 4 ORT 1 thread runs" in bench.noise_note(report)


@pytest.mark.parametrize("times", [[2.0, 4.0], [0.2, 0.4, 0.4, 0.2]])
def test_too_few_or_too_short_runs_say_nothing_about_noise(times):
    report = _report()
    report["wasm"].update(median_ms=sorted(times)[len(times) // 2], times_ms=times)
    assert bench.noise_note(report) is None


def test_disagreement_is_loud():
    report = _report(wasm={**_entry(2.0, agrees=False, diff=0.5), "wasm_bytes": 1000,
                           "linear_memory_bytes": 0, "instantiate_ms": 0.1})
    found = bench.problems(report)
    assert len(found) == 1 and "wasm DISAGREES" in found[0]
    record = Console(record=True, width=120)
    bench.render(report, record)
    assert "DISAGREES" in record.export_text()


def test_an_input_unlike_the_recorded_case0_is_noted(tmp_path):
    case0 = tmp_path / "reference" / "case0"
    case0.mkdir(parents=True)
    recorded = np.arange(4, dtype=np.float32)
    np.save(case0 / "input0.npy", recorded)
    assert bench._reference_input_notes(tmp_path, [recorded.copy()]) == []
    notes = bench._reference_input_notes(tmp_path, [recorded + 1])
    assert len(notes) == 1 and "differs from reference/case0" in notes[0]
    assert bench._reference_input_notes(tmp_path, [recorded, recorded])  # a second input is a difference too
    assert bench._reference_input_notes(tmp_path / "nothing-recorded", [recorded]) == []


# --- with Docker ------------------------------------------------------------------


# --- rounds, peers and engine flags ---------------------------------------------------


def test_runs_are_spread_over_rounds():
    assert bench.round_sizes(10, 3) == [4, 3, 3]
    assert bench.round_sizes(2, 3) == [1, 1]  # never an empty round
    assert bench.round_sizes(1, 1) == [1]
    assert sum(bench.round_sizes(37, 5)) == 37


def test_rounds_merge_into_one_engine_result():
    first = bench.Step({"times_ms": [3.0, 1.0], "warmup_ms": 9.0, "load_ms": 4.0, "peak_rss_bytes": 10}, ["a"])
    second = bench.Step({"times_ms": [2.0], "warmup_ms": 7.0, "load_ms": 6.0, "peak_rss_bytes": 30}, ["b"])
    merged = bench.merge_rounds([first, second])
    assert merged.result["times_ms"] == [3.0, 1.0, 2.0] and merged.result["median_ms"] == 2.0
    assert merged.result["min_ms"] == 1.0 and merged.result["max_ms"] == 3.0
    assert merged.result["warmup_ms"] == 9.0 and merged.result["load_ms"] == 5.0
    assert merged.result["peak_rss_bytes"] == 30 and merged.result["rounds"] == 2
    assert merged.outputs == ["b"]
    failed = bench.Step({}, [], error="boom")
    assert bench.merge_rounds([first, failed]).error == "boom"


def test_tract_and_epoch_ratios():
    report = _report(wasm_epoch=_entry(2.2), tract_wasm=_entry(5.0), tract_wasm_epoch=_entry(6.5))
    ratios = bench.ratios(report)
    assert ratios["tract_wasm_vs_wasm"] == pytest.approx(2.5)
    assert ratios["tract_wasm_vs_wasm_epoch"] == pytest.approx(6.5 / 2.2)
    assert ratios["epoch_cost_tract_wasm"] == pytest.approx(1.3)
    assert ratios["epoch_cost_wasm"] == pytest.approx(1.1)
    assert bench.ratios(_report())["tract_wasm_vs_wasm"] is None  # not measured: no ratio
    record = Console(record=True, width=200)
    bench.render(report, record)
    assert "tract wasm / wasm 2.50x" in record.export_text()


def test_every_wasm_engine_reports_its_flags():
    for engine in bench.ENGINES:
        flags = bench.engine_flags(engine)
        if engine in bench.WASM_ENGINES:
            assert flags["epoch_interruption"] is engine.endswith("_epoch")
            assert flags["relaxed_simd"] is True and flags["cranelift_opt_level"] == "speed"
        else:
            assert flags is None


def test_without_the_peer_the_tract_columns_say_why(tmp_path):
    fake_artifact(tmp_path / "dist")
    out_json = tmp_path / "bench.json"
    with pytest.raises(UserError):  # the junk .wasm still fails the bench
        bench.bench("lenet-digits", runs=1, json_path=str(out_json), dist=tmp_path / "dist", tract=False,
                    console=Console(record=True), out=Console(record=True))
    report = json.loads(out_json.read_text())
    assert report["tract_wasm"]["available"] is False and "--no-tract" in report["tract_wasm"]["note"]
    assert report["tract_wasm"]["engine_flags"]["epoch_interruption"] is False


# A stand-in for the tract peer: writes /io/output0.npy (float32 [[1, 2]]) and
# prints the peer's timing line, as rust_app/peers/tract-wasm does.
_NPY = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }" + b" " * 58 + b"\n" \
    + np.array([1.0, 2.0], dtype="<f4").tobytes()
_TIMINGS = b'{"load_ms": 1.5, "warmup_ms": 2.0, "times_ms": [1.0, 3.0]}\n'


def _wat_bytes(data: bytes) -> str:
    return "".join(f"\\{b:02x}" for b in data)


FAKE_PEER = f"""
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "output0.npy")
  (data (i32.const 256) "{_wat_bytes(_NPY)}")
  (data (i32.const 1024) "{_wat_bytes(_TIMINGS)}")
  (func (export "_start")
    ;; fd 3 is the first preopened directory (/io); O_CREAT|O_TRUNC; the new fd at 8
    (drop (call $open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 11) (i32.const 9)
                      (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 8)))
    (i32.store (i32.const 32) (i32.const 256))
    (i32.store (i32.const 36) (i32.const {len(_NPY)}))
    (drop (call $write (i32.load (i32.const 8)) (i32.const 32) (i32.const 1) (i32.const 40)))
    (i32.store (i32.const 32) (i32.const 1024))
    (i32.store (i32.const 36) (i32.const {len(_TIMINGS)}))
    (drop (call $write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 40)))))
"""


@pytest.mark.parametrize("epoch", [True, False])
def test_the_wasi_step_runs_a_peer_and_keeps_its_own_timings(tmp_path, epoch):
    import wasmtime

    from wasmforge import bench_worker
    from wasmforge.runner import new_engine

    cwasm = tmp_path / "peer.cwasm"
    cwasm.write_bytes(wasmtime.Module(new_engine(epoch_interruption=epoch), FAKE_PEER).serialize())
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not read by the fake")
    np.save(tmp_path / "input0.npy", np.zeros((1, 1, 8, 8), np.float32))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = bench_worker.step_wasi({"cwasm": str(cwasm), "epoch": epoch, "flavor": "tract", "runs": 2,
                                     "outputs": 1, "onnx": str(onnx), "inputs": [str(tmp_path / "input0.npy")]},
                                    out_dir)
    assert result["times_ms"] == [1.0, 3.0] and result["median_ms"] == 2.0
    assert result["warmup_ms"] == 2.0 and result["load_ms"] == 1.5 and result["threads"] == 1
    assert np.load(out_dir / "output0.npy").tolist() == [[1.0, 2.0]]


def test_a_peer_reporting_the_wrong_number_of_runs_is_an_error(tmp_path):
    import wasmtime

    from wasmforge import bench_worker
    from wasmforge.runner import new_engine

    cwasm = tmp_path / "peer.cwasm"
    cwasm.write_bytes(wasmtime.Module(new_engine(), FAKE_PEER).serialize())
    (tmp_path / "model.onnx").write_bytes(b"x")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(bench_worker.StepError, match="reported 2 timings for 5 runs"):
        bench_worker.step_wasi({"cwasm": str(cwasm), "epoch": False, "flavor": "tract", "runs": 5, "outputs": 1,
                                "onnx": str(tmp_path / "model.onnx"), "inputs": []}, out_dir)
