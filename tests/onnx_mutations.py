"""Ways to break a valid ONNX model, for the guard's property tests.

Each mutation takes the serialized model and a `random.Random` and returns new
bytes. They are plain functions so that both hypothesis (which picks the seed)
and the Docker sample (a fixed seed) can use them.
"""

from __future__ import annotations

import random

import onnx
from onnx import TensorProto

# Values a hostile file might put where a size goes.
NASTY_DIMS = [0, 1, 2, 3, 7, 64, 65, -1, -(2**63), 2**31 - 1, 2**31, 2**32, 2**40, 2**62, 2**63 - 1]
NASTY_LOCATIONS = ["/etc/passwd", "../outside.bin", "a/../../x.bin", "C:\\w.bin", "missing.bin",
                   "sub/../../../etc/shadow", "\\\\host\\share\\x", "weights.bin", ""]


def _parse(data: bytes) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.ParseFromString(data)
    return model


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    return bytes(buf)


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[:rng.randrange(len(data))]


def drop_node(data: bytes, rng: random.Random) -> bytes:
    model = _parse(data)
    if model.graph.node:
        del model.graph.node[rng.randrange(len(model.graph.node))]
    return model.SerializeToString()


def drop_initializer(data: bytes, rng: random.Random) -> bytes:
    model = _parse(data)
    if model.graph.initializer:
        del model.graph.initializer[rng.randrange(len(model.graph.initializer))]
    return model.SerializeToString()


def swap_nodes(data: bytes, rng: random.Random) -> bytes:
    """Out of order; with a renamed edge this also makes cycles."""
    model = _parse(data)
    nodes = list(model.graph.node)
    if len(nodes) > 1:
        i, j = rng.sample(range(len(nodes)), 2)
        nodes[i], nodes[j] = nodes[j], nodes[i]
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return model.SerializeToString()


def rename_edge(data: bytes, rng: random.Random) -> bytes:
    """Point a node input or output at another (often existing) name: dangling
    references, values defined twice, and cycles."""
    model = _parse(data)
    graph = model.graph
    names = sorted({n for node in graph.node for n in [*node.input, *node.output]}
                   | {i.name for i in graph.input} | {"", "ghost", "x\n\x00y"})
    node = rng.choice(graph.node) if graph.node else None
    if node is not None:
        edges = node.input if node.input and (not node.output or rng.random() < 0.5) else node.output
        if edges:
            edges[rng.randrange(len(edges))] = rng.choice(names)
    return model.SerializeToString()


def change_dims(data: bytes, rng: random.Random) -> bytes:
    model = _parse(data)
    graph = model.graph
    if rng.random() < 0.5 and graph.initializer:
        tensor = rng.choice(graph.initializer)
        if tensor.dims:
            tensor.dims[rng.randrange(len(tensor.dims))] = rng.choice(NASTY_DIMS)
        else:
            tensor.dims.append(rng.choice(NASTY_DIMS))
    else:
        info = rng.choice([*graph.input, *graph.output])
        dims = info.type.tensor_type.shape.dim
        if dims:
            dims[rng.randrange(len(dims))].dim_value = rng.choice(NASTY_DIMS)
    return model.SerializeToString()


def change_dtype(data: bytes, rng: random.Random) -> bytes:
    model = _parse(data)
    graph = model.graph
    dtype = rng.randrange(0, 26)
    if rng.random() < 0.5 and graph.initializer:
        rng.choice(graph.initializer).data_type = dtype
    else:
        rng.choice([*graph.input, *graph.output]).type.tensor_type.elem_type = dtype
    return model.SerializeToString()


def change_opset(data: bytes, rng: random.Random) -> bytes:
    model = _parse(data)
    if model.opset_import:
        model.opset_import[0].version = rng.choice([0, 1, 6, 7, 12, 13, 17, 21, 23, 28, 29, 99, 2**62])
    if rng.random() < 0.3:
        model.ir_version = rng.choice([0, 3, 8, 10, 11, 12, 13, 99])
    return model.SerializeToString()


def externalize(data: bytes, rng: random.Random) -> bytes:
    """Claim that an initializer's data lives in an external file, hostile or not."""
    model = _parse(data)
    if model.graph.initializer:
        tensor = rng.choice(model.graph.initializer)
        tensor.ClearField("raw_data")
        tensor.ClearField("float_data")
        tensor.data_location = TensorProto.EXTERNAL
        del tensor.external_data[:]
        for key, value in (("location", rng.choice(NASTY_LOCATIONS)),
                           ("offset", rng.choice(["0", "64", "-1", "x", str(2**40)])),
                           ("length", rng.choice(["16", "0", "4096", str(2**40)]))):
            if rng.random() < 0.8:
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
    return model.SerializeToString()


MUTATIONS = {f.__name__: f for f in (
    flip_bytes, truncate, drop_node, drop_initializer, swap_nodes, rename_edge, change_dims,
    change_dtype, change_opset, externalize)}


def mutate(data: bytes, names: list[str], seed: int) -> bytes:
    """Apply the named mutations in order; a structural one on bytes that no
    longer parse is skipped (the byte-level ones have done their damage)."""
    rng = random.Random(seed)
    for name in names:
        try:
            data = MUTATIONS[name](data, rng)
        except Exception:  # the bytes stopped being a ModelProto: keep them as they are
            continue
    return data
