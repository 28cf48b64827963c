"""LSTM / GRU / RNN unrolled by prepare(): the prepared model runs like the original
under onnxruntime and, for a few, lowered by TVM and run natively too."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.compiler.native_checks import plan_and_native
from wasmforge import reference
from wasmforge.compiler import onnx_rnn
from wasmforge.compiler.frontend import ModelError, graph_inputs
from wasmforge.compiler.prepare import prepare

F = TensorProto.FLOAT
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def recurrent(op, seq=5, batch=2, size=3, hidden=4, direction="forward", layout=0, bias=True,
              initial=True, peepholes=False, outputs=(True, True, True), opset=14, seed=0, **attrs):
    """x -> one `op` node (seeded weights) -> the chosen outputs; initial states as graph inputs."""
    rng = np.random.default_rng(seed)
    dirs, gates = 2 if direction == "bidirectional" else 1, GATES[op]
    w = lambda name, *shape: numpy_helper.from_array(  # noqa: E731
        (0.6 * rng.standard_normal(shape)).astype(np.float32), name)
    inits = [w("W", dirs, gates * hidden, size), w("R", dirs, gates * hidden, hidden)]
    names = ["x", "W", "R", "B" if bias else "", "", "", "", ""]
    if bias:
        inits.append(w("B", dirs, 2 * gates * hidden))
    x_shape = [seq, batch, size] if layout == 0 else [batch, seq, size]
    state_shape = [dirs, batch, hidden] if layout == 0 else [batch, dirs, hidden]
    inputs = [helper.make_tensor_value_info("x", F, x_shape)]
    if initial:
        names[5] = "h0"
        inputs.append(helper.make_tensor_value_info("h0", F, state_shape))
        if op == "LSTM":
            names[6] = "c0"
            inputs.append(helper.make_tensor_value_info("c0", F, state_shape))
    if peepholes:
        names[7] = "P"
        inits.append(w("P", dirs, 3 * hidden))
    while names and not names[-1]:
        names.pop()
    y_shape = [seq, dirs, batch, hidden] if layout == 0 else [batch, seq, dirs, hidden]
    out_names, graph_outputs = [], []
    for index, (name, shape) in enumerate([("y", y_shape), ("y_h", state_shape), ("y_c", state_shape)]):
        if index == 2 and op != "LSTM":
            break
        wanted = outputs[index]
        out_names.append(name if wanted else "")
        if wanted:
            graph_outputs.append(helper.make_tensor_value_info(name, F, shape))
    while out_names and not out_names[-1]:
        out_names.pop()
    if layout:
        attrs["layout"] = layout
    node = helper.make_node(op, names, out_names, name=f"my_{op.lower()}", hidden_size=hidden,
                            direction=direction, **attrs)
    graph = helper.make_graph([node], "g", inputs, graph_outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def layout_0_twin(model):
    """The same computation with the node at layout 0 between Transposes: onnxruntime
    runs no batch-major (layout 1) recurrent op, this is its oracle for them."""
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    node = twin.graph.node[0]
    for attr in node.attribute:
        if attr.name == "layout":
            attr.i = 0
    nodes = []
    for index in (0, 5, 6):
        if index < len(node.input) and node.input[index]:
            nodes.append(helper.make_node("Transpose", [node.input[index]], [node.input[index] + "_t"],
                                          perm=[1, 0, 2]))
            node.input[index] += "_t"
    nodes.append(node)
    for index, name in enumerate(node.output):
        if name:
            nodes.append(helper.make_node("Transpose", [name + "_t"], [name],
                                          perm=[2, 0, 1, 3] if index == 0 else [1, 0, 2]))
            node.output[index] += "_t"
    del twin.graph.node[:]
    twin.graph.node.extend(nodes)
    return twin


def prepared_matches(model, tmp_path, native=False):
    """prepare(model) agrees with the original under onnxruntime (and natively)."""
    batch_major = any(a.name == "layout" and a.i == 1 for a in model.graph.node[0].attribute)
    onnx.save(layout_0_twin(model) if batch_major else model, tmp_path / "original.onnx")
    warnings: list[str] = []
    prepared = prepare(model, tmp_path, {}, {}, warnings)
    assert prepared is not model
    assert not any(n.op_type in onnx_rnn.RECURRENT for n in prepared.graph.node)
    assert any("unrolled" in w for w in warnings), warnings
    onnx.checker.check_model(prepared)
    onnx.save(prepared, tmp_path / "prepared.onnx")
    before, after = reference.session(tmp_path / "original.onnx"), reference.session(tmp_path / "prepared.onnx")
    inputs = graph_inputs(prepared, {})
    native_plan = plan_and_native(prepared)[2] if native else None
    for seed in range(2):
        x = reference.seeded_inputs(inputs, seed)
        expected = reference.run_reference(before, x)
        for got, want in zip(reference.run_reference(after, x), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        if native_plan is not None:
            for got, want in zip(native_plan.run(x), expected):
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    return prepared, warnings


def test_the_frontend_lacks_the_recurrent_ops():
    assert onnx_rnn.missing_ops() == {"LSTM", "GRU", "RNN"}


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_directions(op, direction, tmp_path):
    prepared_matches(recurrent(op, direction=direction), tmp_path)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_no_bias_no_initial_state_layout_1(op, tmp_path):
    for sub, model in (("a", recurrent(op, bias=False, initial=False)),
                       ("b", recurrent(op, direction="bidirectional", layout=1, seed=1))):
        (tmp_path / sub).mkdir()
        prepared_matches(model, tmp_path / sub)


def test_only_y_h_used(tmp_path):
    prepared, _ = prepared_matches(recurrent("LSTM", direction="bidirectional", outputs=(False, True, False)),
                                   tmp_path)
    assert not any(n.op_type == "Concat" and n.output[0].startswith("my_lstm") and
                   len(n.input) == 5 for n in prepared.graph.node)  # no Y built


@pytest.mark.parametrize("case", [
    dict(op="LSTM", peepholes=True),
    dict(op="LSTM", clip=0.5),
    dict(op="LSTM", input_forget=1, direction="bidirectional"),
    dict(op="GRU", linear_before_reset=1, direction="bidirectional"),
    dict(op="GRU", clip=0.3, initial=False),
    dict(op="RNN", activations=["Relu"]),
    dict(op="LSTM", activations=["Sigmoid", "Relu", "Tanh", "Tanh", "Tanh", "Relu"], direction="bidirectional"),
    dict(op="LSTM", opset=11, direction="bidirectional"),
    dict(op="LSTM", seq=1, batch=1, hidden=8),
], ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()).replace(" ", ""))
def test_variants(case, tmp_path):
    prepared_matches(recurrent(**case), tmp_path)


def test_full_length_sequence_lens_is_accepted(tmp_path):
    model = recurrent("LSTM", seq=4, batch=3)
    model.graph.initializer.append(numpy_helper.from_array(np.full(3, 4, np.int32), "lens"))
    model.graph.node[0].input[4] = "lens"
    prepared_matches(model, tmp_path)


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_lowered_with_tvm(op, tmp_path):
    prepared_matches(recurrent(op, direction="bidirectional", seq=4), tmp_path, native=True)


def test_lowered_with_tvm_layout_1_no_states(tmp_path):
    prepared_matches(recurrent("LSTM", layout=1, bias=False, initial=False, seq=3, peepholes=True),
                     tmp_path, native=True)


def refusal(model, tmp_path) -> str:
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(ModelError) as info:
        prepare(model, tmp_path, {}, {}, [])
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unsupported_variants_are_refused_naming_the_node(tmp_path):
    message = refusal(recurrent("LSTM", activations=["HardSigmoid", "Tanh", "Tanh"]), tmp_path)
    assert "LSTM node 'my_lstm'" in message and "HardSigmoid" in message

    model = recurrent("GRU", seq=4, batch=3)
    model.graph.initializer.append(numpy_helper.from_array(np.array([4, 2, 4], np.int32), "lens"))
    model.graph.node[0].input[4] = "lens"
    message = refusal(model, tmp_path)
    assert "GRU node 'my_gru'" in message and "sequence_lens" in message


def test_too_long_sequences_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_rnn, "MAX_STEPS", 8)
    message = refusal(recurrent("RNN", seq=5, direction="bidirectional"), tmp_path)
    assert "RNN node 'my_rnn'" in message and "sequence length 5" in message and "10 steps" in message


@pytest.mark.parametrize("case", [
    dict(op="RNN", direction="bidirectional"),
    dict(op="GRU", linear_before_reset=1),
    dict(op="GRU", direction="reverse"),
    dict(op="LSTM", peepholes=True, direction="bidirectional"),
], ids=lambda c: "-".join(str(v) for v in c.values()))
def test_weights_fed_at_run_time(case, tmp_path):
    """W, R, B, P as graph inputs (as ONNX's own test cases have them): sliced by nodes."""
    model = recurrent(**case)
    for init in list(model.graph.initializer):
        model.graph.input.append(helper.make_tensor_value_info(init.name, F, list(init.dims)))
        model.graph.initializer.remove(init)
    prepared, _ = prepared_matches(model, tmp_path, native=True)
    assert {"W", "R", "B"} <= {i.name for i in prepared.graph.input}


def test_opset_12_shape_arithmetic_feeding_the_lstm_folds(tmp_path):
    """pytorch <= 1.9 exports (ddddocr): X = Reshape(feature map, Concat(Unsqueeze(axes
    attribute) of constants)); the fold must evaluate those at opset 12 so X is static."""
    model = recurrent("LSTM", seq=4, batch=1, size=6, opset=12, direction="bidirectional", initial=False)
    graph = model.graph
    graph.input[0].CopyFrom(helper.make_tensor_value_info("feat", F, [1, 6, 1, 4]))
    dims = [numpy_helper.from_array(np.array(v, np.int64), f"d{k}") for k, v in enumerate((4, 1, 6))]
    graph.initializer.extend(dims)
    shape_nodes = [helper.make_node("Unsqueeze", [f"d{k}"], [f"u{k}"], axes=[0]) for k in range(3)]
    graph.node.insert(0, helper.make_node("Reshape", ["t", "shape"], ["x"]))
    graph.node.insert(0, helper.make_node("Concat", ["u0", "u1", "u2"], ["shape"], axis=0))
    graph.node.insert(0, helper.make_node("Transpose", ["feat"], ["t"], perm=[3, 0, 2, 1]))
    for node in reversed(shape_nodes):
        graph.node.insert(0, node)
    onnx.checker.check_model(model, full_check=True)
    prepared_matches(model, tmp_path)
