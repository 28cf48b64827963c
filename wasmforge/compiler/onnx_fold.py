"""Constant folding at the ONNX level, once input shapes are static.

`fold` evaluates every node whose inputs are all constant (initializers,
`Constant` nodes, `Shape`/`Size`/`EyeLike` of statically shaped tensors) with onnx's
reference evaluator, resolves `If`/`Where` whose condition became constant,
and repeats until nothing changes; `remove_dead` drops what no output needs.
TVM's frontend then sees constant shapes instead of shape arithmetic.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .frontend import ModelError

# No folded tensor above this is materialised (TVM folds those itself if it can);
# shape tensors are always far below it.
MAX_FOLD_BYTES = 4 << 20
# Initializers above this are left out of the copy that shape inference reads.
_SKELETON_BYTES = 1 << 16
# Never evaluated at build time: random, or output size not bounded by the inputs'.
_NO_FOLD = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
            "Bernoulli", "Multinomial", "If", "Loop", "Scan", "SequenceMap"}
# Their output depends on their input's shape and type only, not its values.
_SHAPE_ONLY = {"EyeLike"}
_GROWING = {"ConstantOfShape", "Expand", "Tile", "Range", "Resize", "Upsample", "Pad"}
CONTROL_FLOW = ("If", "Loop", "Scan", "SequenceMap")


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def infer_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Name -> inferred type of every tensor (with data propagation), read from a
    copy whose large initializers are reduced to their declared types."""
    graph = model.graph
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model) if model.ByteSize() < _SKELETON_BYTES else _copy_without_weights(model, skeleton)
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is an aid only; folding then sees fewer shapes
        inferred = skeleton
    types = {v.name: v.type for v in (*inferred.graph.value_info, *inferred.graph.input,
                                      *inferred.graph.output)}
    for init in graph.initializer:
        types[init.name] = helper.make_tensor_type_proto(init.data_type, list(init.dims))
    return types


def _copy_without_weights(model: onnx.ModelProto, out: onnx.ModelProto) -> None:
    out.CopyFrom(onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import,
                                 functions=model.functions))
    graph = model.graph
    out.graph.name = graph.name
    out.graph.node.extend(graph.node)
    out.graph.input.extend(graph.input)
    out.graph.output.extend(graph.output)
    for init in graph.initializer:
        if init.ByteSize() <= _SKELETON_BYTES:
            out.graph.initializer.append(init)
        else:
            out.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))


def static_shape(type_proto: onnx.TypeProto | None) -> list[int] | None:
    if type_proto is None or not type_proto.HasField("tensor_type"):
        return None
    tensor = type_proto.tensor_type
    if not tensor.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None
            for d in tensor.shape.dim]
    return None if None in dims else dims


def _nbytes(type_proto: onnx.TypeProto | None) -> int | None:
    shape = static_shape(type_proto)
    if shape is None or not type_proto.tensor_type.elem_type:
        return None
    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(type_proto.tensor_type.elem_type)).itemsize
    return int(np.prod(shape, dtype=np.int64)) * itemsize


def _shape_value(node: onnx.NodeProto, types) -> np.ndarray | None:
    """The constant output of a Shape/Size node whose input shape is static."""
    shape = static_shape(types.get(node.input[0]))
    if shape is None:
        return None
    if node.op_type == "Size":
        return np.array(int(np.prod(shape, dtype=np.int64)), np.int64)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return np.array(shape[attrs.get("start", 0):attrs.get("end")], np.int64)


def _evaluate(node: onnx.NodeProto, consts, types, opsets) -> list[np.ndarray] | None:
    """The outputs of `node` evaluated on its constant inputs, or None when it
    must stay (not all constant, nondeterministic, too big, or unevaluable)."""
    from onnx.reference import ReferenceEvaluator

    if node.domain not in ("", "ai.onnx") or node.op_type in _NO_FOLD:
        return None
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return None
    if node.op_type in ("Shape", "Size"):
        value = _shape_value(node, types)
        return None if value is None else [value]
    inputs = [name for name in node.input if name]
    if node.op_type in _SHAPE_ONLY and inputs and inputs[0] not in consts:
        placeholder = _zeros_like(types.get(inputs[0]))
        if placeholder is None:
            return None
        consts = {**consts, inputs[0]: placeholder}
    if not all(name in consts for name in inputs):
        return None
    sizes = [_nbytes(types.get(out)) for out in node.output if out]
    if any(s is not None and s > MAX_FOLD_BYTES for s in sizes):
        return None
    if None in sizes and node.op_type in _GROWING:
        return None
    try:
        results = ReferenceEvaluator(_as_function(node, opsets)).run(None, {n: consts[n] for n in inputs},
                                                                   attributes={})
    except Exception:  # noqa: BLE001 - left to TVM, which may still convert it
        return None
    if not all(isinstance(r, np.ndarray) and r.nbytes <= MAX_FOLD_BYTES for r in results):
        return None
    return results


def _zeros_like(type_proto: onnx.TypeProto | None) -> np.ndarray | None:
    """Zeros of a statically shaped tensor type (within the fold size limit)."""
    size = _nbytes(type_proto)
    if size is None or size > MAX_FOLD_BYTES:
        return None
    dtype = helper.tensor_dtype_to_np_dtype(type_proto.tensor_type.elem_type)
    return np.zeros(static_shape(type_proto), dtype)


def _as_function(node: onnx.NodeProto, opsets: dict[str, int]) -> onnx.FunctionProto:
    """`node` alone in a function importing the model's opsets: onnx's ReferenceEvaluator
    runs a bare NodeProto at the newest opset (Unsqueeze-13 for an opset-12 `axes`
    attribute, which then fails), a function at the opsets it imports."""
    inputs = list(dict.fromkeys(name for name in node.input if name))
    return helper.make_function("wasmforge.fold", "node", inputs, [o for o in node.output if o], [node],
                                [helper.make_opsetid(d, v) for d, v in opsets.items()])


def _constants(graph: onnx.GraphProto, opsets) -> dict[str, np.ndarray]:
    """The values of the (not too large) initializers and of the Constant nodes."""
    from onnx.reference import ReferenceEvaluator

    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer
              if init.ByteSize() <= MAX_FOLD_BYTES}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            try:
                consts[node.output[0]] = ReferenceEvaluator(node, opsets=opsets).run(None, {})[0]
            except Exception:  # noqa: BLE001 - sparse or odd constants stay for TVM
                pass
    return consts


def _fold_pass(model: onnx.ModelProto, types) -> tuple[int, list[str]]:
    """One sweep in topological order. Returns (folded node count, resolved branch notes)."""
    graph = model.graph
    opsets = {o.domain: o.version for o in model.opset_import}
    consts = _constants(graph, opsets)
    kept: list[onnx.NodeProto] = []
    folded, resolved = 0, []
    for node in graph.node:
        if node.op_type == "Constant":
            kept.append(node)
            continue
        if node.op_type == "If" and node.input[0] in consts:
            taken = bool(np.asarray(consts[node.input[0]]).reshape(-1)[0])
            kept.extend(_inline_branch(node, taken, graph))
            resolved.append(f"If '{node.name or node.output[0]}' -> {'then' if taken else 'else'} branch")
            continue
        if node.op_type == "Where" and node.input[0] in consts:
            replacement = _resolve_where(node, consts[node.input[0]], types)
            if replacement is not None:
                kept.append(replacement)
                resolved.append(f"Where '{node.name or node.output[0]}'")
                continue
        values = _evaluate(node, consts, types, opsets)
        if values is None:
            kept.append(node)
            continue
        folded += 1
        for name, value in zip(node.output, values):
            if name:
                value = _as_declared(value, types.get(name))
                consts[name] = value
                graph.initializer.append(numpy_helper.from_array(value, name))
    del graph.node[:]
    graph.node.extend(kept)
    return folded, resolved


def _as_declared(value: np.ndarray, type_proto) -> np.ndarray:
    if type_proto is not None and type_proto.HasField("tensor_type") and type_proto.tensor_type.elem_type:
        return np.asarray(value, helper.tensor_dtype_to_np_dtype(type_proto.tensor_type.elem_type))
    return np.asarray(value)


def _resolve_where(node, cond: np.ndarray, types) -> onnx.NodeProto | None:
    """Where with a uniform constant condition -> Identity of the taken input
    (only when that input already has the output's shape and type)."""
    cond = np.asarray(cond)
    if cond.size == 0 or not (cond.all() or not cond.any()):
        return None
    source = node.input[1] if cond.all() else node.input[2]
    src, out = types.get(source), types.get(node.output[0])
    if static_shape(src) is None or static_shape(src) != static_shape(out):
        return None
    if src.tensor_type.elem_type != out.tensor_type.elem_type:
        return None
    return helper.make_node("Identity", [source], [node.output[0]], name=node.name)


def _inline_branch(node: onnx.NodeProto, taken: bool, graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes of the taken branch of `node`, renamed into the outer graph:
    branch outputs become the If's outputs, other branch names get a prefix."""
    branch = next(helper.get_attribute_value(a) for a in node.attribute
                  if a.name == ("then_branch" if taken else "else_branch"))
    prefix = f"{node.name or node.output[0]}/{'then' if taken else 'else'}/"
    rename = {out.name: outer for out, outer in zip(branch.output, node.output)}
    for init in branch.initializer:
        rename.setdefault(init.name, prefix + init.name)
    for inner in branch.node:
        for name in inner.output:
            if name:
                rename.setdefault(name, prefix + name)
    for init in branch.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(init)
        copy.name = rename[init.name]
        graph.initializer.append(copy)
    nodes = []
    for inner in branch.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(inner)
        copy.name = prefix + inner.name if inner.name else ""
        _rename_inputs(copy, rename)
        copy.output[:] = [rename.get(o, o) if o else o for o in copy.output]
        nodes.append(copy)
    produced = {o for n in branch.node for o in n.output} | {i.name for i in branch.initializer}
    for out, outer in zip(branch.output, node.output):
        if out.name not in produced:  # the branch passes an outer value straight through
            nodes.append(helper.make_node("Identity", [out.name], [outer]))
    return nodes


def _rename_inputs(node: onnx.NodeProto, rename: dict[str, str]) -> None:
    node.input[:] = [rename.get(i, i) if i else i for i in node.input]
    for attr in node.attribute:
        for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
            for inner in sub.node:
                _rename_inputs(inner, rename)


def fold(model: onnx.ModelProto, max_rounds: int = 20) -> tuple[int, list[str]]:
    """Fold `model` in place until a fixpoint. Returns (folded nodes, resolved If/Where)."""
    total, resolved = 0, []
    for _ in range(max_rounds):
        folded, notes = _fold_pass(model, infer_types(model))
        total += folded
        resolved += notes
        if not folded and not notes:
            break
    return total, resolved


def replace_nodes(graph: onnx.GraphProto, replacement) -> list[onnx.NodeProto]:
    """Put `replacement(node)` (a list of nodes, or None to keep the node) in place of
    each node of `graph`, in order; returns the nodes replaced (the graph is rewritten
    only if there are any)."""
    nodes, replaced = [], []
    for node in graph.node:
        new = replacement(node)
        if new is None:
            nodes.append(node)
        else:
            nodes += new
            replaced.append(node)
    if replaced:
        del graph.node[:]
        graph.node.extend(nodes)
    return replaced


def used_names(graph: onnx.GraphProto) -> set[str]:
    """Every name a node of `graph` (or of its subgraphs) reads."""
    names = set()
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                names |= used_names(sub) | {o.name for o in sub.output}
    return names


def remove_dead(graph: onnx.GraphProto) -> int:
    """Drop nodes and initializers no graph output depends on; returns the node count dropped."""
    live = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(o in live for o in node.output):
            kept.append(node)
            sub = onnx.GraphProto()
            sub.node.append(node)
            live |= used_names(sub)
    dropped = len(graph.node) - len(kept)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    inits = [i for i in graph.initializer if i.name in live]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    names = {o for n in graph.node for o in n.output} | {i.name for i in graph.initializer} | \
        {i.name for i in graph.input}
    infos = [v for v in graph.value_info if v.name in names]
    del graph.value_info[:]
    graph.value_info.extend(infos)
    return dropped


def _input_ancestors(graph: onnx.GraphProto, name: str) -> list[str]:
    """The graph inputs that `name` depends on."""
    producer = {o: n for n in graph.node for o in n.output}
    inputs = {i.name for i in graph.input}
    seen, todo, found = set(), [name], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in inputs:
            found.add(current)
        elif current in producer:
            todo.extend(i for i in producer[current].input if i)
    return sorted(found)


def check_control_flow(graph: onnx.GraphProto) -> None:
    """A clear ModelError for the first control-flow node left after folding."""
    for node in graph.node:
        if node.op_type not in CONTROL_FLOW:
            continue
        label = f"{node.op_type} node '{node.name or node.output[0]}'"
        if node.op_type == "If":
            drivers = ", ".join(_input_ancestors(graph, node.input[0])) or "a computed value"
            raise ModelError(
                f"{label} has a condition that depends on {drivers} at run time; "
                "freeze the input that drives it with --freeze NAME=VALUE to compile one branch")
        raise ModelError(f"{label}: control flow ({node.op_type}) cannot be compiled; "
                         "export the model with the loop unrolled")
