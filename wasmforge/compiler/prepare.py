"""ONNX-level preparation of real-world exports before TVM's frontend sees them.

`prepare` works on a copy and runs, in order: external data loaded from beside
the model; local functions inlined; initializers listed as graph inputs made
plain constants; `--freeze` inputs baked in; `--input-shape` written into the
inputs; an opset conversion where the frontend's converters need one; ops TVM
lacks expanded through their ONNX function bodies; constant folding (shape
arithmetic, constant `If`/`Where`) until a fixpoint; dead code removed. Control
flow that is left is refused with a ModelError naming the node.

It returns the very same model object when none of this changed anything, so
models that already import cleanly compile to the same bytes as before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import onnx_fold
from .frontend import ModelError, graph_inputs

# Domain of the temporary local functions that expand ops TVM lacks.
_EXPAND_DOMAIN = "wasmforge.expand"
# The oldest default-domain opset accepted (older ones are converted to it).
MIN_OPSET = 7
# Opset 13 changed their axis semantics but not their signature.
_MEANING_CHANGED = {"Softmax", "LogSoftmax", "Hardmax"}


def prepare(model: onnx.ModelProto, base_dir: Path, shapes: dict[str, list[int]],
            frozen: dict[str, dict], warnings: list[str] | None = None) -> onnx.ModelProto:
    """The model ready for `frontend.import_relax`, or `model` itself when it needs nothing."""
    notes: list[str] = []
    work = onnx.ModelProto()
    work.CopyFrom(model)
    changed = _load_external_data(work, base_dir)
    changed |= _inline_local_functions(work, notes)
    changed |= _initializers_as_constants(work, notes)
    changed |= _freeze_inputs(work, frozen, notes)
    changed |= _fix_input_shapes(work, shapes)
    graph_inputs(work, shapes)  # dynamic dims left: the ModelError with its --input-shape hint
    changed |= _convert_opset(work, notes)
    changed |= _expand_functions(work, notes)
    folded, resolved = onnx_fold.fold(work)
    if folded:
        notes.append(f"folded {folded} constant nodes")
    notes += [f"resolved {r} at build time" for r in resolved[:3]]
    if len(resolved) > 3:
        notes.append(f"resolved {len(resolved) - 3} more If/Where nodes at build time")
    onnx_fold.check_control_flow(work.graph)
    if not (changed or folded or resolved):
        return model
    onnx_fold.remove_dead(work.graph)
    if warnings is not None:
        warnings.extend(notes)
    return work


def _load_external_data(model: onnx.ModelProto, base_dir: Path) -> bool:
    """Weights kept in files beside the .onnx (already vetted by the host) -> inline."""
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    if not any(uses_external_data(t) for t in model.graph.initializer):
        return False
    try:
        load_external_data_for_model(model, str(base_dir))
    except Exception as exc:  # noqa: BLE001 - missing/short files, bad locations
        raise ModelError(f"cannot load the model's external data: {_first_line(exc)}") from None
    return True


def _inline_local_functions(model: onnx.ModelProto, notes: list[str]) -> bool:
    """FunctionProtos in the model (TVM reads none of them) -> their nodes."""
    if not model.functions:
        return False
    count = len(model.functions)
    opset = onnx_fold.default_opset(model)
    for function in model.functions:
        _retarget(function, opset)
    _inline(model)
    left = sorted({f"{n.domain}.{n.op_type}" for n in model.graph.node
                   if any((f.domain, f.name) == (n.domain, n.op_type) for f in model.functions)})
    if left:
        raise ModelError(f"cannot inline the model's function {left[0]}: it uses another opset than the model")
    notes.append(f"inlined {count} local function{'s' * (count > 1)}")
    return True


def _inline(model: onnx.ModelProto) -> None:
    import onnx.inliner

    try:
        inlined = onnx.inliner.inline_local_functions(model)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"cannot inline the model's functions: {_first_line(exc)}") from None
    model.CopyFrom(inlined)


def _retarget(function: onnx.FunctionProto, opset: int) -> bool:
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
    """Whether `op` at opsets a and b takes the same inputs and attributes (types
    aside), except for the ops whose meaning changed without a new signature."""
    if op in _MEANING_CHANGED and min(a, b) < 13 <= max(a, b):
        return False
    try:
        return _signature(op, a) == _signature(op, b)
    except onnx.defs.SchemaError:
        return False


def _initializers_as_constants(model: onnx.ModelProto, notes: list[str]) -> bool:
    """Old IR (Caffe2 exports) lists every initializer as a graph input too: constants."""
    inits = {init.name for init in model.graph.initializer}
    kept = [value for value in model.graph.input if value.name not in inits]
    if len(kept) == len(model.graph.input):
        return False
    notes.append(f"treated {len(model.graph.input) - len(kept)} initializers listed as inputs as constants")
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model.ir_version = max(model.ir_version, 4)
    return True


def _freeze_inputs(model: onnx.ModelProto, frozen: dict[str, dict], notes: list[str]) -> bool:
    """`--freeze NAME=VALUE`: the input becomes an initializer of its own dtype."""
    from ..errors import UserError
    from ..freeze import frozen_array

    inputs = {value.name: value for value in model.graph.input}
    for name, entry in frozen.items():
        if name not in inputs:
            raise ModelError(f"--freeze {name}: the model has no input '{name}' "
                             f"(inputs: {', '.join(inputs) or 'none'})")
        tensor_type = inputs[name].type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        declared = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                    for d in tensor_type.shape.dim]
        try:
            value = np.asarray(frozen_array(entry, dtype, declared), dtype)
        except (UserError, ValueError, TypeError) as exc:
            raise ModelError(f"--freeze {name}: {_first_line(exc)}") from None
        if tensor_type.HasField("shape") and (value.ndim != len(declared) or any(d is not None and d != v for d, v in zip(declared, value.shape))):
            raise ModelError(f"--freeze {name}: value of shape {list(value.shape)} does not fit the "
                             f"input's shape {[d if d else '?' for d in declared]}")
        model.graph.input.remove(inputs[name])
        model.graph.initializer.append(numpy_helper.from_array(value, name))
        notes.append(f"froze input '{name}' to a constant")
    return bool(frozen)


def _fix_input_shapes(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> bool:
    """Write `--input-shape` overrides into the declared input shapes."""
    changed = False
    for value in model.graph.input:
        if value.name not in shapes:
            continue
        shape = value.type.tensor_type.shape
        current = [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]
        if current == list(shapes[value.name]):
            continue
        shape.ClearField("dim")
        for size in shapes[value.name]:
            shape.dim.add().dim_value = size
        changed = True
    if changed:
        del model.graph.value_info[:]  # stale: re-inferred with the static shapes
    return changed


def _converter_versions() -> dict[str, list[int]]:
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    return {op: sorted(int(d[len("_impl_v"):]) for d in dir(cls) if d.startswith("_impl_v"))
            for op, cls in _get_convert_map().items()}


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


def _convert_opset(model: onnx.ModelProto, notes: list[str]) -> bool:
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


def _expand_functions(model: onnx.ModelProto, notes: list[str]) -> bool:
    """Ops without a TVM converter but with an ONNX function body -> that body
    (as a local function per node, inlined by onnx's inliner)."""
    versions = _converter_versions()
    missing = [n for n in model.graph.node
               if n.domain in ("", "ai.onnx") and n.op_type not in versions and n.op_type != "If"]
    if not missing:
        return False
    opset, types = onnx_fold.default_opset(model), onnx_fold.infer_types(model)
    expanded = set()
    for index, node in enumerate(missing):
        function = _function_body(node, opset, types)
        if function is None or not _retarget(function, opset):
            continue
        expanded.add(node.op_type)
        function.domain, function.name = _EXPAND_DOMAIN, f"{node.op_type}_{index}"
        model.functions.append(function)
        node.domain, node.op_type = _EXPAND_DOMAIN, function.name
    if not expanded:
        return False
    model.opset_import.append(helper.make_opsetid(_EXPAND_DOMAIN, 1))
    _inline(model)
    kept = [o for o in model.opset_import if o.domain != _EXPAND_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    notes.append(f"expanded {', '.join(sorted(expanded))} through the ONNX function definition")
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
