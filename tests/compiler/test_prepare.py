"""prepare(): framework quirks fixed at the ONNX level, checked against onnxruntime on
the original model and, end to end, by lowering the prepared model with TVM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.compiler.native_checks import plan_and_native
from tests.onnx_models import tiny_cnn
from wasmforge import reference
from wasmforge.compiler.frontend import ModelError, graph_inputs, load_onnx
from wasmforge.compiler.prepare import prepare

LENET = Path(__file__).resolve().parents[2] / "models" / "lenet-digits" / "lenet-digits.onnx"
F = TensorProto.FLOAT


def make(nodes, inputs, outputs, inits=(), opset=13, ir=8, functions=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              functions=list(functions))
    model.ir_version = ir
    return model


def weight(name, shape, seed=0):
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def check(original, tmp_path, shapes=None, frozen=None, feeds=None, native=True):
    """prepare(original) runs like the original under onnxruntime and, lowered by the
    compiler (plan + native kernels), like it too. Returns (prepared, warnings)."""
    path = tmp_path / "original.onnx"
    if not path.exists():
        onnx.save(original, path)
    warnings: list[str] = []
    prepared = prepare(load_onnx(path), tmp_path, shapes or {}, frozen or {}, warnings)
    assert prepared is not original
    onnx.checker.check_model(prepared)
    onnx.save(prepared, tmp_path / "prepared.onnx")
    inputs = graph_inputs(prepared, shapes or {})
    before, after = reference.session(path), reference.session(tmp_path / "prepared.onnx")
    _, _, plan, _ = plan_and_native(prepared) if native else (None, None, None, None)
    for seed in range(2):
        x = reference.seeded_inputs(inputs, seed)
        expected = reference.run_reference(before, x, feeds)
        assert reference.compare(reference.run_reference(after, x), expected).ok
        if native:
            comparison = reference.compare(plan.run(x), expected)
            assert comparison.ok and comparison.max_abs_diff < 1e-4, comparison
    return prepared, warnings


def flatten_model(batch_dim):
    """PyTorch's x.view(x.size(0), -1) -> Gemm: Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Shape", ["r"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["r", "target"], ["f"]),
        helper.make_node("Gemm", ["f", "W"], ["y"], transB=1),
    ]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "axes"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1"), weight("W", (5, 48))]
    return make(nodes, [helper.make_tensor_value_info("x", F, [batch_dim, 3, 4, 4])],
                [helper.make_tensor_value_info("y", F, [batch_dim, 5])], inits)


def test_models_needing_nothing_come_back_unchanged(tmp_path):
    model = tiny_cnn()
    assert prepare(model, tmp_path, {"x": [1, 1, 8, 8]}, {}, []) is model
    if LENET.exists():
        lenet = load_onnx(LENET)
        before = lenet.SerializeToString()
        assert prepare(lenet, LENET.parent, {}, {}, []) is lenet
        assert lenet.SerializeToString() == before


def test_pytorch_flatten_shape_arithmetic_folds(tmp_path):
    prepared, warnings = check(flatten_model(1), tmp_path)
    assert [n.op_type for n in prepared.graph.node] == ["Relu", "Reshape", "Gemm"]
    assert any("folded" in w for w in warnings)


@pytest.mark.parametrize("dim", [-1, "batch"])
def test_dynamic_dims_take_the_input_shape(tmp_path, dim):
    model = flatten_model(1)
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim0.Clear()
    if dim == -1:
        dim0.dim_value = -1
    else:
        dim0.dim_param = dim
    prepared, _ = check(model, tmp_path, shapes={"x": [2, 3, 4, 4]})
    assert graph_inputs(prepared, {})[0]["shape"] == [2, 3, 4, 4]
    with pytest.raises(ModelError, match="--input-shape x=Nx3x4x4"):
        prepare(model, tmp_path, {}, {}, [])


def test_initializers_listed_as_inputs_are_constants(tmp_path):
    model = flatten_model(1)
    model.graph.input.extend(helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
                             for i in model.graph.initializer)
    model.ir_version = 3
    prepared, warnings = check(model, tmp_path)
    assert [i.name for i in prepared.graph.input] == ["x"]
    assert any("listed as inputs" in w for w in warnings)


@pytest.mark.parametrize("op", ["Sum", "Max", "Mean", "Min"])
def test_variadic_elementwise_ops(tmp_path, op):
    names = ["a", "b", "c", "d"]
    model = make([helper.make_node("Relu", ["x"], ["r"]),  # something that needs folding
                  helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Reshape", ["x", "s"], ["a"]),
                  helper.make_node(op, names, ["y"])],
                 [helper.make_tensor_value_info("x", F, [1, 4, 3])],
                 [helper.make_tensor_value_info("y", F, [1, 4, 3])],
                 [weight("b", (4, 3), 1), weight("c", (1, 3), 2), weight("d", (1, 4, 1), 3)])
    check(model, tmp_path)


def test_external_data_is_loaded_from_beside_the_model(tmp_path):
    model = flatten_model(1)
    onnx.save(model, tmp_path / "original.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=512)
    assert (tmp_path / "weights.bin").exists()
    prepared, _ = check(model, tmp_path)
    assert not any(i.data_location == TensorProto.EXTERNAL for i in prepared.graph.initializer)


def test_external_data_missing_is_a_model_error(tmp_path):
    model = flatten_model(1)
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, location="w.bin", size_threshold=0)
    loaded = load_onnx(tmp_path / "m.onnx")
    (tmp_path / "w.bin").unlink()
    with pytest.raises(ModelError, match="external data"):
        prepare(loaded, tmp_path, {}, {}, [])


def test_opset7_model(tmp_path):
    """Opset 7: Slice with attributes and BatchNormalization's `spatial` predate TVM's converters."""
    nodes = [helper.make_node("Slice", ["x"], ["s"], starts=[1], ends=[3], axes=[1]),
             helper.make_node("BatchNormalization", ["s", "sc", "b", "m", "v"], ["y"])]
    inits = [numpy_helper.from_array(np.array(v, np.float32), n)
             for n, v in (("sc", [1.5, 0.5]), ("b", [0.1, -0.2]), ("m", [0.0, 0.3]), ("v", [1.0, 2.0]))]
    model = make(nodes, [helper.make_tensor_value_info("x", F, [1, 4, 3, 3])],
                 [helper.make_tensor_value_info("y", F, [1, 2, 3, 3])], inits, opset=7, ir=3)
    model.graph.input.extend(helper.make_tensor_value_info(i.name, F, [2]) for i in inits)
    prepared, warnings = check(model, tmp_path)
    assert any(w.startswith("converted opset 7 -> ") for w in warnings)


def test_local_function_and_function_bodied_op(tmp_path):
    """A FunctionProto of the model is inlined; Celu (no TVM converter) expands via its ONNX body."""
    scale = helper.make_function(
        "local", "ScaleRelu", ["X"], ["Y"],
        [helper.make_node("Relu", ["X"], ["R"]), helper.make_node("Add", ["R", "R"], ["Y"])],
        [helper.make_opsetid("", 13)])
    nodes = [helper.make_node("ScaleRelu", ["x"], ["h"], domain="local"),
             helper.make_node("Celu", ["h"], ["y"], alpha=0.5)]
    model = make(nodes, [helper.make_tensor_value_info("x", F, [2, 5])],
                 [helper.make_tensor_value_info("y", F, [2, 5])], functions=[scale])
    model.opset_import.append(helper.make_opsetid("local", 1))
    prepared, warnings = check(model, tmp_path)
    assert not prepared.functions
    assert {n.op_type for n in prepared.graph.node} <= {"Relu", "Add", "Constant", "Div", "Elu", "Mul"}
    assert any("Celu" in w for w in warnings)


def if_model(cond_from_input=True):
    """y = x * 2 if flag else x - 1, with `flag` a graph input (or computed from x)."""
    then_g = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", F, [1, 4])])
    else_g = helper.make_graph([helper.make_node("Sub", ["x", "one"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", F, [1, 4])])
    nodes = [helper.make_node("If", ["flag"], ["y"], name="choose", then_branch=then_g, else_branch=else_g)]
    inputs = [helper.make_tensor_value_info("x", F, [1, 4])]
    if cond_from_input:
        inputs.append(helper.make_tensor_value_info("flag", TensorProto.BOOL, []))
    else:
        nodes.insert(0, helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0))
        nodes.insert(1, helper.make_node("Greater", ["total", "one"], ["flag"]))
    inits = [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    return make(nodes, inputs, [helper.make_tensor_value_info("y", F, [1, 4])], inits)


@pytest.mark.parametrize("flag", [0, 1])
def test_frozen_input_resolves_if(tmp_path, flag):
    feeds = {"flag": np.array(bool(flag))}
    prepared, warnings = check(if_model(), tmp_path, frozen={"flag": {"value": flag}}, feeds=feeds)
    assert [n.op_type for n in prepared.graph.node] == ["Mul" if flag else "Sub"]
    assert any("If 'choose'" in w for w in warnings)


def test_data_dependent_if_is_refused_naming_the_node(tmp_path):
    with pytest.raises(ModelError, match=r"If node 'choose' .* depends on x"):
        prepare(if_model(cond_from_input=False), tmp_path, {}, {}, [])
    with pytest.raises(ModelError, match=r"If node 'choose' .* depends on flag.*--freeze"):
        prepare(if_model(), tmp_path, {}, {}, [])


def test_freeze_names_an_unknown_input(tmp_path):
    with pytest.raises(ModelError, match="no input 'nope'"):
        prepare(if_model(), tmp_path, {}, {"nope": {"value": 1}}, [])


def test_loop_is_refused_naming_the_node(tmp_path):
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["acc", "x"], ["acc_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("acc", F, [1, 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", F, [1, 4])])
    model = make([helper.make_node("Loop", ["n", "", "x"], ["y"], name="repeat", body=body)],
                 [helper.make_tensor_value_info("x", F, [1, 4]), helper.make_tensor_value_info("n", TensorProto.INT64, [])],
                 [helper.make_tensor_value_info("y", F, [1, 4])])
    with pytest.raises(ModelError, match="Loop node 'repeat'"):
        prepare(model, tmp_path, {}, {}, [])


def test_inference_dropout_becomes_identity_but_training_dropout_stays():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    inference = make([helper.make_node("Dropout", ["x"], ["y"])], [x], [y])
    prepared = prepare(inference, Path("."), {}, {}, [])
    assert [n.op_type for n in prepared.graph.node] == ["Identity"]
    mode = helper.make_tensor_value_info("training", TensorProto.BOOL, [])
    ratio = numpy_helper.from_array(np.array(0.5, np.float32), "ratio")
    training = make([helper.make_node("Dropout", ["x", "ratio", "training"], ["y"])], [x, mode], [y],
                    inits=[ratio])
    prepared = prepare(training, Path("."), {}, {}, [])
    assert [n.op_type for n in prepared.graph.node] == ["Dropout"]


@pytest.mark.parametrize("case", ["1d", "2d", "3d"])
def test_opset6_prelu_slopes_stay_per_channel(case):
    """pytorch-converted PReLU with one slope per channel (opset 6): prepared, it
    computes the suite's reference output (onnxruntime runs the prepared model)."""
    data = Path(onnx.__file__).parent / "backend" / "test" / "data" / "pytorch-converted" / \
        f"test_PReLU_{case}_multiparam"
    model = onnx.load(str(data / "model.onnx"))
    x_name = model.graph.input[0].name
    x = numpy_helper.to_array(onnx.load_tensor(str(data / "test_data_set_0" / "input_0.pb")))
    expected = numpy_helper.to_array(onnx.load_tensor(str(data / "test_data_set_0" / "output_0.pb")))
    prepared = prepare(model, data, {x_name: list(x.shape)}, {})
    assert prepared is not model
    import onnxruntime

    session = onnxruntime.InferenceSession(prepared.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {x_name: x})
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
