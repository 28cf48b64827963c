"""`Scan` unrolled into plain ONNX ops once its sequence length is static.

Each iteration is a renamed copy of the body: the scan inputs' slices for that
step (`Gather` on the scan axis, from the end for reverse directions) and the
states carried from the step before take the body inputs' places; the scan
outputs' per-step values are stacked (`Unsqueeze` + `Concat` on the output axis,
in reverse order for reverse output directions). Scan of opset 9 and later (the
batched opset-8 form is refused by the frontend check as before).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import onnx_fold
from .frontend import ModelError

# Body nodes copied in all (iterations x body nodes) per Scan node at most.
MAX_UNROLLED_NODES = 50_000


def unroll(model: onnx.ModelProto, notes: list[str]) -> bool:
    graph = model.graph
    opset = onnx_fold.default_opset(model)
    targets = [n for n in graph.node if n.op_type == "Scan" and n.domain in ("", "ai.onnx")]
    if not targets or opset < 9:
        return False
    types = onnx_fold.infer_types(model)
    steps = []

    def unrolled(node):
        if node not in targets or (done := _unroll_one(node, graph, types, opset)) is None:
            return None
        steps.append(done[1])
        return done[0]

    if not onnx_fold.replace_nodes(graph, unrolled):
        return False
    notes.append(f"unrolled {len(steps)} Scan over {', '.join(map(str, steps))} static step(s)")
    return True


def _ints(attrs: dict, name: str, count: int) -> list[int]:
    values = list(attrs.get(name, []))
    return values + [0] * (count - len(values))


def _unroll_one(node: onnx.NodeProto, graph: onnx.GraphProto, types, opset: int):
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    body: onnx.GraphProto = attrs["body"]
    scans = int(attrs["num_scan_inputs"])
    states = len(node.input) - scans
    outs = len(body.output) - states
    in_axes, in_dirs = _ints(attrs, "scan_input_axes", scans), _ints(attrs, "scan_input_directions", scans)
    out_axes, out_dirs = _ints(attrs, "scan_output_axes", outs), _ints(attrs, "scan_output_directions", outs)
    label = f"Scan node '{node.name or node.output[0]}'"
    lengths = set()
    ranks = []
    for name, axis in zip(node.input[states:], in_axes):
        shape = onnx_fold.static_shape(types.get(name))
        if shape is None:
            return None  # left for check_control_flow's error
        axis = axis % len(shape)
        lengths.add(shape[axis])
        ranks.append((len(shape), axis))
    if len(lengths) != 1:
        raise ModelError(f"{label}: its scan inputs differ in length {sorted(lengths)}")
    steps = lengths.pop()
    if steps * max(1, len(body.node)) > MAX_UNROLLED_NODES:
        raise ModelError(f"{label}: {steps} steps of a {len(body.node)}-node body is more than "
                         f"{MAX_UNROLLED_NODES} unrolled nodes")
    base = f"{node.name or node.output[0]}/wasmforge_scan"
    nodes: list[onnx.NodeProto] = []

    def const(value, name):
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    carried = list(node.input[:states])
    per_step: list[list[str]] = [[] for _ in range(outs)]
    for t in range(steps):
        prefix = f"{base}/{t}/"
        rename: dict[str, str] = {}
        for i, value in enumerate(body.input[:states]):
            rename[value.name] = carried[i]
        for j, value in enumerate(body.input[states:]):
            index = steps - 1 - t if in_dirs[j] else t
            sliced = f"{prefix}in{j}"
            nodes.append(helper.make_node(
                "Gather", [node.input[states + j], const(np.array(index, np.int64), f"{prefix}index{j}")],
                [sliced], name=sliced, axis=ranks[j][1]))
            rename[value.name] = sliced
        for init in body.initializer:
            copy = onnx.TensorProto()
            copy.CopyFrom(init)
            copy.name = rename.setdefault(init.name, prefix + init.name)
            graph.initializer.append(copy)
        for inner in body.node:
            for name in inner.output:
                if name:
                    rename[name] = prefix + name
        for inner in body.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(inner)
            copy.name = prefix + (inner.name or inner.output[0])
            onnx_fold._rename_inputs(copy, rename)
            copy.output[:] = [rename.get(o, o) if o else o for o in copy.output]
            nodes.append(copy)
        results = [rename.get(v.name, v.name) for v in body.output]
        carried = results[:states]
        for k in range(outs):
            per_step[k].append(results[states + k])
    for i in range(states):
        if i < len(node.output) and node.output[i]:
            nodes.append(helper.make_node("Identity", [carried[i]], [node.output[i]], name=f"{base}/state{i}"))
    for k in range(outs):
        out_name = node.output[states + k] if states + k < len(node.output) else ""
        if not out_name:
            continue
        elem_rank = len(onnx_fold.static_shape(types.get(out_name)) or []) - 1
        axis = out_axes[k] % (elem_rank + 1) if elem_rank >= 0 else out_axes[k]
        values = per_step[k][::-1] if out_dirs[k] else per_step[k]
        stacked = []
        for t, value in enumerate(values):
            name = f"{base}/out{k}/{t}"
            if opset >= 13:
                nodes.append(helper.make_node("Unsqueeze", [value, const(np.array([axis], np.int64), name + "/axes")],
                                              [name], name=name))
            else:
                nodes.append(helper.make_node("Unsqueeze", [value], [name], name=name, axes=[axis]))
            stacked.append(name)
        nodes.append(helper.make_node("Concat", stacked, [out_name], name=f"{base}/out{k}", axis=axis))
    return nodes, steps
