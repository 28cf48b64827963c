"""`invoke profile`: the module's profile document checked, the % of peak and
per-operator sums, the table without a terminal. No Docker: the module's own
output is stood in for by a hand-written document (the e2e test runs a real one)."""

from __future__ import annotations

import copy
import io
import json

import pytest
from rich.console import Console

from tests.cli import invoke
from wasmforge import profile

RUNS = 3


def call(index: int, kernel: str, op: str | None, flops: int | None, ms_runs: list[float]) -> dict:
    return {"index": index, "kernel": kernel, "op": op,
            "args": [{"dtype": "float32", "shape": [1, 8]}, {"dtype": "float32", "shape": [1, 4, 2]}],
            "flops": flops, "ms": sorted(ms_runs)[len(ms_runs) // 2], "gflops": None, "ms_runs": ms_runs}


def document() -> dict:
    """Three calls, three runs, as the module writes it (rust_app/runtime/src/profile.rs)."""
    return {"profile": 1, "model": "m", "runs": RUNS, "run_ms": [10.0, 6.5, 7.0], "calls": [
        call(0, "fused_conv2d_nchwc_add_relu", "conv2d", 8_000_000, [5.0, 4.0, 4.0]),
        call(1, "te_layout_transform", "layout_transform", 0, [0.5, 0.5, 1.0]),
        call(2, "fused_conv2d_nchwc1_add1", "conv2d", 2_000_000, [3.0, 1.0, 1.0]),
    ]}


def test_percent_of_peak_and_gflops():
    report = profile.summarize(document(), peak=40.0, peak_name="relaxed_madd")
    conv, layout, conv1 = report["calls"]
    # 8 MFLOP in 4 ms: 2 GFLOP/s, 5% of a 40 GFLOP/s peak.
    assert conv["gflops"] == pytest.approx(2.0)
    assert conv["percent_of_peak"] == pytest.approx(5.0)
    # No FLOPs, no rate (not 0 GFLOP/s): a layout transform moves data.
    assert layout["gflops"] is None and layout["percent_of_peak"] is None
    assert conv1["gflops"] == pytest.approx(2.0)
    # Shares of the kernels' time: 4 + 0.5 + 1 = 5.5 ms.
    assert report["kernel_ms"] == pytest.approx(5.5)
    assert [c["percent_of_time"] for c in report["calls"]] == pytest.approx([400 / 5.5, 50 / 5.5, 100 / 5.5])
    # Totals: 10 MFLOP at the median run (7 ms).
    assert report["inference_ms"] == pytest.approx(7.0)
    assert report["flops"] == 10_000_000
    assert report["gflops"] == pytest.approx(10 / 7)
    assert report["percent_of_peak"] == pytest.approx(100 * (10 / 7) / 40)
    assert report["kernel_percent_of_run"] == pytest.approx([85.0, 5.5 / 6.5 * 100, 6 / 7 * 100])
    assert report["peak"] == {"kind": "relaxed_madd", "gflops": 40.0, "measured": {}}


def test_operator_kinds_are_summed():
    report = profile.summarize(document(), peak=40.0)
    assert [e["op"] for e in report["ops"]] == ["conv2d", "layout_transform"]
    conv = report["ops"][0]
    assert (conv["calls"], conv["ms"], conv["flops"]) == (2, pytest.approx(5.0), 10_000_000)
    assert conv["percent_of_peak"] == pytest.approx(100 * 2.0 / 40)
    doc = document()
    doc["calls"][2]["flops"] = None  # one call of the kind without an estimate: no total
    assert profile.summarize(doc, peak=40.0)["ops"][0]["flops"] is None
    assert profile.summarize(doc, peak=40.0)["calls_without_flops"] == 1


def test_no_peak_gives_no_percentages():
    report = profile.summarize(document(), peak=None)
    assert report["percent_of_peak"] is None
    assert all(c["percent_of_peak"] is None for c in report["calls"])


def test_peak_follows_the_module_features():
    assert profile.peak_kind(["relaxed-simd", "simd128"]) == "relaxed_madd"
    assert profile.peak_kind(["simd128"]) == "mul_add"


def _broken(edit):
    doc = document()
    edit(doc)
    return doc


@pytest.mark.parametrize("doc", [
    _broken(lambda d: d.update(profile=2)),
    _broken(lambda d: d.pop("calls")),
    _broken(lambda d: d.update(runs=2)),  # run_ms has 3
    _broken(lambda d: d["calls"].reverse()),  # not in plan order
    _broken(lambda d: d["calls"][1].update(flops=-1)),
    _broken(lambda d: d["calls"][1].update(flops=1.5)),
    _broken(lambda d: d["calls"][1].update(ms="fast")),
    _broken(lambda d: d["calls"][1]["ms_runs"].pop()),
    _broken(lambda d: d["calls"][1].update(ms_runs=[1.0, -1.0, 2.0])),
    _broken(lambda d: d["calls"][1].pop("kernel")),
    _broken(lambda d: d["calls"][1].update(args=None)),
    [],
])
def test_a_document_that_is_not_a_profile_is_refused(doc):
    with pytest.raises(profile.ProfileError, match="bad profile from the module"):
        profile.check_document(doc)


def test_the_document_schema_round_trips_json():
    doc = json.loads(json.dumps(document()))
    assert profile.check_document(doc) is doc
    report = profile.summarize(doc, peak=40.0)
    assert json.loads(json.dumps(report)) == report  # plain JSON, nothing else in it
    assert {"format", "model", "runs", "engine", "peak", "run_ms", "inference_ms", "kernel_ms", "flops",
            "gflops", "percent_of_peak", "calls", "ops"} <= set(report)
    assert {"index", "kernel", "op", "args", "flops", "ms", "ms_runs", "gflops", "percent_of_peak",
            "percent_of_time"} <= set(report["calls"][0])


def test_kernels_cannot_take_longer_than_their_run():
    assert profile.consistent(document()) == []
    doc = copy.deepcopy(document())
    doc["calls"][0]["ms_runs"][1] = 6.0  # 6 + 0.5 + 1 > 6.5
    assert profile.consistent(doc) == ["run 1: the kernels took 7.500000 ms of a 6.500000 ms run"]


def test_table_is_readable_without_a_terminal():
    stream = io.StringIO()
    console = Console(file=stream, width=200, soft_wrap=True)
    profile.show(profile.summarize(document(), peak=40.0, peak_name="relaxed_madd"), console, top=2)
    text = stream.getvalue()
    assert "\x1b[" not in text  # no colour codes into a pipe
    assert "top 2 of 3 kernel calls" in text
    lines = [line for line in text.splitlines() if "fused_conv2d_nchwc_add_relu" in line]
    assert len(lines) == 1 and "4x2" in lines[0] and "5.0" in lines[0]  # output shape, % of peak
    assert "te_layout_transform" not in text.split("by operator kind")[0]  # only the top 2 by time
    assert "% of the wasm SIMD peak (relaxed_madd: 40.0 GFLOP/s" in text


@pytest.mark.parametrize("args, message", [
    (["--model", "no-such-model"], "no artifact dist/no-such-model"),
    (["--model", "lenet-digits", "--runs", "0"], "--runs must be an integer >= 1, got '0'"),
    (["--model", "lenet-digits", "--top", "x"], "--top must be an integer >= 1, got 'x'"),
    (["--model", "lenet-digits", "--json", "/no/such/dir/p.json"], "--json: cannot write"),
])
def test_bad_options_are_one_error_line(args, message):
    code, out, err = invoke("profile", *args)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error: ")
    assert message in err
    assert "Traceback" not in err


# --- the host side with a stand-in module (wasmtime, no Docker) --------------------------


def stand_in(tmp_path, text: str):
    """dist/m/: an identity module that writes `text` as its profile."""
    from tests.wasm_modules import identity_artifact, info_json, profile_writer_wat

    dist = tmp_path / "dist"
    identity_artifact(dist, wat=profile_writer_wat(info_json("x", "y", (1, 4)), text))
    return dist


def module_document() -> dict:
    doc = document()
    doc["model"] = "m"
    return doc


def test_the_runner_reads_the_profile_the_module_wrote(tmp_path):
    import numpy as np

    from wasmforge.model import load

    dist = stand_in(tmp_path, json.dumps(module_document()))
    with load(dist / "m") as model:
        x = np.arange(4, dtype=np.float32).reshape(1, 4)
        result = model.wasm.run([x], repeat=RUNS, profile=True)
        assert result.profile == module_document()
        assert np.array_equal(result.outputs[0], x)
        assert model.wasm.run([x]).profile is None


@pytest.mark.parametrize("text, message", [
    ("not json at all", "wrote a profile that is not JSON"),
    ("[1, 2]", "wrote a profile that is not a JSON object"),
    (" " * 2000, "more than the output limit"),
])
def test_the_runner_refuses_a_bad_profile(tmp_path, text, message):
    import numpy as np

    from wasmforge.errors import WasmRunError
    from wasmforge.runner import WasmModel

    dist = stand_in(tmp_path, text)
    with WasmModel(dist / "m" / "m.wasm", output_limit=1000) as model:
        with pytest.raises(WasmRunError, match=message):
            model.run([np.zeros((1, 4), np.float32)], profile=True)


def test_invoke_profile_with_a_stand_in_module(tmp_path, monkeypatch):
    from wasmforge import roofline

    monkeypatch.setattr(roofline, "measure", lambda engine: {"relaxed_madd": 40.0, "mul_add": 20.0})
    dist = stand_in(tmp_path, json.dumps(module_document()))
    target = tmp_path / "out" / "profile.json"
    target.parent.mkdir()
    stream = io.StringIO()
    console = Console(file=stream, width=200)
    report = profile.profile("m", runs=RUNS, json_path=str(target), dist=dist, console=console, out=console)
    assert json.loads(target.read_text()) == report
    # The module says nothing of relaxed-simd: the mul+add peak bounds it.
    assert report["peak"] == {"kind": "mul_add", "gflops": 20.0, "measured": {"relaxed_madd": 40.0, "mul_add": 20.0}}
    assert report["calls"][0]["percent_of_peak"] == pytest.approx(10.0)
    assert "top 3 of 3 kernel calls" in stream.getvalue()
    assert [p.name for p in target.parent.iterdir()] == ["profile.json"]  # no temporary left


def test_times_that_do_not_add_up_are_refused(tmp_path):
    doc = module_document()
    doc["calls"][0]["ms_runs"][1] = 60.0
    dist = stand_in(tmp_path, json.dumps(doc))
    quiet = Console(file=io.StringIO())
    with pytest.raises(profile.ProfileError, match="run 1: the kernels took"):
        profile.profile("m", runs=RUNS, dist=dist, console=quiet, out=quiet)
