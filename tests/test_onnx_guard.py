"""The ONNX guard: hostile and broken files are refused with one line, before anything reads them."""

from __future__ import annotations

import os
import threading

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from tests.cli import LENET_ONNX, assert_one_line_error, dist_listing, invoke
from tests.onnx_models import tiny_cnn, two_outputs
from tests.onnx_mutations import MUTATIONS, mutate
from wasmforge.errors import UserError
from wasmforge.limits import GuardLimits
from wasmforge.onnx_guard import MAX_OPSET, inspect_onnx, prescan
from wasmforge.paths import ROOT


def save(model: onnx.ModelProto, path):
    path.write_bytes(model.SerializeToString())
    return path


def refused(path) -> str:
    """The guard's one-line message for `path`, checked to be a clean exit-2 UserError."""
    with pytest.raises(UserError) as info:
        inspect_onnx(path)
    message = str(info.value)
    assert info.value.exit_code == 2
    assert "\n" not in message and message.isprintable(), message
    return message


def refused_without_reading(path) -> str:
    """As `refused`, in a thread with a deadline: the hostile targets below are
    FIFOs with no writer, so any attempt to read them would block forever."""
    outcome = {}

    def target():
        try:
            outcome["message"] = refused(path)
        except BaseException as exc:  # reported below
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the guard blocked: it opened the external data"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["message"]


def with_external(location: str, **extra) -> onnx.ModelProto:
    """tiny_cnn with its Gemm weight G (10x64 float32, 2560 bytes) stored externally."""
    model = tiny_cnn()
    tensor = next(t for t in model.graph.initializer if t.name == "G")
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, **extra}.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, str(value)
    return model


# --- external data ------------------------------------------------------------------


def test_valid_external_data_is_accepted(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 2560)
    model = inspect_onnx(save(with_external("weights.bin"), tmp_path / "m.onnx"))
    assert model.graph.node


@pytest.mark.parametrize("location, fragment", [
    ("{fifo}", "is absolute"),
    ("C:\\weights.bin", "is absolute"),
    ("\\\\server\\share\\w.bin", "is absolute"),
    ("../fifo", "contains '..'"),
    ("sub/../../fifo", "contains '..'"),
    ("sub\\..\\..\\fifo", "contains '..'"),
    ("", "without a usable location"),
])
def test_external_locations_that_spell_a_way_out(tmp_path, location, fragment):
    model_dir = tmp_path / "model"
    (model_dir / "sub").mkdir(parents=True)
    os.mkfifo(tmp_path / "fifo")
    location = location.format(fifo=tmp_path / "fifo")
    path = save(with_external(location), model_dir / "m.onnx")
    assert fragment in refused_without_reading(path)


def test_external_symlink_resolving_outside(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    os.mkfifo(tmp_path / "fifo")
    (model_dir / "weights.bin").symlink_to(tmp_path / "fifo")
    (model_dir / "sub").symlink_to(tmp_path)  # a directory link too
    for location in ("weights.bin", "sub/fifo"):
        path = save(with_external(location), model_dir / "m.onnx")
        assert "resolves outside model/" in refused_without_reading(path)


def test_external_fifo_inside_the_model_directory(tmp_path):
    os.mkfifo(tmp_path / "weights.bin")
    path = save(with_external("weights.bin"), tmp_path / "m.onnx")
    assert "is not a regular file" in refused_without_reading(path)


def test_external_file_missing_or_short(tmp_path):
    path = save(with_external("weights.bin"), tmp_path / "m.onnx")
    assert "weights.bin' is missing" in refused(path)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 2559)
    assert "is too short (2559 bytes, needs 2560)" in refused(path)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 4096)
    path = save(with_external("weights.bin", offset=2048), tmp_path / "m.onnx")
    assert "is too short (4096 bytes, needs 4608)" in refused(path)
    for extra in ({"length": 16}, {"offset": -64}, {"offset": "x"}):
        path = save(with_external("weights.bin", **extra), tmp_path / "m.onnx")
        assert "external data offset" in refused(path)


# --- truncation, structure, sizes, versions -----------------------------------------


def test_truncated_protobufs(tmp_path):
    data = tiny_cnn().SerializeToString()
    for cut in (1, 10, len(data) // 3, len(data) // 2, len(data) - 1):
        (tmp_path / "m.onnx").write_bytes(data[:cut])
        assert "m.onnx" in refused(tmp_path / "m.onnx")


def test_cycle_is_named(tmp_path):
    one = numpy_helper.from_array(np.ones((2, 3), np.float32), "one")
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["b"], name="relu"),
             helper.make_node("Mul", ["a", "one"], ["y"], name="mul")]
    graph = helper.make_graph(nodes, "cycle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [one])
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "m.onnx")
    message = refused(path)
    assert "graph has a cycle through node" in message
    assert "'add'" in message or "'relu'" in message  # not 'mul', which only hangs off the cycle


def test_undefined_values_and_missing_outputs(tmp_path):
    model = tiny_cnn()
    model.graph.node[2].input[0] = "nowhere"
    assert "node #2 ('Relu') uses 'nowhere'" in refused(save(model, tmp_path / "m.onnx"))
    model = tiny_cnn()
    del model.graph.node[-1]
    assert "graph output 'y' is never computed" in refused(save(model, tmp_path / "m.onnx"))
    model = tiny_cnn()
    model.graph.node[3].output[0] = "c"
    assert "redefines 'c'" in refused(save(model, tmp_path / "m.onnx"))


def test_absurd_sizes(tmp_path):
    model = two_outputs()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2**31
    assert "'x' declares 25769803776 bytes" in refused(save(model, tmp_path / "m.onnx"))
    model = tiny_cnn()
    model.graph.initializer[0].dims[:] = [2**62, 2**62, 2**62]
    assert "tensor 'W' needs" in refused(save(model, tmp_path / "m.onnx"))
    # A million huge dimensions: refused quickly, without a giant product.
    model.graph.initializer[0].dims[:] = [2**62] * 1_000_000
    assert "tensor 'W' needs" in refused(save(model, tmp_path / "m.onnx"))
    model = tiny_cnn()
    model.graph.initializer[0].dims[0] = 5  # data for 4 filters, shape says 5
    assert "tensor 'W' holds 144 bytes but its shape [5, 1, 3, 3] needs 180" in refused(
        save(model, tmp_path / "m.onnx"))
    model = tiny_cnn()
    model.graph.initializer[0].dims[0] = -4
    assert "negative dimension" in refused(save(model, tmp_path / "m.onnx"))


def test_versions(tmp_path):
    model = tiny_cnn()
    model.opset_import[0].version = MAX_OPSET + 1
    assert f"uses ONNX opset {MAX_OPSET + 1}" in refused(save(model, tmp_path / "m.onnx"))
    model.opset_import[0].version = 13
    model.ir_version = onnx.IR_VERSION + 1
    assert "has IR version" in refused(save(model, tmp_path / "m.onnx"))


# --- bounds: nodes, nesting, graph entries (resources/limits.toml) -------------------


def _key(number: int, wire: int) -> bytes:
    return _uvarint(number << 3 | wire)


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _uvarint(len(payload)) + payload


def _header() -> bytes:
    return helper.make_model(helper.make_graph([], "main", [], [])).SerializeToString()


def test_a_million_nodes_are_refused_quickly_without_parsing(tmp_path):
    import subprocess
    import sys
    import time

    node = _field(1, helper.make_node("Relu", ["x"], ["x"]).SerializeToString())  # GraphProto.node
    path = tmp_path / "m.onnx"
    path.write_bytes(_header() + _field(7, node * 1_000_000))  # ModelProto.graph
    started = time.monotonic()
    message = refused(path)
    assert time.monotonic() - started < 2.0
    assert message == "m.onnx has more than 100000 nodes, the guard's bound (resources/limits.toml)"
    # Its memory: what `import onnx` costs, not what a parse would (1.4 GB).
    # (VmHWM: this process's peak; ru_maxrss would include the parent's at fork.)
    probe = ("import sys; from pathlib import Path; from wasmforge.onnx_guard import inspect_onnx\n"
             "try: inspect_onnx(Path(sys.argv[1]))\nexcept Exception: pass\n"
             "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
             "print(int(hwm.split()[1]) // 1024)")
    rss_mib = int(subprocess.run([sys.executable, "-c", probe, str(path)], cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout)
    assert rss_mib < 250


def _nested_if(levels: int) -> bytes:
    """A model whose main graph holds an If whose then-branch holds an If ... `levels` graphs in all,
    written on the wire (helper would take minutes for thousands of levels)."""
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [], [out]).SerializeToString()
    for level in range(levels - 1):
        attribute = _field(1, b"then_branch") + _field(6, graph) + _key(20, 0) + _uvarint(5)  # type GRAPH
        node = _field(1, b"c") + _field(2, b"y") + _field(4, b"If") + _field(5, attribute)
        graph = _field(1, node) + _field(2, b"g%d" % level)
    return _header() + _field(7, graph)


def test_deep_nesting_is_refused_for_its_depth(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(_nested_if(3000))
    assert refused(path) == ("m.onnx nests subgraphs (If/Loop/Scan bodies) more than 16 levels deep, "
                             "the guard's bound (resources/limits.toml)")
    path.write_bytes(_nested_if(17))
    assert "more than 16 levels deep" in refused(path)
    # 16 levels pass the bound, and protobuf parses them (the parser's own limit is near 31).
    path.write_bytes(_nested_if(16))
    prescan(path)
    assert len(onnx.load(str(path)).graph.node) == 1


def test_nodes_in_subgraphs_and_functions_and_graph_entries_count(tmp_path):
    small = GuardLimits(max_nodes=6, max_graph_depth=16, max_graph_entries=9)
    path = tmp_path / "m.onnx"
    path.write_bytes(_nested_if(6))  # 5 Ifs, one per graph, + 1 Identity
    prescan(path, small)
    path.write_bytes(_nested_if(7))
    with pytest.raises(UserError, match="more than 6 nodes"):
        prescan(path, small)
    model = tiny_cnn()  # 6 nodes; 7 initializers, 1 input, 1 output
    save(model, path)
    prescan(path, small)
    model.functions.append(helper.make_function("local", "F", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])],
                                                [helper.make_opsetid("", 13)]))
    save(model, path)
    with pytest.raises(UserError, match="more than 6 nodes"):
        prescan(path, small)
    model = tiny_cnn()
    model.graph.value_info.append(helper.make_tensor_value_info("v", TensorProto.FLOAT, [1]))
    save(model, path)
    with pytest.raises(UserError, match="more than 9 initializers, inputs, outputs and value_info entries"):
        prescan(path, small)


def test_the_prescan_leaves_malformed_bytes_to_the_parse(tmp_path):
    path = tmp_path / "m.onnx"
    for data in (b"\xff" * 20, _header() + _key(7, 2) + _uvarint(1000), _header() + _key(1, 7)):
        path.write_bytes(data)
        prescan(path)  # no verdict: the parse names it
        assert "truncated or corrupt protobuf" in refused(path)


def test_control_characters_in_names_stay_on_one_line(tmp_path):
    model = tiny_cnn()
    model.graph.node[2].input[0] = "evil\nerror: forged\x1b[2J"
    assert "'evil\\nerror: forged\\x1b[2J'" in refused(save(model, tmp_path / "m.onnx"))


def test_not_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / "m.onnx")
    assert "is not a regular file" in refused_without_reading(tmp_path / "m.onnx")


# --- property: mutated models -------------------------------------------------------

BASES = {"tiny_cnn": tiny_cnn().SerializeToString(), "two_outputs": two_outputs().SerializeToString()}


@pytest.fixture(scope="module")
def mutation_dir(tmp_path_factory):
    """A model directory with a plausible weights.bin inside and a file beside it outside."""
    root = tmp_path_factory.mktemp("mutated")
    (root / "model").mkdir()
    (root / "model" / "weights.bin").write_bytes(bytes(4096))
    (root / "outside.bin").write_bytes(bytes(4096))
    return root / "model"


@settings(max_examples=1500, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.sampled_from(sorted(BASES)),
       names=st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=1, max_size=3),
       seed=st.integers(0, 2**32 - 1))
def test_mutated_models_give_a_clean_error_or_pass(mutation_dir, base, names, seed):
    """Whatever the damage, the guard either accepts the model or raises one
    one-line UserError: never another exception."""
    path = mutation_dir / "m.onnx"
    path.write_bytes(mutate(BASES[base], names, seed))
    for name in set(names):
        event(f"mutation: {name}")
    try:
        inspect_onnx(path)
    except UserError as exc:
        message = str(exc)
        assert exc.exit_code == 2
        assert message.startswith("m.onnx ") and message.isprintable(), message
        event(f"outcome: refused ({_reason(message)})")
    else:
        event("outcome: accepted")


def _reason(message: str) -> str:
    for reason in ("protobuf", "checker", "cycle", "external data", "opset", "IR version",
                   "no graph nodes", "never computed", "redefines", "which no node", "holds",
                   "needs", "declares", "negative"):
        if reason in message:
            return reason
    return "other"


# --- through `invoke build` ----------------------------------------------------------


@pytest.mark.parametrize("bad", ["a/b", "..", "../escape", "/abs", "a..b", "x\x01y", "new\nline",
                                 "tab\there", "nul-\x7f", "lenet-digits/../../x"])
def test_bad_names_are_refused_before_anything_is_written(bad):
    before = set(dist_listing())
    code, _, err = invoke("build", "--onnx", str(LENET_ONNX), "--name", bad)
    assert_one_line_error(code, err, 2, "invalid model name")
    # Other builds may run meanwhile (their staging directories and locks come
    # and go); nothing else may appear, and nothing outside dist/ either.
    created = set(dist_listing()) - before
    assert not [n for n in created if not n.startswith((".staging-", ".previous-", ".lock-"))]
    assert not (ROOT / "escape").exists() and not os.path.exists("/abs")
