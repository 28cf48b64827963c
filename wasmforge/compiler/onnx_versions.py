"""Opsets and functions: what TVM's converters need, and onnx's own definitions
for what they lack.

`convert_opset` runs onnx.version_converter only where the frontend's
converters cannot read the model's version of an op; `expand_functions`
replaces ops without a converter by their ONNX function bodies; `inline`
and `retarget` make onnx's inliner accept functions written for another opset.
"""

from __future__ import annotations

import onnx
from onnx import helper

from . import onnx_fold
from .frontend import ModelError


# Domain of the temporary local functions that expand ops TVM lacks.
_EXPAND_DOMAIN = "wasmforge.expand"
# The oldest default-domain opset accepted (older ones are converted to it).
MIN_OPSET = 7
# Opset 13 changed their axis semantics but not their signature.
_MEANING_CHANGED = {"Softmax", "LogSoftmax", "Hardmax"}



def inline(model: onnx.ModelProto) -> None:
    import onnx.inliner

    try:
        inlined = onnx.inliner.inline_local_functions(model)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"cannot inline the model's functions: {_first_line(exc)}") from None
    model.CopyFrom(inlined)


def retarget(function: onnx.FunctionProto, opset: int) -> bool:
    """Make `function` import the model's default opset when every op of its body
    has the same signature at both versions (onnx's inliner skips functions whose
    opset differs from the model's)."""
    for entry in function.opset_import:
        if entry.domain not in ("", "ai.onnx") or entry.version == opset:
            continue
        ops = {n.op_type for n in function.node if n.domain in ("", "ai.onnx")}
        if not all(_same_signature(op, entry.version, opset) for op in ops):
            return False
        entry.version = opset
    return True


def _signature(op: str, opset: int):
    schema = onnx.defs.get_schema(op, opset)
    return (sorted(schema.attributes), schema.min_input, schema.max_input,
            schema.min_output, schema.max_output)


def _same_signature(op: str, a: int, b: int) -> bool:
    """Whether `op` written for opset a means the same at opset b: the same inputs
    and attributes (types aside), or, when b is newer, only optional attributes
    added (such as Cast's `saturate`, which only float8 targets read); except for
    the ops whose meaning changed without a new signature."""
    if op in _MEANING_CHANGED and min(a, b) < 13 <= max(a, b):
        return False
    try:
        old, new = _signature(op, a), _signature(op, b)
        if old == new:
            return True
        if b < a or old[1:] != new[1:] or not set(old[0]) <= set(new[0]):
            return False
        schema = onnx.defs.get_schema(op, b)
        return not any(schema.attributes[name].required for name in set(new[0]) - set(old[0]))
    except onnx.defs.SchemaError:
        return False


def _converter_versions() -> dict[str, list[int]]:
    from .converters import convert_map

    return {op: sorted(int(d[len("_impl_v"):]) for d in dir(cls) if d.startswith("_impl_v"))
            for op, cls in convert_map().items()}


def needed_opset(model: onnx.ModelProto) -> int:
    """The opset the frontend needs: the model's own unless it is below MIN_OPSET, or
    an op of the model has only converters for later versions whose signature
    (attributes, inputs) differs from the model's version of the op."""
    opset = onnx_fold.default_opset(model)
    target = max(opset, MIN_OPSET)
    versions = _converter_versions()
    for op in sorted({n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")}):
        impls = versions.get(op)
        if not impls or impls[0] <= opset:
            continue
        try:
            mine, theirs = onnx.defs.get_schema(op, opset), onnx.defs.get_schema(op, impls[0])
        except onnx.defs.SchemaError:
            continue
        if set(mine.attributes) - set(theirs.attributes) or mine.min_input < theirs.min_input:
            target = max(target, impls[0])
    return target


def legacy_prelu_slopes(model: onnx.ModelProto, notes: list[str]) -> bool:
    """Before opset 7 a 1-D `PRelu` slope was per channel (axis 1); from 7 on it
    broadcasts numpy-style (against the last axis), and the version converter
    keeps it as it is. A constant 1-D slope of such a model is reshaped to
    (C, 1, ..., 1) first, so the converted model computes what the old one meant."""
    from onnx import numpy_helper

    if onnx_fold.default_opset(model) >= 7:
        return False
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    types = None
    changed = False
    for node in graph.node:
        if node.op_type != "PRelu" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        slope = inits.get(node.input[1])
        if slope is None or len(slope.dims) != 1 or slope.dims[0] == 1:
            continue
        types = types if types is not None else onnx_fold.infer_types(model)
        x_type = types.get(node.input[0])
        if x_type is None or not x_type.tensor_type.HasField("shape"):
            continue
        rank = len(x_type.tensor_type.shape.dim)
        if rank < 3:
            continue  # (N, C): the last axis is the channel axis already
        values = numpy_helper.to_array(slope).reshape([-1] + [1] * (rank - 2))
        per_channel = numpy_helper.from_array(values, f"{slope.name}__per_channel")
        graph.initializer.append(per_channel)
        inits[per_channel.name] = per_channel
        node.input[1] = per_channel.name
        changed = True
    if changed:
        notes.append("PRelu slopes of opset < 7 reshaped to their channel axis")
    return changed


def convert_opset(model: onnx.ModelProto, notes: list[str]) -> bool:
    """onnx.version_converter where the frontend needs another default-domain opset."""
    from onnx import version_converter

    opset, newest = onnx_fold.default_opset(model), onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ModelError(f"opset {opset} is newer than the newest this build knows ({newest})")
    target = needed_opset(model)
    if target == opset:
        return False
    try:
        converted = version_converter.convert_version(model, target)
    except Exception as exc:  # noqa: BLE001 - a missing adapter, mostly
        raise ModelError(f"cannot convert opset {opset} -> {target}: {_first_line(exc)}") from None
    model.CopyFrom(converted)
    notes.append(f"converted opset {opset} -> {target}")
    return True


def _function_body(node: onnx.NodeProto, opset: int, types) -> onnx.FunctionProto | None:
    """The ONNX function defining `node` at `opset`, if its schema has one."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset)
    except onnx.defs.SchemaError:
        return None
    plain = [v for v in schema.function_opset_versions if v <= opset]
    context = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
    if plain:
        body = schema.get_function_with_opset_version(max(plain))
    elif context:
        input_types = [types.get(name, onnx.TypeProto()).SerializeToString() for name in node.input]
        body = schema.get_context_dependent_function_with_opset_version(
            max(context), node.SerializeToString(), input_types)
    else:
        return None
    function = onnx.FunctionProto()
    function.ParseFromString(body)
    return function if function.node else None


# Expansion rounds at most: a body may use ops that need expanding too
# (SoftmaxCrossEntropyLoss -> NegativeLogLikelihoodLoss, SwiGLU -> Swish).
_EXPAND_ROUNDS = 4


def _extra_outputs_used(node: onnx.NodeProto, used: set[str]) -> bool:
    return any(name and name in used for name in node.output[1:])


# Ops that have a TVM converter which cannot convert some of their nodes: those
# nodes are expanded like ops without a converter. `Attention`: TVM's converter is
# com.microsoft's Attention (packed QKV weights, num_heads), not ONNX's;
# `LayerNormalization`: its converter returns placeholders for Mean and InvStdDev.
# The predicates see the node and the names the graph reads.
_CONVERTER_GAPS = {
    "Attention": lambda node, used: True,
    "LayerNormalization": _extra_outputs_used,
    # Its converter fails when the normalised axes are all of the input's.
    "RMSNormalization": lambda node, used: any(a.name == "axis" and a.i == 0 for a in node.attribute),
}


def _needs_expansion(node: onnx.NodeProto, versions, used: set[str]) -> bool:
    if node.domain not in ("", "ai.onnx") or node.op_type == "If":
        return False
    if node.op_type not in versions:
        return True
    gap = _CONVERTER_GAPS.get(node.op_type)
    return gap is not None and gap(node, used)


def expand_functions(model: onnx.ModelProto, notes: list[str]) -> bool:
    """Ops without a (suitable) TVM converter but with an ONNX function body ->
    that body (as a local function per node, inlined by onnx's inliner); repeated
    while the bodies bring in more such ops."""
    versions = _converter_versions()
    expanded: set[str] = set()
    for round_ in range(_EXPAND_ROUNDS):
        used = onnx_fold.used_names(model.graph) | {o.name for o in model.graph.output}
        missing = [n for n in model.graph.node if _needs_expansion(n, versions, used)]
        if not missing or not _expand_round(model, missing, round_, expanded):
            break
    if not expanded:
        return False
    notes.append(f"expanded {', '.join(sorted(expanded))} through the ONNX function definition")
    return True


def _add_default_attributes(node: onnx.NodeProto, opset: int) -> None:
    """The schema's defaults for attributes `node` leaves out: a function body reads
    them by reference (`@alpha`), and the inliner drops what the node does not set."""
    schema = onnx.defs.get_schema(node.op_type, opset)
    present = {a.name for a in node.attribute}
    for name, attribute in schema.attributes.items():
        if name not in present and attribute.default_value.type != onnx.AttributeProto.UNDEFINED:
            node.attribute.append(attribute.default_value)


def _expand_round(model: onnx.ModelProto, missing: list[onnx.NodeProto], round_: int,
                  expanded: set[str]) -> bool:
    opset, types = onnx_fold.default_opset(model), onnx_fold.infer_types(model)
    done = False
    for index, node in enumerate(missing):
        function = _function_body(node, opset, types)
        if function is None or not retarget(function, opset):
            continue
        _add_default_attributes(node, opset)
        expanded.add(node.op_type)
        done = True
        suffix = f"{index}" if round_ == 0 else f"{round_}_{index}"
        function.domain, function.name = _EXPAND_DOMAIN, f"{node.op_type}_{suffix}"
        model.functions.append(function)
        node.domain, node.op_type = _EXPAND_DOMAIN, function.name
    if not done:
        return False
    model.opset_import.append(helper.make_opsetid(_EXPAND_DOMAIN, 1))
    inline(model)
    kept = [o for o in model.opset_import if o.domain != _EXPAND_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
