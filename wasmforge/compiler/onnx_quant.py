"""Quantized ops without a TVM converter or an ONNX function body, rewritten
into plain ONNX ops at the ONNX level, computing what onnx's reference does.

`QLinearMatMul`: integer matmul of the zero-point-shifted operands (int32),
scaled by a_scale * b_scale / y_scale in double, plus y_zero_point, rounded
half to even, saturated to the output type.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import onnx_fold

OPS = {"QLinearMatMul"}


def rewrite(graph: onnx.GraphProto, types: dict[str, onnx.TypeProto], notes: list[str]) -> bool:
    replaced = onnx_fold.replace_nodes(graph, lambda node: _qlinear_matmul(node, graph, types) if (
        node.op_type == "QLinearMatMul" and node.domain in ("", "ai.onnx")) else None)
    if not replaced:
        return False
    notes.append(f"rewrote {len(replaced)} QLinearMatMul as integer MatMul and requantization")
    return True


def _elem_type(name: str, graph: onnx.GraphProto, types) -> int | None:
    for init in graph.initializer:
        if init.name == name:
            return init.data_type
    type_proto = types.get(name)
    if type_proto is None or not type_proto.HasField("tensor_type"):
        return None
    return type_proto.tensor_type.elem_type or None


def _qlinear_matmul(node: onnx.NodeProto, graph: onnx.GraphProto, types) -> list[onnx.NodeProto] | None:
    a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero = (list(node.input) + [""] * 8)[:8]
    out_type = _elem_type(y_zero, graph, types) if y_zero else _elem_type(a, graph, types)
    if out_type not in (TensorProto.INT8, TensorProto.UINT8):
        return None
    base = f"{node.name or node.output[0]}/wasmforge_qmm"
    nodes = []

    def name(suffix: str) -> str:
        return f"{base}/{suffix}"

    def add(op: str, inputs: list[str], suffix: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name(suffix)], name=name(suffix), **attrs))
        return name(suffix)

    def shifted(x: str, zero: str, tag: str) -> str:
        value = add("Cast", [x], f"{tag}_i32", to=TensorProto.INT32)
        if zero:
            value = add("Sub", [value, add("Cast", [zero], f"{tag}_zero_i32", to=TensorProto.INT32)],
                        f"{tag}_shifted")
        return value

    product = add("MatMul", [shifted(a, a_zero, "a"), shifted(b, b_zero, "b")], "c")
    scale = add("Div", [add("Mul", [a_scale, b_scale], "ab_scale"), y_scale], "scale")
    scaled = add("Mul", [add("Cast", [product], "c_f64", to=TensorProto.DOUBLE),
                         add("Cast", [scale], "scale_f64", to=TensorProto.DOUBLE)], "d")
    if y_zero:
        scaled = add("Add", [scaled, add("Cast", [y_zero], "zero_f64", to=TensorProto.DOUBLE)], "d_zero")
    info = np.iinfo(helper.tensor_dtype_to_np_dtype(out_type))
    low, high = name("qmin"), name("qmax")
    graph.initializer.extend([numpy_helper.from_array(np.array(info.min, np.float64), low),
                              numpy_helper.from_array(np.array(info.max, np.float64), high)])
    clipped = add("Clip", [add("Round", [scaled], "rounded"), low, high], "clipped")
    nodes.append(helper.make_node("Cast", [clipped], [node.output[0]], name=name("out"), to=out_type))
    return nodes
