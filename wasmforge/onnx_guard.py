"""The gate between a user's ONNX file and everything that reads it.

`inspect_onnx` reads the model file only (never its external data), checks the
things that can hurt the build or the host, then runs the ONNX checker. Any
problem is a one-line `UserError` (exit code 2) naming it. It runs before a
container starts and before onnxruntime or TVM opens the file, so a hostile
file is refused before anything follows its references.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path, PureWindowsPath
from typing import NoReturn

import onnx
from onnx import TensorProto

from .errors import UserError

# protobuf cannot parse a message of 2 GiB or more; bigger models keep their
# weights as external data.
MAX_MODEL_FILE = (2 << 30) - 1
# wasm32 addresses at most 4 GiB, so no tensor (and no set of weights) above
# that can ever run in a module.
MAX_TENSOR_BYTES = 4 << 30
# The newest default-domain opset the pinned onnx knows. TVM's frontend picks
# the newest converter at or below the model's opset (it implements up to 23),
# so a newer opset would be converted with rules written for older semantics;
# the onnx checker does not refuse an unknown future opset itself.
MAX_OPSET = onnx.defs.onnx_opset_version()

# Bits per element; other types (strings, ...) count as one byte.
_BITS = {
    TensorProto.FLOAT: 32, TensorProto.DOUBLE: 64, TensorProto.FLOAT16: 16,
    TensorProto.BFLOAT16: 16, TensorProto.INT8: 8, TensorProto.INT16: 16, TensorProto.INT32: 32,
    TensorProto.INT64: 64, TensorProto.UINT8: 8, TensorProto.UINT16: 16, TensorProto.UINT32: 32,
    TensorProto.UINT64: 64, TensorProto.BOOL: 8, TensorProto.COMPLEX64: 64,
    TensorProto.COMPLEX128: 128, TensorProto.INT4: 4, TensorProto.UINT4: 4,
}
# The repeated field that holds each type's values when raw_data is not used.
_VALUE_FIELD = {
    TensorProto.FLOAT: "float_data", TensorProto.DOUBLE: "double_data",
    TensorProto.INT64: "int64_data", TensorProto.UINT32: "uint64_data",
    TensorProto.UINT64: "uint64_data", **{t: "int32_data" for t in (
        TensorProto.INT32, TensorProto.INT16, TensorProto.INT8, TensorProto.UINT16,
        TensorProto.UINT8, TensorProto.BOOL, TensorProto.FLOAT16, TensorProto.BFLOAT16)},
}


def inspect_onnx(path: Path) -> onnx.ModelProto:
    """Load `path` (without external data) if it is a sane ONNX model, else raise UserError."""
    path = Path(path)
    try:
        status = path.stat()
    except OSError:
        _refuse(path, "cannot be read")
    if not stat.S_ISREG(status.st_mode):
        _refuse(path, "is not a regular file")
    size = status.st_size
    if size > MAX_MODEL_FILE:
        _refuse(path, f"is {size} bytes; protobuf files must stay below 2 GiB (keep weights as external data)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        _refuse(path, f"is not a valid ONNX model ({type(exc).__name__}: truncated or corrupt protobuf)")
    if not model.graph.node:
        _refuse(path, "is not a valid ONNX model (no graph nodes)")
    _check_versions(path, model)
    _check_tensors(path, model)
    _check_graph(path, model.graph)
    try:
        # By path, so that it looks for external data (already checked above:
        # it only stats the files) beside the model rather than in the cwd.
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # ValidationError, or the C++ checker's other errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _refuse(path, f"failed the ONNX checker: {first}")
    return model


def _refuse(path: Path, problem: str) -> NoReturn:
    # Names come from the file: never let one break the one-line contract.
    message = f"{path.name} {problem}"
    raise UserError("".join(c if c.isprintable() else "?" for c in message))


def _show(name: str) -> str:
    shown = repr(name)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _check_versions(path: Path, model: onnx.ModelProto) -> None:
    if model.ir_version > onnx.IR_VERSION:
        _refuse(path, f"has IR version {model.ir_version}; the pinned onnx reads up to {onnx.IR_VERSION}")
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > MAX_OPSET:
            _refuse(path, f"uses ONNX opset {opset.version}, newer than the newest this build knows ({MAX_OPSET})")


# --- tensors: sizes and external data -------------------------------------------------


def _subgraphs(nodes) -> Iterator[onnx.GraphProto]:
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield attr.g
            yield from attr.graphs


def _all_graphs(model: onnx.ModelProto) -> Iterator[onnx.GraphProto]:
    """The main graph and every subgraph (If, Loop, Scan bodies), also inside functions."""
    stack = [model.graph, *_subgraphs(n for f in model.functions for n in f.node)]
    while stack:
        graph = stack.pop()
        yield graph
        stack.extend(_subgraphs(graph.node))


def external_data_files(model: onnx.ModelProto) -> list[str]:
    """The external-data locations (relative to the model's directory) of a model
    that `inspect_onnx` accepted, sorted and without duplicates."""
    locations = set()
    for tensor in _all_tensors(model):
        if tensor.data_location == TensorProto.EXTERNAL:
            info = {entry.key: entry.value for entry in tensor.external_data}
            locations.add(info["location"])
    return sorted(locations)


def _all_tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    """Every TensorProto whose data the model carries: initializers and attributes."""
    nodes = [n for f in model.functions for n in f.node]
    for graph in _all_graphs(model):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)
        nodes.extend(graph.node)
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            sparse_tensors = [*([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []),
                              *attr.sparse_tensors]
            for sparse in sparse_tensors:
                yield from (sparse.values, sparse.indices)


def _nbytes(dims, data_type: int) -> int:
    """Bytes of a tensor, capped just above the limit: a hostile file may list
    millions of huge dimensions, whose exact product would take long to compute."""
    if 0 in dims:
        return 0
    count = 1
    for d in dims:
        count *= d
        if count > MAX_TENSOR_BYTES * 8:
            break
    return (count * _BITS.get(data_type, 8) + 7) // 8


def _check_tensors(path: Path, model: onnx.ModelProto) -> None:
    base = path.parent
    total = 0
    for tensor in _all_tensors(model):
        name = _show(tensor.name)
        if any(d < 0 for d in tensor.dims):
            _refuse(path, f"tensor {name} has a negative dimension {list(tensor.dims)}")
        nbytes = _nbytes(tensor.dims, tensor.data_type)
        if nbytes > MAX_TENSOR_BYTES:
            _refuse(path, f"tensor {name} needs {nbytes} bytes; wasm32 addresses at most 4 GiB")
        total += nbytes
        if tensor.data_location == TensorProto.EXTERNAL:
            _check_external(path, base, tensor, nbytes)
        else:
            _check_inline(path, tensor, nbytes)
    if total > MAX_TENSOR_BYTES:
        _refuse(path, f"holds {total} bytes of weights; wasm32 addresses at most 4 GiB")
    for graph in _all_graphs(model):
        for info in [*graph.input, *graph.output, *graph.value_info]:
            _check_declared(path, info)


def _check_inline(path: Path, tensor: TensorProto, nbytes: int) -> None:
    """The data present must match the shape, or readers index past its end."""
    if tensor.data_type not in _BITS or _BITS[tensor.data_type] < 8:
        return
    count = nbytes * 8 // _BITS[tensor.data_type]
    if tensor.HasField("raw_data"):
        have, unit = len(tensor.raw_data), "bytes"
        want = nbytes
    elif tensor.data_type in _VALUE_FIELD:
        have, unit = len(getattr(tensor, _VALUE_FIELD[tensor.data_type])), "values"
        want = count
    else:
        return
    if have != want:
        _refuse(path, f"tensor {_show(tensor.name)} holds {have} {unit} but its shape "
                      f"{list(tensor.dims)} needs {want}")


def _check_external(path: Path, base: Path, tensor: TensorProto, nbytes: int) -> None:
    name = _show(tensor.name)
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    if not location or "\0" in location:
        _refuse(path, f"tensor {name} has external data without a usable location")
    shown = _show(location)
    if location.startswith(("/", "\\")) or PureWindowsPath(location).drive or os.path.isabs(location):
        _refuse(path, f"tensor {name}: external data location {shown} is absolute")
    if ".." in re.split(r"[\\/]", location):
        _refuse(path, f"tensor {name}: external data location {shown} contains '..'")
    try:
        root = base.resolve()
        target = (base / location).resolve()
    except (OSError, RuntimeError):  # a symlink loop, a name too long
        _refuse(path, f"tensor {name}: external data location {shown} cannot be resolved")
    if not target.is_relative_to(root):
        _refuse(path, f"tensor {name}: external data location {shown} resolves outside {base.name or '.'}/")
    try:
        status = target.stat()
    except OSError:
        _refuse(path, f"tensor {name}: external data file {shown} is missing")
    if not stat.S_ISREG(status.st_mode):  # a FIFO or device would block or never end
        _refuse(path, f"tensor {name}: external data {shown} is not a regular file")
    try:
        offset = int(info.get("offset", "0"))
        length = int(info.get("length", str(nbytes)))
    except ValueError:
        _refuse(path, f"tensor {name}: external data offset or length is not an integer")
    if offset < 0 or length != nbytes:
        _refuse(path, f"tensor {name}: external data offset {offset}, length {length} do not fit "
                      f"its shape ({nbytes} bytes)")
    size = status.st_size
    if offset + length > size:
        _refuse(path, f"tensor {name}: external data file {shown} is too short "
                      f"({size} bytes, needs {offset + length})")


def _check_declared(path: Path, info: onnx.ValueInfoProto) -> None:
    if not info.type.HasField("tensor_type"):
        return
    tensor_type = info.type.tensor_type
    dims = [d.dim_value for d in tensor_type.shape.dim if d.HasField("dim_value")]
    # -1 is how some exporters (paddle2onnx) write a dynamic dimension, as
    # onnxruntime reads it too; anything below is nonsense.
    if any(d < -1 for d in dims):
        _refuse(path, f"{_show(info.name)} declares a negative dimension {dims}")
    nbytes = _nbytes([d for d in dims if d >= 0], tensor_type.elem_type)
    if nbytes > MAX_TENSOR_BYTES:
        _refuse(path, f"{_show(info.name)} declares {nbytes} bytes; wasm32 addresses at most 4 GiB")


# --- graph structure --------------------------------------------------------------------


def _node_label(index: int, node: onnx.NodeProto) -> str:
    return f"node {_show(node.name)} ({_show(node.op_type)})" if node.name else \
        f"node #{index} ({_show(node.op_type)})"


def _check_graph(path: Path, graph: onnx.GraphProto) -> None:
    """Every value defined once before use, outputs computed, and no cycle (Kahn's algorithm)."""
    given = {v.name for v in graph.input} | {t.name for t in graph.initializer} | \
        {s.values.name for s in graph.sparse_initializer}
    producer: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for out in node.output:
            if out and (out in producer or out in given):
                _refuse(path, f"{_node_label(index, node)} redefines {_show(out)}")
            if out:
                producer[out] = index
    users: dict[int, list[int]] = {i: [] for i in range(len(graph.node))}
    waiting = [0] * len(graph.node)
    for index, node in enumerate(graph.node):
        for name in node.input:
            if not name or name in given:  # "" is an omitted optional input
                continue
            if name not in producer:
                _refuse(path, f"{_node_label(index, node)} uses {_show(name)}, "
                              "which no node, input or initializer defines")
            users[producer[name]].append(index)
            waiting[index] += 1
    ready = [i for i, n in enumerate(waiting) if n == 0]
    done = 0
    while ready:
        index = ready.pop()
        done += 1
        for user in users[index]:
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
    if done < len(graph.node):
        # A node left waiting has a waiting producer; walking producers from
        # one must come back round, and the node met twice lies on a cycle.
        index, seen = waiting.index(max(waiting)), set()
        while index not in seen:
            seen.add(index)
            index = next(producer[n] for n in graph.node[index].input
                         if n in producer and waiting[producer[n]] > 0)
        _refuse(path, f"graph has a cycle through {_node_label(index, graph.node[index])}")
    if not graph.output:
        _refuse(path, "graph has no outputs")
    for out in graph.output:
        if out.name not in producer and out.name not in given:
            _refuse(path, f"graph output {_show(out.name)} is never computed")
