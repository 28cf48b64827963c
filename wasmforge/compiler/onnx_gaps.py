"""Nodes the TVM frontend has a converter for but cannot convert as written,
rewritten at the ONNX level into forms it converts, computing what onnx's
reference computes:

- `Resize` with an `axes` attribute or a `keep_aspect_ratio_policy` (with
  constant sizes/scales and a static input shape): full-rank sizes/scales/roi;
- `Pow` with mixed or integer operand types: a float exponent of the base's type,
  or (integer base) the power in double cast back to the base's type;
- `ReduceMax`/`ReduceMin` of booleans: reduced as uint8;
- `BitShift` by a negative amount or by the bit width or more (out of range:
  0, or -1 for a negative value shifted right, as the reference says; TVM
  computes what the machine's shift does);
- `IsInf` with `detect_positive=0` or `detect_negative=0` (TVM ignores both);
- `Dropout` at inference with its mask used: the mask is all true, a bool
  tensor (TVM's is float);
- `Mod` of floats with `fmod=0` (the sign of the divisor, as numpy's mod):
  computed from the truncated remainder, so infinite divisors give what the
  reference gives (TVM's floor formula makes them NaN);
- `ReduceMax`/`ReduceMin` over an empty axis (static shapes): the identity,
  -inf/+inf or the integer type's extreme.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import onnx_fold

_INTEGER = {TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64,
            TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64}
_FLOAT = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16}


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _elem(name: str, types) -> int | None:
    type_proto = types.get(name)
    if type_proto is None or not type_proto.HasField("tensor_type"):
        return None
    return type_proto.tensor_type.elem_type or None


def needs_rewrite(graph: onnx.GraphProto) -> bool:
    """Cheap test before type inference: a node of a kind this module may rewrite."""
    return any(n.op_type in ("Resize", "Pow", "ReduceMax", "ReduceMin", "BitShift", "IsInf", "Dropout",
                          "Mod")
               and n.domain in ("", "ai.onnx") for n in graph.node)


def rewrite(model: onnx.ModelProto, notes: list[str]) -> bool:
    graph = model.graph
    if not needs_rewrite(graph):
        return False
    types = onnx_fold.infer_types(model)
    consts = {init.name: init for init in graph.initializer}

    def replacement(node):
        if node.domain not in ("", "ai.onnx"):
            return None
        if node.op_type == "Resize":
            return _resize(node, graph, types, consts)
        if node.op_type == "Pow":
            return _pow(node, types)
        if node.op_type in ("ReduceMax", "ReduceMin"):
            empty = _empty_reduce(node, types, consts)
            if empty is not None:
                return empty
            if _elem(node.input[0], types) == TensorProto.BOOL:
                return _bool_reduce(node)
            return None
        if node.op_type == "BitShift":
            return _bitshift(node, types)
        if node.op_type == "IsInf":
            return _isinf(node, types)
        if node.op_type == "Dropout":
            return _dropout(node, consts)
        if node.op_type == "Mod":
            return _float_mod(node, types)
        return None

    done = {}
    for node in onnx_fold.replace_nodes(graph, replacement):
        done[node.op_type] = done.get(node.op_type, 0) + 1
    if not done:
        return False
    notes.append("rewrote " + ", ".join(f"{count} {op}" for op, count in done.items())
                 + " into forms TVM converts")
    return True


def _base(node: onnx.NodeProto) -> str:
    return f"{node.name or node.output[0]}/wasmforge"


def _pow(node: onnx.NodeProto, types) -> list[onnx.NodeProto] | None:
    base, exponent = _elem(node.input[0], types), _elem(node.input[1], types)
    if base is None or exponent is None:
        return None
    prefix = _base(node)
    if base in _FLOAT:
        if exponent == base:
            return None
        cast = f"{prefix}/exponent"
        return [helper.make_node("Cast", [node.input[1]], [cast], name=cast, to=base),
                helper.make_node("Pow", [node.input[0], cast], list(node.output), name=node.name)]
    if base not in _INTEGER or (exponent not in _INTEGER and exponent not in _FLOAT):
        return None
    x, y, power = f"{prefix}/base_f64", f"{prefix}/exponent_f64", f"{prefix}/power_f64"
    return [helper.make_node("Cast", [node.input[0]], [x], name=x, to=TensorProto.DOUBLE),
            helper.make_node("Cast", [node.input[1]], [y], name=y, to=TensorProto.DOUBLE),
            helper.make_node("Pow", [x, y], [power], name=power),
            helper.make_node("Cast", [power], list(node.output), name=node.name, to=base)]


def _bool_reduce(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """max/min over {0, 1} as uint8 (an empty max is 0 = False, an empty min 255 = True)."""
    prefix = _base(node)
    wide, reduced = f"{prefix}/as_uint8", f"{prefix}/reduced_uint8"
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.input[0], copy.output[0] = wide, reduced
    return [helper.make_node("Cast", [node.input[0]], [wide], name=wide, to=TensorProto.UINT8), copy,
            helper.make_node("Cast", [reduced], [node.output[0]], name=f"{prefix}/as_bool",
                             to=TensorProto.BOOL)]


def _constant(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(value, name))


def _bitshift(node: onnx.NodeProto, types) -> list[onnx.NodeProto] | None:
    elem = _elem(node.input[0], types)
    if elem not in _INTEGER:
        return None
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    x, y = node.input[0], node.input[1]
    p = _base(node)
    right = _attrs(node).get("direction", b"") in (b"RIGHT", "RIGHT")
    nodes = [_constant(f"{p}/zero", np.array(0, dtype)),
             _constant(f"{p}/width", np.array(8 * dtype.itemsize, dtype)),
             helper.make_node("Less", [y, f"{p}/zero"], [f"{p}/negative"], name=f"{p}/negative"),
             helper.make_node("GreaterOrEqual", [y, f"{p}/width"], [f"{p}/too_far"], name=f"{p}/too_far"),
             helper.make_node("Or", [f"{p}/negative", f"{p}/too_far"], [f"{p}/out"], name=f"{p}/out"),
             helper.make_node("Where", [f"{p}/out", f"{p}/zero", y], [f"{p}/amount"], name=f"{p}/amount"),
             helper.make_node("BitShift", [x, f"{p}/amount"], [f"{p}/shifted"], name=node.name or f"{p}/shifted",
                              direction="RIGHT" if right else "LEFT")]
    fill = f"{p}/zero"
    if right and np.issubdtype(dtype, np.signedinteger):  # the sign bit fills the word
        nodes += [_constant(f"{p}/minus_one", np.array(-1, dtype)),
                  helper.make_node("Less", [x, f"{p}/zero"], [f"{p}/x_negative"], name=f"{p}/x_negative"),
                  helper.make_node("Where", [f"{p}/x_negative", f"{p}/minus_one", f"{p}/zero"], [f"{p}/fill"],
                                   name=f"{p}/fill")]
        fill = f"{p}/fill"
    nodes.append(helper.make_node("Where", [f"{p}/out", fill, f"{p}/shifted"], list(node.output), name=f"{p}/where"))
    return nodes


def _isinf(node: onnx.NodeProto, types) -> list[onnx.NodeProto] | None:
    attrs = _attrs(node)
    positive, negative = attrs.get("detect_positive", 1), attrs.get("detect_negative", 1)
    elem = _elem(node.input[0], types)
    if (positive and negative) or elem not in _FLOAT:
        return None
    p = _base(node)
    nodes = [helper.make_node("IsInf", [node.input[0]], [f"{p}/inf"], name=f"{p}/inf"),
             _constant(f"{p}/zero", np.array(0, helper.tensor_dtype_to_np_dtype(elem)))]
    if positive or negative:
        side = "Greater" if positive else "Less"
        nodes.append(helper.make_node(side, [node.input[0], f"{p}/zero"], [f"{p}/side"], name=f"{p}/side"))
    else:  # neither: never true
        nodes.append(helper.make_node("Not", [f"{p}/inf"], [f"{p}/side"], name=f"{p}/side"))
    nodes.append(helper.make_node("And", [f"{p}/inf", f"{p}/side"], list(node.output), name=node.name or p))
    return nodes


def _dropout(node: onnx.NodeProto, consts) -> list[onnx.NodeProto] | None:
    """Inference Dropout (no training_mode, or a constant false one) whose mask is used."""
    if len(node.output) < 2 or not node.output[1]:
        return None
    if len(node.input) > 2 and node.input[2]:
        mode = consts.get(node.input[2])
        if mode is None or bool(numpy_helper.to_array(mode)):
            return None
    p = _base(node)
    return [helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name or p),
            helper.make_node("Shape", [node.input[0]], [f"{p}/shape"], name=f"{p}/shape"),
            helper.make_node("ConstantOfShape", [f"{p}/shape"], [node.output[1]], name=f"{p}/mask",
                             value=helper.make_tensor(f"{p}/true", TensorProto.BOOL, [1], [True]))]


def _float_mod(node: onnx.NodeProto, types) -> list[onnx.NodeProto] | None:
    elem = _elem(node.input[0], types)
    if _attrs(node).get("fmod", 0) or elem not in _FLOAT:
        return None
    x, y = node.input[0], node.input[1]
    p = _base(node)
    return [helper.make_node("Mod", [x, y], [f"{p}/rem"], name=node.name or f"{p}/rem", fmod=1),
            _constant(f"{p}/zero", np.array(0, helper.tensor_dtype_to_np_dtype(elem))),
            helper.make_node("Equal", [f"{p}/rem", f"{p}/zero"], [f"{p}/exact"], name=f"{p}/exact"),
            helper.make_node("Less", [f"{p}/rem", f"{p}/zero"], [f"{p}/rem_neg"], name=f"{p}/rem_neg"),
            helper.make_node("Less", [y, f"{p}/zero"], [f"{p}/y_neg"], name=f"{p}/y_neg"),
            helper.make_node("Xor", [f"{p}/rem_neg", f"{p}/y_neg"], [f"{p}/signs"], name=f"{p}/signs"),
            helper.make_node("Not", [f"{p}/exact"], [f"{p}/inexact"], name=f"{p}/inexact"),
            helper.make_node("And", [f"{p}/signs", f"{p}/inexact"], [f"{p}/shift"], name=f"{p}/shift"),
            helper.make_node("Add", [f"{p}/rem", y], [f"{p}/shifted"], name=f"{p}/shifted"),
            helper.make_node("Where", [f"{p}/shift", f"{p}/shifted", f"{p}/rem"], list(node.output),
                             name=f"{p}/where")]


def _empty_reduce(node: onnx.NodeProto, types, consts) -> list[onnx.NodeProto] | None:
    shape, out_shape = (onnx_fold.static_shape(types.get(n)) for n in (node.input[0], node.output[0]))
    elem = _elem(node.input[0], types)
    if shape is None or out_shape is None or elem is None or 0 not in shape:
        return None
    if len(node.input) > 1 and node.input[1]:
        if node.input[1] not in consts:
            return None
        axes = [int(a) for a in numpy_helper.to_array(consts[node.input[1]]).reshape(-1)]
    else:
        axes = list(_attrs(node).get("axes", range(len(shape))))
    if not axes or any(shape[a % len(shape)] != 0 for a in axes):
        return None
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem))
    largest = node.op_type == "ReduceMin"  # the identity of min is the largest value
    if dtype.kind == "f":
        fill = np.inf if largest else -np.inf
    elif dtype.kind in "iu":
        fill = np.iinfo(dtype).max if largest else np.iinfo(dtype).min
    else:
        return None
    return [_constant(node.output[0], np.full(out_shape, fill, dtype))]


def _resize(node: onnx.NodeProto, graph, types, consts) -> list[onnx.NodeProto] | None:
    attrs = _attrs(node)
    policy = attrs.get("keep_aspect_ratio_policy", b"stretch")
    policy = policy.decode() if isinstance(policy, bytes) else policy
    if "axes" not in attrs and policy == "stretch":
        return None
    shape = onnx_fold.static_shape(types.get(node.input[0]))
    if shape is None:
        return None
    rank = len(shape)
    axes = [a % rank for a in attrs.get("axes", range(rank))]
    inputs = list(node.input) + [""] * (4 - len(node.input))
    roi_name, scales_name, sizes_name = inputs[1], inputs[2], inputs[3]
    if any(name and name not in consts for name in (roi_name, scales_name, sizes_name)):
        return None
    prefix = _base(node)
    new_inputs = [node.input[0], "", "", ""]
    added = []

    def constant(value: np.ndarray, suffix: str) -> str:
        name = f"{prefix}/{suffix}"
        added.append(numpy_helper.from_array(value, name))
        return name

    if roi_name:
        roi = numpy_helper.to_array(consts[roi_name]).astype(np.float64)
        if roi.size:
            full = np.array([0.0] * rank + [1.0] * rank, roi.dtype)
            for i, axis in enumerate(axes):
                full[axis], full[rank + axis] = roi[i], roi[len(axes) + i]
            roi = full
        new_inputs[1] = constant(roi.astype(numpy_helper.to_array(consts[roi_name]).dtype), "roi")
    sizes = numpy_helper.to_array(consts[sizes_name]) if sizes_name else np.zeros(0, np.int64)
    scales = numpy_helper.to_array(consts[scales_name]) if scales_name else np.zeros(0, np.float32)
    if sizes.size:
        if sizes.size != len(axes):
            return None
        ratios = [float(s) / shape[a] for s, a in zip(sizes, axes)]
        if policy in ("not_larger", "not_smaller"):
            scale = min(ratios) if policy == "not_larger" else max(ratios)
            out = [int(scale * shape[a] + 0.5) for a in axes]
            # Exact only when every resized axis then has out / in == scale (the
            # reference interpolates with `scale`, a sizes input with out / in).
            if any(o != scale * shape[a] for o, a in zip(out, axes)):
                return None
        elif policy == "stretch":
            out = [int(s) for s in sizes]
        else:
            return None
        full = list(shape)
        for axis, size in zip(axes, out):
            full[axis] = size
        new_inputs[3] = constant(np.array(full, np.int64), "sizes")
    elif scales.size:
        if scales.size != len(axes):
            return None
        full = np.ones(rank, scales.dtype)
        for axis, value in zip(axes, scales):
            full[axis] = value
        new_inputs[2] = constant(full, "scales")
    else:
        return None
    graph.initializer.extend(added)
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    while new_inputs and not new_inputs[-1]:
        new_inputs.pop()
    copy.input[:] = new_inputs
    kept = [a for a in copy.attribute if a.name not in ("axes", "keep_aspect_ratio_policy")]
    del copy.attribute[:]
    copy.attribute.extend(kept)
    return [copy]
