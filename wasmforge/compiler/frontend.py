"""ONNX -> Relax: load and vet the model, fix its input shapes, import it.

Shared by the build (graph_lib) and by tuning (tune), so both see the very same
Relax module: tuning records match the build's PrimFuncs only if the passes
before the optimiser are identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx


class ModelError(Exception):
    """The model cannot be built; the message is shown to the user as is."""


def load_onnx(path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelError(f"{path.name} is not a valid ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise ModelError(f"{path.name} is not a valid ONNX model (empty graph)")
    try:
        # By path when weights live in external files: the checker then looks
        # for them beside the model rather than in the working directory.
        onnx.checker.check_model(str(path) if _uses_external_data(model) else model)
    except onnx.checker.ValidationError as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise ModelError(f"{path.name} failed the ONNX checker: {first_line}") from None
    return model


def _uses_external_data(model: onnx.ModelProto) -> bool:
    from onnx.external_data_helper import uses_external_data

    return any(uses_external_data(t) for t in model.graph.initializer)


def unsupported_ops(model: onnx.ModelProto) -> list[str]:
    """Names of the model's operators the pinned TVM frontend cannot convert."""
    from .converters import convert_map

    known = convert_map()
    used = {node.op_type for node in model.graph.node if node.domain in ("", "ai.onnx")}
    foreign = {f"{n.domain}.{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")}
    return sorted({op for op in used if op not in known} | foreign)


def declared_dim(dim) -> int | str:
    """A declared dimension: its size, or a name/`?` when dynamic. `dim_param`,
    no value, and a negative `dim_value` (paddle2onnx writes -1) are all dynamic."""
    if dim.HasField("dim_value") and dim.dim_value >= 0:
        return dim.dim_value
    return dim.dim_param or "?"


def graph_inputs(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> list[dict]:
    """The real inputs (not initializers) with static shapes, in ONNX order."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dims = [declared_dim(dim) for dim in tensor_type.shape.dim]
        if value.name in shapes:
            dims = list(shapes[value.name])
        symbolic = [d for d in dims if not isinstance(d, int)]
        if symbolic:
            raise ModelError(
                f"input '{value.name}' has dynamic dimensions {symbolic}; "
                f"fix them with --input-shape {value.name}=" + "x".join(
                    str(d) if isinstance(d, int) else "N" for d in dims)
            )
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        inputs.append({"name": value.name, "shape": dims, "dtype": np.dtype(dtype).name})
    return inputs


def import_relax(model: onnx.ModelProto, inputs: list[dict]):
    """The Relax module of `model` after the inference passes (before any lowering)."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from .converters import installed

    with installed():
        mod = from_onnx(
            model,
            shape_dict={i["name"]: i["shape"] for i in inputs},
            dtype_dict={i["name"]: i["dtype"] for i in inputs},
        )
    inference_passes = tvm.transform.Sequential(
        [
            # Fold BN into the preceding conv's weights while both are still
            # constants; whatever BN remains becomes plain arithmetic that
            # FuseOps can merge into its producer.
            relax.transform.FoldBatchnormToConv2D(),
            relax.transform.DecomposeOpsForInference(),
            relax.transform.FoldConstant(),
            relax.transform.DeadCodeElimination(),
        ]
    )
    return inference_passes(mod)
