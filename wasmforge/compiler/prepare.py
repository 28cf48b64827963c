"""ONNX-level preparation of real-world exports before TVM's frontend sees them.

`prepare` works on a copy and runs, in order: external data loaded from beside
the model; local functions inlined; initializers listed as graph inputs made
plain constants; `--freeze` inputs baked in; `--input-shape` written into the
inputs; an opset conversion where the frontend's converters need one; ops TVM
lacks (or converts only in part, see onnx_versions) expanded through their ONNX
function bodies; `Constant`'s short forms written as tensors; `QLinearMatMul`
rewritten (onnx_quant); constant folding (shape arithmetic, constant `If`/`Where`,
`EyeLike` of a static shape) until a fixpoint; nodes TVM converts only in some
forms rewritten into those (onnx_gaps; then folded again); `LSTM`/`GRU`/`RNN` the
frontend lacks, and `Scan`, unrolled over their now static sequence length (then
folded again);
dead code removed. Control
flow that is left is refused with a ModelError naming the node.

It returns the very same model object when none of this changed anything, so
models that already import cleanly compile to the same bytes as before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import onnx_fold, onnx_gaps, onnx_quant, onnx_rnn, onnx_scan, onnx_versions
from .frontend import ModelError, graph_inputs

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
    changed |= onnx_versions.legacy_prelu_slopes(work, notes)
    changed |= onnx_versions.convert_opset(work, notes)
    changed |= onnx_versions.expand_functions(work, notes)
    changed |= _constant_values(work.graph)
    if any(n.op_type in onnx_quant.OPS for n in work.graph.node):
        changed |= onnx_quant.rewrite(work.graph, onnx_fold.infer_types(work), notes)
    changed |= _inference_rewrites(work.graph, notes)
    folded, resolved = onnx_fold.fold(work)
    if onnx_gaps.rewrite(work, notes):  # after folding: sizes, scales and shapes are constant
        changed = True
        more, also = onnx_fold.fold(work)
        folded, resolved = folded + more, resolved + also
    unrolled = onnx_rnn.unroll(work, notes)  # after folding: sequence lengths and weights are constant
    unrolled |= onnx_scan.unroll(work, notes)
    if unrolled:
        changed = True
        more, also = onnx_fold.fold(work)
        folded, resolved = folded + more, resolved + also
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
        onnx_versions.retarget(function, opset)
    onnx_versions.inline(model)
    left = sorted({f"{n.domain}.{n.op_type}" for n in model.graph.node
                   if any((f.domain, f.name) == (n.domain, n.op_type) for f in model.functions)})
    if left:
        raise ModelError(f"cannot inline the model's function {left[0]}: it uses another opset than the model")
    notes.append(f"inlined {count} local function{'s' * (count > 1)}")
    return True


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


# Constant's short forms (TVM's converter reads only `value`) -> their tensor.
_CONSTANT_FORMS = {"value_float": np.float32, "value_floats": np.float32,
                   "value_int": np.int64, "value_ints": np.int64}


def _constant_values(graph: onnx.GraphProto) -> bool:
    """`Constant` with value_float(s)/value_int(s), as ONNX function bodies write
    them, -> the same Constant with a `value` tensor."""
    changed = False
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.attribute) != 1:
            continue
        attr = node.attribute[0]
        if attr.name not in _CONSTANT_FORMS:
            continue
        value = np.array(helper.get_attribute_value(attr), _CONSTANT_FORMS[attr.name])
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(value)))
        changed = True
    return changed


def _inference_rewrites(graph: onnx.GraphProto, notes: list[str]) -> bool:
    """Ops whose Relax import defeats the blocked-layout optimiser, in equivalent forms:
    `Dropout` (inference: the identity; Relax makes it a tuple) -> Identity, and
    `Sum`/`Mean` (Relax: broadcast + stack + reduce) -> a chain of binary Adds."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}

    def replacement(node):
        # Not with a training_mode input: then Dropout really drops (and TVM
        # cannot either), which the build must not hide.
        if node.op_type == "Dropout" and node.domain in ("", "ai.onnx") and \
                not any(out in used for out in node.output[1:]) and \
                not (len(node.input) > 2 and node.input[2]):
            return [helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name)]
        if node.op_type in ("Sum", "Mean") and node.domain in ("", "ai.onnx") and len(node.input) >= 2:
            return _add_chain(node, graph)
        return None

    rewritten = {"Dropout": 0, "Sum": 0, "Mean": 0}
    for node in onnx_fold.replace_nodes(graph, replacement):
        rewritten[node.op_type] += 1
    if not any(rewritten.values()):
        return False
    done = ", ".join(f"{count} {op}" for op, count in rewritten.items() if count)
    notes.append(f"rewrote {done} for inference")
    return True


def _add_chain(node: onnx.NodeProto, graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Sum(a, b, c) -> Add(Add(a, b), c); Mean divides the sum by the input count."""
    base = node.name or node.output[0]
    total, chain = node.input[0], []
    last = len(node.input) - 1 if node.op_type == "Sum" else None
    for index, operand in enumerate(node.input[1:], 1):
        out = node.output[0] if index == last else f"{base}/wasmforge_add{index}"
        chain.append(helper.make_node("Add", [total, operand], [out], name=f"{base}/add{index}"))
        total = out
    if node.op_type == "Mean":
        scale = f"{base}/wasmforge_inverse_count"
        # The same float type as the inputs: the chain's elem type, float32 unless told.
        dtype = next((helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
                      for v in [*graph.input, *graph.value_info] if v.name == node.input[0]), np.float32)
        graph.initializer.append(numpy_helper.from_array(np.array(1.0 / len(node.input), dtype), scale))
        chain.append(helper.make_node("Mul", [total, scale], [node.output[0]], name=f"{base}/mean"))
    return chain


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
