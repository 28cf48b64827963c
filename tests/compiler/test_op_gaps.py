"""ONNX ops the pinned TVM frontend lacks or converts only in part: expanded through
their ONNX function bodies, rewritten at the ONNX level, or converted by the
compiler's own converters. Each prepared model is lowered, run with native kernels
and compared with onnx's reference evaluator on the original model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from tests.compiler.native_checks import plan_and_native
from wasmforge.compiler.frontend import unsupported_ops
from wasmforge.compiler.prepare import prepare

F = TensorProto.FLOAT


def make(nodes, inputs, outputs, inits=(), opset=23):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def tensor(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def feeds_for(model, seed=0):
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in model.graph.input:
        elem = value.type.tensor_type.elem_type
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(elem)
        if dtype == np.bool_:
            feeds[value.name] = rng.random(shape) > 0.5
        elif np.dtype(dtype).kind in "iu":
            feeds[value.name] = rng.integers(0, 4, shape).astype(dtype)
        else:
            feeds[value.name] = rng.uniform(0.5, 2.0, shape).astype(dtype)
    return feeds


def check(model, tmp_path, feeds=None, rtol=1e-4, atol=1e-5):
    """prepare + lower + native run equals onnx's reference on the original. Returns
    (prepared model, prepare's notes)."""
    onnx.checker.check_model(model)
    notes: list[str] = []
    prepared = prepare(model, tmp_path, {}, {}, notes)
    assert not unsupported_ops(prepared)
    _, _, native, inputs = plan_and_native(prepared)
    feeds = feeds or feeds_for(model)
    expected = ReferenceEvaluator(model).run(None, feeds)
    got = native.run([feeds[i["name"]] for i in inputs])
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype
        np.testing.assert_allclose(g.astype(np.float64), e.astype(np.float64), rtol=rtol, atol=atol)
    return prepared, notes


def test_onnx_attention_expands_through_its_function_body(tmp_path):
    """TVM's `Attention` converter is com.microsoft's; ONNX's (3-D, with num_heads) expands."""
    model = make([helper.make_node("Attention", ["q", "k", "v"], ["y"], q_num_heads=2, kv_num_heads=2)],
                 [tensor("q", F, [1, 3, 8]), tensor("k", F, [1, 5, 8]), tensor("v", F, [1, 5, 8])],
                 [tensor("y", F, [1, 3, 8])])
    prepared, notes = check(model, tmp_path)
    assert "Attention" not in {n.op_type for n in prepared.graph.node}
    assert any("expanded Attention" in n for n in notes)


def test_layer_normalization_mean_and_inv_std_dev_outputs(tmp_path):
    """TVM's converter returns placeholders for outputs 1 and 2: used, the op expands."""
    scale = numpy_helper.from_array(np.linspace(0.5, 1.5, 4).astype(np.float32), "scale")
    model = make([helper.make_node("LayerNormalization", ["x", "scale"], ["y", "mean", "inv"], axis=-1)],
                 [tensor("x", F, [3, 4])],
                 [tensor("y", F, [3, 4]), tensor("mean", F, [3, 1]), tensor("inv", F, [3, 1])], [scale])
    _, notes = check(model, tmp_path)
    assert any("expanded LayerNormalization" in n for n in notes)
    only_y = make([helper.make_node("LayerNormalization", ["x", "scale"], ["y"], axis=-1)],
                  [tensor("x", F, [3, 4])], [tensor("y", F, [3, 4])], [scale])
    prepared = prepare(only_y, tmp_path, {}, {}, [])
    assert [n.op_type for n in prepared.graph.node] == ["LayerNormalization"]


def test_expansion_repeats_and_fills_default_attributes(tmp_path):
    """SwiGLU's body calls Swish (no converter either) with alpha by reference: both
    expand, and the schema default stands in for the alpha the node leaves out."""
    model = make([helper.make_node("SwiGLU", ["a", "b"], ["y"])],
                 [tensor("a", F, [2, 6]), tensor("b", F, [2, 6])], [tensor("y", F, [2, 6])], opset=28)
    _, notes = check(model, tmp_path)
    assert any("SwiGLU, Swish" in n for n in notes)


def test_softmax_cross_entropy_expands_into_nll_and_then_further(tmp_path):
    labels = tensor("labels", TensorProto.INT64, [3])
    model = make([helper.make_node("SoftmaxCrossEntropyLoss", ["x", "labels"], ["loss"], reduction="mean")],
                 [tensor("x", F, [3, 5]), labels], [tensor("loss", F, [])], opset=13)
    feeds = {"x": np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32),
             "labels": np.array([0, 4, 2], np.int64)}
    _, notes = check(model, tmp_path, feeds=feeds)
    assert any("NegativeLogLikelihoodLoss" in n and "SoftmaxCrossEntropyLoss" in n for n in notes)


def test_constant_short_forms_become_value_tensors(tmp_path):
    """value_float / value_ints (as function bodies write them): TVM reads only `value`."""
    nodes = [helper.make_node("Constant", [], ["alpha"], value_float=0.25),
             helper.make_node("Constant", [], ["shape"], value_ints=[4, 3]),
             helper.make_node("Mul", ["x", "alpha"], ["m"]),
             helper.make_node("Reshape", ["m", "shape"], ["y"])]
    model = make(nodes, [tensor("x", F, [3, 4])], [tensor("y", F, [4, 3])])
    check(model, tmp_path)


def test_cumprod_has_a_converter(tmp_path):
    axis = numpy_helper.from_array(np.array(1, np.int64), "axis")
    for exclusive, reverse in ((0, 0), (1, 1)):
        model = make([helper.make_node("CumProd", ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)],
                     [tensor("x", F, [2, 5])], [tensor("y", F, [2, 5])], [axis], opset=26)
        check(model, tmp_path)


@pytest.mark.parametrize("elem", [TensorProto.UINT8, TensorProto.INT8])
def test_qlinear_matmul_is_integer_matmul_and_requantization(tmp_path, elem):
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    rng = np.random.default_rng(3)
    low, high = (0, 255) if elem == TensorProto.UINT8 else (-128, 127)
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "a_scale"),
             numpy_helper.from_array(np.array(3, dtype), "a_zero"),
             numpy_helper.from_array(rng.integers(low, high, (4, 3)).astype(dtype), "b"),
             numpy_helper.from_array(np.array(0.02, np.float32), "b_scale"),
             numpy_helper.from_array(np.array(-2 if elem == TensorProto.INT8 else 5, dtype), "b_zero"),
             numpy_helper.from_array(np.array(0.3, np.float32), "y_scale"),
             numpy_helper.from_array(np.array(1, dtype), "y_zero")]
    model = make([helper.make_node("QLinearMatMul", ["a", "a_scale", "a_zero", "b", "b_scale", "b_zero",
                                                     "y_scale", "y_zero"], ["y"])],
                 [tensor("a", elem, [2, 4])], [tensor("y", elem, [2, 3])], inits, opset=21)
    feeds = {"a": rng.integers(low, high, (2, 4)).astype(dtype)}
    prepared, _ = check(model, tmp_path, feeds=feeds, rtol=0, atol=0)
    assert "QLinearMatMul" not in {n.op_type for n in prepared.graph.node}


def test_eyelike_of_a_static_shape_folds(tmp_path):
    model = make([helper.make_node("EyeLike", ["x"], ["y"], k=1, dtype=F)],
                 [tensor("x", TensorProto.INT32, [3, 4])], [tensor("y", F, [3, 4])])
    prepared, _ = check(model, tmp_path)
    assert not prepared.graph.node or "EyeLike" not in {n.op_type for n in prepared.graph.node}


@pytest.mark.parametrize("base,exponent", [(F, TensorProto.INT64), (TensorProto.INT64, F),
                                           (TensorProto.INT32, TensorProto.INT32)])
def test_pow_with_mixed_or_integer_types(tmp_path, base, exponent):
    model = make([helper.make_node("Pow", ["x", "e"], ["y"])],
                 [tensor("x", base, [5]), tensor("e", exponent, [5])], [tensor("y", base, [5])])
    check(model, tmp_path)


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_boolean_reduce_max_min(tmp_path, op):
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    model = make([helper.make_node(op, ["x", "axes"], ["y"], keepdims=1)],
                 [tensor("x", TensorProto.BOOL, [3, 4])], [tensor("y", TensorProto.BOOL, [3, 1])], [axes])
    check(model, tmp_path)


def test_rms_normalization_over_every_axis_expands(tmp_path):
    scale = numpy_helper.from_array(np.linspace(0.5, 1.5, 12).reshape(3, 4).astype(np.float32), "scale")
    model = make([helper.make_node("RMSNormalization", ["x", "scale"], ["y"], axis=0)],
                 [tensor("x", F, [3, 4])], [tensor("y", F, [3, 4])], [scale])
    check(model, tmp_path)


@pytest.mark.parametrize("policy,sizes,out", [("stretch", [6, 4], [6, 4]), ("not_larger", [7, 8], [7, 7]),
                                              ("not_smaller", [4, 3], [4, 4])])
def test_resize_with_axes_and_aspect_ratio_policy(tmp_path, policy, sizes, out):
    inits = [numpy_helper.from_array(np.array(sizes, np.int64), "sizes")]
    model = make([helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], axes=[3, 2], mode="nearest",
                                   keep_aspect_ratio_policy=policy)],
                 [tensor("x", F, [1, 1, 2, 2])], [tensor("y", F, [1, 1, out[1], out[0]])], inits, opset=19)
    prepared, _ = check(model, tmp_path)
    resize = next(n for n in prepared.graph.node if n.op_type == "Resize")
    assert {a.name for a in resize.attribute}.isdisjoint({"axes", "keep_aspect_ratio_policy"})



def scan_model(directions, out_axis):
    """A running sum (state) and per-step products (scan output)."""
    body = helper.make_graph(
        [helper.make_node("Add", ["acc", "row"], ["acc_out"]),
         helper.make_node("Mul", ["acc_out", "scale"], ["step"])],
        "body", [tensor("acc", F, [3]), tensor("row", F, [3])],
        [tensor("acc_out", F, [3]), tensor("step", F, [3])])
    scale = numpy_helper.from_array(np.array([1.0, 2.0, 0.5], np.float32), "scale")
    return make([helper.make_node("Scan", ["init", "xs"], ["final", "steps"], body=body, num_scan_inputs=1,
                                  scan_input_directions=[directions[0]], scan_output_directions=[directions[1]],
                                  scan_output_axes=[out_axis])],
                [tensor("init", F, [3]), tensor("xs", F, [4, 3])],
                [tensor("final", F, [3]), tensor("steps", F, [4, 3] if out_axis == 0 else [3, 4])], [scale],
                opset=16)


@pytest.mark.parametrize("directions,out_axis", [((0, 0), 0), ((1, 1), 0), ((1, 0), 1)])
def test_scan_unrolls_over_its_static_length(tmp_path, directions, out_axis):
    """Checked against onnxruntime: onnx's reference scans forward on axis 0 only."""
    import onnxruntime

    model = scan_model(directions, out_axis)
    notes: list[str] = []
    prepared = prepare(model, tmp_path, {}, {}, notes)
    assert "Scan" not in {n.op_type for n in prepared.graph.node}
    assert any("unrolled 1 Scan over 4" in n for n in notes)
    feeds = feeds_for(model)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    _, _, native, inputs = plan_and_native(prepared)
    for got, want in zip(native.run([feeds[i["name"]] for i in inputs]), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("elem, direction, x, y, z", [
    (TensorProto.INT32, "LEFT", [-8, 4, -1, 3], [32, 33, -1, 2], [0, 0, 0, 12]),
    (TensorProto.INT32, "RIGHT", [-8, 4, -1, 16], [32, -4, 100, 2], [-1, 0, -1, 4]),
    (TensorProto.UINT8, "RIGHT", [200, 4, 255, 16], [8, 9, 1, 2], [0, 0, 127, 4]),
])
def test_bitshift_out_of_range_is_zero_or_the_sign(tmp_path, elem, direction, x, y, z):
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    model = make([helper.make_node("BitShift", ["x", "y"], ["z"], direction=direction)],
                 [tensor("x", elem, [4]), tensor("y", elem, [4])], [tensor("z", elem, [4])])
    feeds = {"x": np.array(x).astype(dtype), "y": np.array(y).astype(dtype)}
    np.testing.assert_array_equal(ReferenceEvaluator(model).run(None, feeds)[0], np.array(z).astype(dtype))
    check(model, tmp_path, feeds)


@pytest.mark.parametrize("positive, negative", [(1, 0), (0, 1), (0, 0)])
def test_isinf_detects_only_the_sides_asked_for(tmp_path, positive, negative):
    model = make([helper.make_node("IsInf", ["x"], ["y"], detect_positive=positive, detect_negative=negative)],
                 [tensor("x", F, [6])], [tensor("y", TensorProto.BOOL, [6])])
    feeds = {"x": np.array([-np.inf, np.inf, 0.0, np.nan, -1.5, 3.0], np.float32)}
    check(model, tmp_path, feeds)


def test_inference_dropout_mask_is_true_bools(tmp_path):
    ratio = numpy_helper.from_array(np.array(0.3, np.float32), "ratio")
    model = make([helper.make_node("Dropout", ["x", "ratio"], ["y", "mask"], seed=0)],
                 [tensor("x", F, [3, 4])], [tensor("y", F, [3, 4]), tensor("mask", TensorProto.BOOL, [3, 4])],
                 [ratio])
    check(model, tmp_path)


@pytest.mark.parametrize("elem", [F, TensorProto.DOUBLE])
def test_float_mod_takes_the_divisors_sign_also_for_infinities(tmp_path, elem):
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    model = make([helper.make_node("Mod", ["x", "y"], ["z"], fmod=0)],
                 [tensor("x", elem, [8]), tensor("y", elem, [8])], [tensor("z", elem, [8])])
    feeds = {"x": np.array([-3, 3, -1, 1, 5.5, -5.5, 7, -7], dtype),
             "y": np.array([np.inf, np.inf, -np.inf, -np.inf, 2, 2, -3, -3], dtype)}
    np.testing.assert_array_equal(ReferenceEvaluator(model).run(None, feeds)[0],
                                  np.array([np.inf, 3, -1, -np.inf, 1.5, 0.5, -2, -1], dtype))
    check(model, tmp_path, feeds)


@pytest.mark.parametrize("op, elem", [("ReduceMax", F), ("ReduceMin", F), ("ReduceMax", TensorProto.INT32)])
def test_reduce_max_min_over_an_empty_axis_is_the_identity(tmp_path, op, elem):
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    model = make([helper.make_node(op, ["x", "axes"], ["y"], keepdims=1)],
                 [tensor("x", elem, [2, 0, 4])], [tensor("y", elem, [2, 1, 4])], [axes])
    notes: list[str] = []
    prepared = prepare(model, tmp_path, {}, {}, notes)
    (node,) = prepared.graph.node
    assert node.op_type == "Constant"
    value = numpy_helper.to_array(node.attribute[0].t)
    expected = ReferenceEvaluator(model).run(None, {"x": np.zeros((2, 0, 4), helper.tensor_dtype_to_np_dtype(elem))})[0]
    np.testing.assert_array_equal(value, expected)
