"""Small ONNX models made on the fly for tests (no files, no downloads)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(rng, name, shape, scale=1.0, low=None):
    if low is not None:
        data = rng.uniform(low, low + 1.0, shape)
    else:
        data = rng.standard_normal(shape) * scale
    return numpy_helper.from_array(data.astype(np.float32), name)


def tiny_cnn(seed: int = 0) -> onnx.ModelProto:
    """Conv -> BN -> Relu -> MaxPool -> Flatten -> Gemm on a 1x1x8x8 input."""
    rng = np.random.default_rng(seed)
    inits = [
        _init(rng, "W", (4, 1, 3, 3)), _init(rng, "s", (4,), low=0.5), _init(rng, "b", (4,), 0.1),
        _init(rng, "m", (4,), 0.1), _init(rng, "v", (4,), low=0.5),
        _init(rng, "G", (10, 64)), _init(rng, "gb", (10,)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "G", "gb"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def with_unsupported_ops(ops=("Det", "Celu")) -> onnx.ModelProto:
    """A valid model whose operators the pinned TVM frontend cannot convert."""
    nodes = [helper.make_node("Det", ["x"], ["d"]), helper.make_node("Celu", ["x"], ["y"])]
    graph = helper.make_graph(
        [n for n in nodes if n.op_type in ops], "unsupported",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, shape)
         for o, op, shape in (("d", "Det", []), ("y", "Celu", [3, 3])) if op in ops])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def two_outputs() -> onnx.ModelProto:
    """x -> (relu(x), x * 2): several outputs, one of them a plain elementwise op."""
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["x", "two"], ["m"])]
    graph = helper.make_graph(
        nodes, "two_outputs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("m", TensorProto.FLOAT, [2, 3])], [two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model
