"""How many floating-point operations one inference of an ONNX model does.

Counted where the work is: Conv, ConvTranspose, Gemm and MatMul, a
multiply-add counted as two operations, on the shapes ONNX's shape inference
derives from the artifact's input shapes. Element-wise operators, pooling and
normalisation are left out (they are memory-bound and small next to these),
so this is the usual "model GFLOP" figure, e.g. ~7.7-8.2 for ResNet50.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from pathlib import Path


@dataclass
class FlopCount:
    flops: int
    counted: int  # nodes whose FLOPs are in `flops`
    unknown: list[str]  # nodes of a counted kind whose shapes could not be inferred


def count(onnx_path: Path, input_shapes: dict[str, list[int]]) -> FlopCount:
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(onnx_path), load_external_data=False)
    for graph_input in model.graph.input:
        shape = input_shapes.get(graph_input.name)
        if shape is None or not graph_input.type.HasField("tensor_type"):
            continue
        dims = graph_input.type.tensor_type.shape.dim
        del dims[:]
        for size in shape:
            dims.add().dim_value = size
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes = {**_shapes(inferred.graph.value_info), **_shapes(inferred.graph.input),
              **_shapes(inferred.graph.output),
              **{t.name: list(t.dims) for t in inferred.graph.initializer}}
    total, counted, unknown = 0, 0, []
    for node in inferred.graph.node:
        counter = _COUNTERS.get(node.op_type)
        if counter is None:
            continue
        args = [shapes.get(name) for name in node.input[:2]] + [shapes.get(node.output[0])]
        if any(shape is None or any(d <= 0 for d in shape) for shape in args):
            unknown.append(node.name or node.op_type)
            continue
        total += counter(node, *args)
        counted += 1
    return FlopCount(total, counted, unknown)


def _shapes(values) -> dict[str, list[int]]:
    found = {}
    for value in values:
        if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
            continue
        dims = value.type.tensor_type.shape.dim
        found[value.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    return found


def _group(node) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def _conv(node, x, w, y) -> int:
    # y: N x Cout x spatial...; w: Cout x Cin/group x kernel...
    return 2 * prod(y) * prod(w[1:])


def _conv_transpose(node, x, w, y) -> int:
    # every input pixel scatters into Cout/group x kernel outputs; w: Cin x Cout/group x kernel...
    return 2 * prod(x) * prod(w[1:])


def _matmul(node, a, b, y) -> int:
    inner = a[-1] if len(a) > 0 else 1
    return 2 * prod(y) * inner


def _gemm(node, a, b, y) -> int:
    trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
    inner = a[0] if trans_a else a[-1]
    return 2 * prod(y) * inner


_COUNTERS = {"Conv": _conv, "ConvTranspose": _conv_transpose, "MatMul": _matmul, "Gemm": _gemm}
