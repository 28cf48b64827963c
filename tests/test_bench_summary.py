import json

import pytest
from rich.console import Console

from wasmforge import bench, bench_summary
from wasmforge.errors import UserError

from .cli import invoke
from .test_bench import _entry, _report


def _full_report(model: str = "m") -> dict:
    report = _report(tract_wasm=_entry(8.0))
    report.update(model=model, model_flops=4e9, ok=True,
                  roofline={"epoch_on": {"relaxed_madd": 50.0}, "epoch_off": {"relaxed_madd": 60.0}})
    report["wasm"].update(bench.throughput(report["wasm"], "wasm", report["model_flops"], report["roofline"]))
    return report


def test_a_row_holds_the_medians_ratios_and_share_of_peak():
    row = bench_summary.row(_full_report())
    assert (row["wasm_ms"], row["tract_wasm_ms"], row["ort_1t_ms"], row["ort_all_ms"], row["tvm_native_ms"]) == (
        2.0, 8.0, 1.0, 0.5, 1.6)
    assert row["wasm_vs_ort_1t"] == pytest.approx(2.0)
    assert row["tract_wasm_vs_wasm"] == pytest.approx(4.0)
    assert row["gflop"] == pytest.approx(4.0)
    assert row["wasm_gflops"] == pytest.approx(2000.0)  # 4 GFLOP in 2 ms
    assert row["peak_gflops"] == 60.0  # the runner's engine: no epoch interruption
    assert row["wasm_percent_of_peak"] == pytest.approx(2000.0 / 60.0 * 100)


def test_an_engine_that_did_not_run_is_a_dash_not_a_number():
    report = _full_report()
    report["tract_wasm"] = bench.empty_engine("not measured (--no-tract)")
    report["ratios"] = bench.ratios(report)
    row = bench_summary.row(report)
    assert row["tract_wasm_ms"] is None and row["tract_wasm_vs_wasm"] is None
    cells = dict(zip(bench_summary.HEADERS, bench_summary.cells(row)))
    assert cells["tract wasm ms"] == "-" and cells["tract/wasm"] == "-"
    assert cells["wasm/ORT-1T"] == "2.00x"


def test_the_fastest_runs_column_and_the_not_quiet_caption():
    quiet, noisy = _full_report("quiet"), _full_report("noisy")
    for report, ort_min in ((quiet, 0.5), (noisy, 0.8)):
        report["ort_1t"]["min_ms"] = ort_min
        report["ratios"] = bench.ratios(report)
    noisy["noisy"] = True
    rows = [bench_summary.row(quiet), bench_summary.row(noisy)]
    assert [dict(zip(bench_summary.HEADERS, bench_summary.cells(r)))["fastest runs"] for r in rows] == [
        "4.00x", "2.50x"]
    record = Console(record=True, width=250)
    bench_summary.render(rows, record)
    text = record.export_text()
    assert "not a quiet run" in text and "noisy" in text.split("not a quiet run")[1]
    record = Console(record=True, width=250)
    bench_summary.render(rows[:1], record)
    assert "not a quiet run" not in record.export_text()


def test_markdown_has_one_line_per_model():
    rows = [bench_summary.row(_full_report(name)) for name in ("a", "b")]
    lines = bench_summary.markdown(rows).splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("| model | wasm ms |")
    assert lines[2].startswith("| a | 2.000 | 8.000 |") and lines[3].startswith("| b |")
    assert all(line.count("|") == len(bench_summary.HEADERS) + 1 for line in lines)


def test_a_failing_model_does_not_stop_the_others(monkeypatch, tmp_path):
    def fake_bench(model, **options):
        if model == "broken":
            raise UserError("no artifact dist/broken")
        return _full_report(model)

    monkeypatch.setattr(bench, "bench", fake_bench)
    out = tmp_path / "all.json"
    with pytest.raises(UserError, match="1 of 3 model.*broken"):
        bench_summary.bench_models(["a", "broken", "b"], json_path=str(out))
    document = json.loads(out.read_text())
    assert [r["model"] for r in document["models"]] == ["a", "b"]
    assert [r["model"] for r in document["summary"]] == ["a", "b"]


def test_the_task_refuses_onnx_with_several_models():
    code, _, err = invoke("bench", "--model", "a", "--model", "b", "--onnx", "x.onnx")
    assert code == 2
    assert err.strip().splitlines() == ["error: --onnx names the ONNX file of one artifact: bench one --model with it"]
