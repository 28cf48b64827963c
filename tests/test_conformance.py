"""invoke conformance: case discovery, sampling, classification, the cache, the
report; one e2e run of a few cases through the real pipeline (marked docker)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from wasmforge.compiler.request import JobResult
from wasmforge.conformance import cases as casemod
from wasmforge.conformance import report
from wasmforge.conformance.cases import Case
from wasmforge.conformance.results import (BUILD_ERROR, FAIL, PASS, UNSUPPORTED, CaseResult, ResultCache,
                                           classify_build, compare_outputs)
from wasmforge.errors import UserError

# --- helpers -----------------------------------------------------------------------


def write_case(directory: Path, *, elem=TensorProto.FLOAT, shape=(2, 3), op="Relu", data_sets=1,
               outputs_given=1, shapes=None) -> Case:
    """A one-node case in the onnx backend layout."""
    x = helper.make_tensor_value_info("x", elem, list(shape))
    y = helper.make_tensor_value_info("y", elem, list(shape))
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    directory.mkdir(parents=True)
    (directory / "model.onnx").write_bytes(model.SerializeToString())
    for n in range(data_sets):
        data = directory / f"test_data_set_{n}"
        data.mkdir()
        dims = (shapes or [shape] * data_sets)[n]
        if elem == TensorProto.FLOAT:
            array = np.arange(np.prod(dims), dtype=np.float32).reshape(dims) - 2
            (data / "input_0.pb").write_bytes(numpy_helper.from_array(array).SerializeToString())
            for k in range(outputs_given):
                (data / f"output_{k}.pb").write_bytes(
                    numpy_helper.from_array(np.maximum(array, 0)).SerializeToString())
        else:
            values = [b"a" if elem == TensorProto.STRING else 0] * int(np.prod(dims))
            tensor = helper.make_tensor("x", elem, list(dims), values)
            (data / "input_0.pb").write_bytes(tensor.SerializeToString())
            (data / "output_0.pb").write_bytes(tensor.SerializeToString())
    return Case("node", directory.name, directory)


# --- discovery and sampling ---------------------------------------------------------


@pytest.mark.parametrize("suite", ["pytorch-converted", "pytorch-operator", "simple"])
def test_shipped_suites_are_discovered(suite):
    found = casemod.discover(suite)
    assert len(found) > 10
    assert [c.name for c in found] == sorted(c.name for c in found)
    for case in found:
        assert case.model.is_file() and case.data_sets(), case.name
        assert case.rtol == 1e-3 and case.atol == 1e-7


def test_node_data_is_generated_from_the_pinned_onnx(tmp_path, monkeypatch):
    import onnx.backend.test.case.node as node_cases

    fake = node_cases.TestCase(name="test_fake_relu", model_name="test_fake_relu", url=None, model_dir=None,
                               model=helper.make_model(helper.make_graph(
                                   [helper.make_node("Relu", ["x"], ["y"])], "g",
                                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])),
                               data_sets=[([np.array([-1.0, 2.0], np.float32)], [np.array([0.0, 2.0], np.float32)])],
                               kind="node", rtol=1e-3, atol=1e-7)
    monkeypatch.setattr(node_cases, "collect_testcases", lambda *a: [fake])
    (found,) = casemod.discover("node", tmp_path)
    assert found.name == "test_fake_relu" and found.directory.parent.name == f"node-{onnx.__version__}"
    data = casemod.load_case(found)
    assert data.unsupported is None and data.operator == "Relu"
    np.testing.assert_array_equal(data.data_sets[0][1][0], [0.0, 2.0])
    # Generated once: a second discovery does not regenerate.
    monkeypatch.setattr(node_cases, "collect_testcases", lambda *a: pytest.fail("regenerated"))
    assert casemod.discover("node", tmp_path) == [found]


def test_light_suite_gets_onnx_dummy_inputs(tmp_path):
    found = casemod.discover("light", tmp_path)
    assert {c.name for c in found} >= {"test_resnet50", "test_squeezenet"}
    densenet = next(c for c in found if c.name == "test_densenet121")
    assert densenet.rtol == 2e-3  # onnx's own tolerance for it
    data = casemod.load_case(next(c for c in found if c.name == "test_squeezenet"))
    assert data.unsupported is None
    (inputs, outputs), = data.data_sets
    assert inputs[0].shape == (1, 3, 224, 224) and inputs[0].max() < 1.0
    assert len(outputs) == 1


def test_sampling_is_seeded_deterministic_and_stable():
    everything = [Case("node", f"test_{i:04d}", Path("/nowhere")) for i in range(500)]
    first = casemod.sample(everything, 40, seed=0)
    assert len(first) == 40 and first == casemod.sample(list(reversed(everything)), 40, seed=0)
    assert [c.name for c in first] == sorted(c.name for c in first)
    assert casemod.sample(everything, 40, seed=1) != first
    # A new case displaces at most one of the old sample.
    grown = casemod.sample(everything + [Case("node", "test_new", Path("/nowhere"))], 40, seed=0)
    assert len(set(c.name for c in first) - set(c.name for c in grown)) <= 1
    assert casemod.sample(everything, None) == everything
    assert casemod.sample(everything, 10_000) == everything


def test_only_narrows_the_cases_by_name_pattern():
    everything = [Case("node", name, Path("/nowhere"))
                  for name in ("test_abs", "test_attention_3d", "test_attention_4d_expanded", "test_cumprod_1d")]
    chosen = casemod.select(everything, ["test_attention_*", "test_cum*"])
    assert [c.name for c in chosen] == ["test_attention_3d", "test_attention_4d_expanded", "test_cumprod_1d"]
    assert casemod.select(everything, None) == everything
    assert casemod.select(everything, ["test_nothing*"]) == []


def test_only_cannot_be_merged_into_the_docs():
    from wasmforge.conformance.run import conformance

    with pytest.raises(UserError, match="--only"):
        conformance("node", only="test_abs", docs=True)
    with pytest.raises(UserError, match="pattern"):
        conformance("node", only=" , ")


def test_unknown_suite_is_refused():
    with pytest.raises(ValueError):
        casemod.discover("nope")


# --- reading cases -------------------------------------------------------------------


def test_case_shapes_come_from_the_test_data(tmp_path):
    data = casemod.load_case(write_case(tmp_path / "test_relu", shape=("N", 3), shapes=[(4, 3)]))
    assert data.unsupported is None and data.input_shapes == {"x": [4, 3]}
    assert data.ops == ["Relu"] and data.operator == "Relu"


@pytest.mark.parametrize("elem, reason", [(TensorProto.BFLOAT16, "dtype bfloat16 (input 'x')"),
                                          (TensorProto.STRING, "dtype string (input 'x')"),
                                          (TensorProto.COMPLEX64, "dtype complex64 (input 'x')")])
def test_dtypes_the_plan_cannot_express_are_unsupported(tmp_path, elem, reason):
    data = casemod.load_case(write_case(tmp_path / "test_x", elem=elem, op="Identity"))
    assert data.unsupported == reason


def test_sequence_inputs_are_unsupported(tmp_path):
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("SequenceAt", ["s", "i"], ["y"])], "g",
                              [seq, helper.make_tensor_value_info("i", TensorProto.INT64, [])], [y])
    directory = tmp_path / "test_seq"
    (directory / "test_data_set_0").mkdir(parents=True)
    (directory / "model.onnx").write_bytes(helper.make_model(graph).SerializeToString())
    data = casemod.load_case(Case("node", "test_seq", directory))
    assert data.unsupported == "sequence input 's'"
    assert data.operator == "SequenceAt"


def test_data_sets_with_different_shapes_are_unsupported(tmp_path):
    case = write_case(tmp_path / "test_two", shape=("N", 3), data_sets=2, shapes=[(1, 3), (2, 3)])
    assert "differ in input shapes" in casemod.load_case(case).unsupported


def test_missing_outputs_are_unsupported(tmp_path):
    case = write_case(tmp_path / "test_noout", outputs_given=0)
    assert casemod.load_case(case).unsupported == "test data give 0 of 1 outputs"


def test_expanded_cases_name_the_operator_they_expand(tmp_path):
    write_case(tmp_path / "test_thing", op="Relu")
    expanded = tmp_path / "test_thing_expanded"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    nodes = [helper.make_node("Neg", ["x"], ["n"]), helper.make_node("Neg", ["n"], ["y"])]
    expanded.mkdir()
    (expanded / "model.onnx").write_bytes(helper.make_model(helper.make_graph(nodes, "g", [x], [y]))
                                          .SerializeToString())
    model = onnx.load(str(expanded / "model.onnx"))
    assert casemod.operator_of(Case("node", expanded.name, expanded), model) == "Relu"


# --- classification and comparison --------------------------------------------------


@pytest.mark.parametrize("result, status, reason_has", [
    (JobResult("c1", error="m.onnx uses ONNX operators the TVM frontend does not support: CumProd, Foo",
               exit_code=2, stage="import"), UNSUPPORTED, "operator CumProd, Foo"),
    (JobResult("c1", error="import failed: TVM could not import the model: CumSum with non-constant axis "
                           "input is not supported yet.", exit_code=2, stage="import"),
     UNSUPPORTED, "CumSum with non-constant axis"),
    (JobResult("c1", error="import failed: TVM could not import the model: Node cannot handle ShapeExpr "
                           "inputs.", exit_code=2, stage="import"), BUILD_ERROR, "import failed"),
    (JobResult("c1", error="plan failed: unsupported VM builtin vm.builtin.foo", exit_code=2, stage="plan"),
     BUILD_ERROR, "plan failed"),
    (JobResult("c1", error="link failed: cargo build exited with code 101", exit_code=1, stage="link"),
     BUILD_ERROR, "link failed"),
    (JobResult("c1", error="internal error: boom", exit_code=1, stage="internal"), BUILD_ERROR,
     "internal error: boom"),
    (None, BUILD_ERROR, "reported nothing"),
])
def test_build_results_are_classified(result, status, reason_has):
    got_status, reason, _ = classify_build(result)
    assert got_status == status and reason_has in reason


def test_outputs_compare_like_the_onnx_runner():
    ref = np.array([1.0, 2.0, np.nan], np.float32)
    assert compare_outputs([ref + 1e-4], [ref], 1e-3, 1e-7) is None  # within rtol
    assert "1 of 3 values differ" in compare_outputs([ref + np.float32([0, 0.1, 0])], [ref], 1e-3, 1e-7)
    assert "shape" in compare_outputs([ref[:2]], [ref], 1e-3, 1e-7)
    assert "dtype" in compare_outputs([ref.astype(np.float64)], [ref], 1e-3, 1e-7)
    assert "2 outputs" in compare_outputs([ref, ref], [ref], 1e-3, 1e-7)
    assert compare_outputs([np.array([True, False])], [np.array([True, False])], 1e-3, 1e-7) is None
    assert compare_outputs([np.array([3], np.int64)], [np.array([4], np.int64)], 1e-3, 1e-7) is not None
    assert compare_outputs([np.zeros((0, 2), np.float32)], [np.zeros((0, 2), np.float32)], 1e-3, 1e-7) is None
    nan = compare_outputs([np.float32([np.nan, 1.0, 2.0])], [np.float32([0.0, 1.0, np.nan])], 1e-3, 1e-7)
    assert "1 NaN where a number was expected" in nan and "1 number(s) where NaN was expected" in nan


# --- the cache ---------------------------------------------------------------------


def test_results_are_cached_by_case_digest_and_toolchain(tmp_path):
    case = write_case(tmp_path / "cases" / "test_relu")
    digest = case.digest()
    cache = ResultCache(tmp_path / "results", "toolchainA")
    assert cache.get(case, digest) is None
    result = CaseResult("node", "test_relu", PASS, operator="Relu", ops=["Relu"], build_seconds=1.5)
    cache.put(case, digest, result)
    assert cache.get(case, digest) == result
    assert ResultCache(tmp_path / "results", "toolchainB").get(case, digest) is None
    # Other data -> another digest -> not cached.
    (case.directory / "test_data_set_0" / "output_0.pb").write_bytes(
        numpy_helper.from_array(np.zeros((2, 3), np.float32)).SerializeToString())
    assert case.digest() != digest and cache.get(case, case.digest()) is None


def test_cached_builder_verdicts_are_classified_again(tmp_path):
    case = write_case(tmp_path / "test_cumsum")
    cache = ResultCache(tmp_path / "results", "t")
    error = "import failed: TVM could not import the model: runtime axis is not supported yet"
    cache.put(case, "d" * 64, CaseResult("node", case.name, BUILD_ERROR, error, stage="import", error=error))
    assert cache.get(case, "d" * 64).status == UNSUPPORTED


def test_a_run_resumes_from_the_cache(tmp_path, monkeypatch):
    """Cached cases are not built again; only the rest reach the builder."""
    from wasmforge.conformance import run as runmod

    cases = [write_case(tmp_path / "data" / f"test_{n}") for n in ("a", "b", "c")]
    monkeypatch.setattr(runmod.casemod, "discover", lambda suite, cache: cases)
    monkeypatch.setattr(runmod, "toolchain_key", lambda root: {"id": "t"})
    built: list[list[str]] = []

    def fake_build_all(self, pending):
        built.append([item.case.name for item, _ in pending])
        for item, suite_run in pending:
            self._record(item, item.case, CaseResult("node", item.case.name, PASS), suite_run)

    monkeypatch.setattr(runmod.Conformance, "_build_all", fake_build_all)
    runner = runmod.Conformance(cache=tmp_path / "cache")
    runner.run(["node"], limit=2)
    (first,) = built
    assert len(first) == 2
    runs = runmod.Conformance(cache=tmp_path / "cache").run(["node"])
    assert built[1] == [n for n in ("test_a", "test_b", "test_c") if n not in first]
    assert [r.status for r in runs[0].results] == [PASS] * 3


def test_a_crashed_builder_run_blames_one_case_and_retries_the_rest(tmp_path, monkeypatch):
    """The container dies in case 2 of 4: case 1 is judged, case 2 is a build
    error, cases 3 and 4 go into a second builder run."""
    from wasmforge import build as buildmod
    from wasmforge.conformance import run as runmod
    from wasmforge.errors import UserError

    cases = [write_case(tmp_path / "data" / f"test_{n}") for n in "abcd"]
    monkeypatch.setattr(runmod.casemod, "discover", lambda suite, cache: cases)
    monkeypatch.setattr(runmod, "toolchain_key", lambda root: {"id": "t"})
    monkeypatch.setattr("wasmforge.images.docker_client", lambda: None)
    monkeypatch.setattr("wasmforge.images.ensure_builder", lambda client, console: None)
    runs_seen = []

    def fake_compile(sources, out_dirs, *, console, step_output, **kwargs):
        runs_seen.append([s.name for s in sources])
        for index, source in enumerate(sources):
            console.print(f"builder graph: {source.name}: ONNX -> Relax")
            if len(runs_seen) == 1 and index == 1:
                raise UserError("builder failed with exit code 139: Segmentation fault")
            step_output.results.append(JobResult(source.name, error="plan failed: nope", stage="plan"))

    monkeypatch.setattr(buildmod, "compile_sources", fake_compile)
    (suite,) = runmod.Conformance(cache=tmp_path / "cache").run(["node"])
    assert [len(r) for r in runs_seen] == [4, 2]
    statuses = {r.name: (r.status, r.stage) for r in suite.results}
    assert statuses["test_b"] == (BUILD_ERROR, "crash")
    assert all(statuses[n] == (BUILD_ERROR, "plan") for n in ("test_a", "test_c", "test_d"))


def test_a_builder_that_never_starts_stops_the_run(tmp_path, monkeypatch):
    from wasmforge import build as buildmod
    from wasmforge.conformance import run as runmod
    from wasmforge.errors import UserError

    cases = [write_case(tmp_path / "data" / "test_a")]
    monkeypatch.setattr(runmod.casemod, "discover", lambda suite, cache: cases)
    monkeypatch.setattr(runmod, "toolchain_key", lambda root: {"id": "t"})
    monkeypatch.setattr("wasmforge.images.docker_client", lambda: None)
    monkeypatch.setattr("wasmforge.images.ensure_builder", lambda client, console: None)

    def broken(*args, **kwargs):
        raise UserError("builder failed with exit code 125: no such image")

    monkeypatch.setattr(buildmod, "compile_sources", broken)
    with pytest.raises(UserError, match="before its case"):
        runmod.Conformance(cache=tmp_path / "cache").run(["node"])
    # Nothing was cached as that case's result.
    assert not list((tmp_path / "cache" / "results").rglob("*.json"))


def test_step_times_split_build_and_link():
    from wasmforge.conformance.run import Conformance

    marks = [(10.0, "builder graph: c1: ONNX"), (11.0, "builder wasm: c1: cargo build"),
             (25.0, "builder done: c1.wasm (0.2 MB)"), (25.5, "builder graph: c2: ONNX"),
             (26.0, "builder graph: c3: ONNX")]
    assert Conformance._times(marks, "c1", 99.0) == {"build": 15.0, "link": 14.0}
    assert Conformance._times(marks, "c2", 99.0) == {"build": 0.5}
    assert Conformance._times(marks, "c3", 30.0) == {"build": 4.0}
    assert Conformance._times(marks, "c4", 30.0) is None


# --- the report ----------------------------------------------------------------------


def _doc(results: list[CaseResult], suite="node", total=10) -> dict:
    from wasmforge.conformance.results import summarize

    return {"format": report.DOC_FORMAT, "suites": {suite: {
        "total": total, "selected": len(results), "limit": 3, "seed": 0, "onnx": "1.23.2",
        "toolchain": {"builder_recipe": "r", "id": "t"}, "run_at": "2025-01-01",
        "counts": summarize(results), "cases": [r.to_dict() for r in results]}}}


def test_markdown_report_tables():
    results = [CaseResult("node", "test_relu", PASS, operator="Relu", build_seconds=2.0, run_seconds=0.4),
               CaseResult("node", "test_relu_big", FAIL, "output 0: 1 of 6 values | differ", operator="Relu"),
               CaseResult("node", "test_cumprod", UNSUPPORTED, "operator CumProd", operator="CumProd")]
    text = report.render_markdown(_doc(results))
    assert "| node | 10 | 3 (sample, seed 0) | 1 | 1 | 1 | 0 | 33.3% |" in text
    assert "| Relu | 2 | 1 | 1 | 0 | 0 | test_relu_big: output 0: 1 of 6 values \\| differ |" in text
    assert "| CumProd | 1 | 0 | 0 | 1 | 0 |" in text
    assert "| test_cumprod | unsupported | operator CumProd |" in text
    assert report.summary_lines(_doc(results))[0].startswith("node: 1 of 3 pass (33.3%)")


def test_merge_replaces_only_the_suites_run():
    node = _doc([CaseResult("node", "test_a", PASS)])
    simple = _doc([CaseResult("simple", "test_b", FAIL, "x")], suite="simple")
    merged = report.merge(report.merge({"suites": {}}, simple), node)
    assert list(merged["suites"]) == ["node", "simple"]
    again = report.merge(merged, _doc([CaseResult("node", "test_c", UNSUPPORTED, "y")]))
    assert again["suites"]["simple"] == simple["suites"]["simple"]
    assert again["suites"]["node"]["cases"][0]["name"] == "test_c"


def test_committed_doc_matches_committed_results():
    """docs/conformance.md is exactly what the generator makes of docs/conformance.json."""
    if not report.DOCS_JSON.is_file():
        pytest.skip("no committed conformance results")
    doc = json.loads(report.DOCS_JSON.read_text())
    assert report.DOCS_MD.read_text() == report.render_markdown(doc)
    for section in doc["suites"].values():
        assert section["counts"] == {s: sum(1 for c in section["cases"] if c["status"] == s)
                                     for s in section["counts"]}
        assert section["selected"] == len(section["cases"])


# --- end to end -------------------------------------------------------------------------


def test_crash_reasons_name_the_signal():
    from wasmforge.conformance.run import crash_reason

    assert crash_reason("builder failed with exit code 136: x | y") == "exit code 136 (SIGFPE)"
    assert crash_reason("builder failed with exit code 1") == "exit code 1"
    assert crash_reason("something else") == "something else"


def test_a_docker_failure_is_retried_not_blamed_on_a_case(tmp_path, monkeypatch):
    from wasmforge import build as buildmod
    from wasmforge.conformance import run as runmod

    cases = [write_case(tmp_path / "data" / f"test_{n}") for n in "ab"]
    monkeypatch.setattr(runmod.casemod, "discover", lambda suite, cache: cases)
    monkeypatch.setattr(runmod, "toolchain_key", lambda root: {"id": "t"})
    monkeypatch.setattr("wasmforge.images.docker_client", lambda: None)
    monkeypatch.setattr("wasmforge.images.ensure_builder", lambda client, console: None)
    runs_seen = []

    def flaky(sources, out_dirs, *, console, step_output, **kwargs):
        runs_seen.append([s.name for s in sources])
        for source in sources:
            console.print(f"builder graph: {source.name}: ONNX -> Relax")
            step_output.results.append(JobResult(source.name, error="plan failed: nope", stage="plan"))
            if len(runs_seen) == 1:
                raise RuntimeError("409 Conflict: removal of container already in progress")

    monkeypatch.setattr(buildmod, "compile_sources", flaky)
    (suite,) = runmod.Conformance(cache=tmp_path / "cache").run(["node"])
    assert [len(r) for r in runs_seen] == [2, 1]
    assert [(r.status, r.stage) for r in suite.results] == [(BUILD_ERROR, "plan")] * 2


def test_attribute_like_inputs_are_frozen_to_the_test_value(tmp_path):
    """A Reshape's `shape` input is baked in (as --freeze would); its data input is not."""
    directory = tmp_path / "test_reshape"
    (directory / "test_data_set_0").mkdir(parents=True)
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])])
    (directory / "model.onnx").write_bytes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for name, array in (("input_0", x), ("input_1", np.array([3, 2], np.int64)),
                        ("output_0", x.reshape(3, 2))):
        (directory / "test_data_set_0" / f"{name}.pb").write_bytes(numpy_helper.from_array(array).SerializeToString())
    case = Case("node", directory.name, directory)
    data = casemod.load_case(case)
    model = onnx.load(str(case.model))
    assert casemod.attribute_inputs(model, data) == ["shape"]
    path = casemod.freeze_inputs(case, data, ["shape"], tmp_path / "frozen")
    frozen = onnx.load(str(path))
    onnx.checker.check_model(frozen, full_check=True)
    assert [i.name for i in frozen.graph.input] == ["x"]
    np.testing.assert_array_equal(numpy_helper.to_array(frozen.graph.initializer[0]), [3, 2])
    assert data.input_names == ["x"] and data.frozen == ["shape"] and len(data.data_sets[0][0]) == 1
    assert data.input_shapes == {"x": [2, 3]}


def test_markdown_does_not_depend_on_the_json_key_order():
    node = _doc([CaseResult("node", "test_a", PASS, operator="Relu")])
    light = _doc([CaseResult("light", "test_b", PASS)], suite="light")
    merged = report.merge(report.merge({"suites": {}}, node), light)
    text = report.render_markdown(merged)
    assert text == report.render_markdown(json.loads(report.dumps(merged)))  # keys sorted there
    assert text.index("| node |") < text.index("| light |")


def _case_with(tmp_path, name, nodes, inputs, arrays, output, output_shape):
    directory = tmp_path / name
    (directory / "test_data_set_0").mkdir(parents=True)
    graph = helper.make_graph(nodes, "g", inputs, [output])
    (directory / "model.onnx").write_bytes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())
    for index, array in enumerate(arrays):
        (directory / "test_data_set_0" / f"input_{index}.pb").write_bytes(
            numpy_helper.from_array(array).SerializeToString())
    (directory / "test_data_set_0" / "output_0.pb").write_bytes(
        numpy_helper.from_array(np.zeros(output_shape, np.float32)).SerializeToString())
    case = Case("node", name, directory)
    return onnx.load(str(case.model)), casemod.load_case(case)


def test_a_window_size_and_a_pad_value_are_attribute_like_but_data_is_not(tmp_path):
    model, data = _case_with(
        tmp_path, "test_hannwindow", [helper.make_node("HannWindow", ["size"], ["y"])],
        [helper.make_tensor_value_info("size", TensorProto.INT32, [])], [np.array(10, np.int32)],
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [10]), [10])
    assert casemod.attribute_inputs(model, data) == ["size"]
    model, data = _case_with(
        tmp_path, "test_constant_pad", [helper.make_node("Pad", ["x", "pads", "value"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("pads", TensorProto.INT64, [2]),
         helper.make_tensor_value_info("value", TensorProto.FLOAT, [])],
        [np.array([1.0], np.float32), np.array([1, 1], np.int64), np.array(1.5, np.float32)],
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [3]), [3])
    assert casemod.attribute_inputs(model, data) == ["pads", "value"]  # x: a float data input
