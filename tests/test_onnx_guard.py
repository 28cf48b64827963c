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
from wasmforge.onnx_guard import MAX_OPSET, inspect_onnx
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
