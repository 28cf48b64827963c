"""`invoke profile` on the real lenet-digits module: one record per plan call,
the plan's kernels and FLOPs, times that add up, outputs unchanged by profiling."""

from __future__ import annotations

import io
import json

import numpy as np
from rich.console import Console

from wasmforge import profile, reference
from wasmforge.model import load


def test_profile_of_lenet_digits(built_artifact, tmp_path):
    directory = built_artifact("lenet-digits")
    plan = json.loads((directory / "plan.json").read_text())
    quiet = Console(file=io.StringIO(), width=200)
    target = tmp_path / "profile.json"
    report = profile.profile("lenet-digits", runs=3, json_path=str(target), dist=directory.parent,
                             console=quiet, out=quiet)
    assert json.loads(target.read_text()) == json.loads(json.dumps(report))

    calls = report["calls"]
    assert len(calls) == len(plan["calls"])
    for index, (record, planned) in enumerate(zip(calls, plan["calls"])):
        assert (record["index"], record["kernel"], record["op"]) == (index, planned["kernel"], planned["op"])
        assert record["flops"] == planned["flops"]
        assert [a["shape"] for a in record["args"]] == [plan["tensors"][t]["shape"] for t in planned["args"]]
        assert len(record["ms_runs"]) == 3
    assert {c["op"] for c in calls} >= {"conv2d", "matmul", "pool"}
    # Every run: the calls (timed inside it) add up to at most the run.
    assert profile.consistent(report) == []
    assert 0 < report["kernel_ms"] <= max(report["run_ms"])
    assert report["flops"] == sum(c["flops"] for c in plan["calls"])
    assert report["peak"]["kind"] == "relaxed_madd" and report["peak"]["gflops"] > 0
    assert 0 < report["percent_of_peak"] < 100
    assert "top 7 of 7 kernel calls" in quiet.file.getvalue()


def test_profiling_leaves_the_outputs_alone(built_artifact):
    model = load(built_artifact("lenet-digits"))
    with model:
        x = model.check_feeds(dict(zip([t.name for t in model.inputs],
                                       reference.seeded_inputs(model.inputs, seed=1))))
        plain = model.wasm.run(x)
        profiled = model.wasm.run(x, profile=True)
    assert plain.profile is None
    assert all(np.array_equal(a, b) for a, b in zip(plain.outputs, profiled.outputs))
    planned = json.loads((model.directory / "plan.json").read_text())["calls"]
    assert len(profiled.profile["calls"]) == len(planned)
