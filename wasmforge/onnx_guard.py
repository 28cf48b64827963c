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
    prescan(path)
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


# --- the pre-scan: counting on the wire format ------------------------------------------
#
# Parsing a model builds every message in memory: a million-node file takes tens
# of seconds and more than a GiB, and subgraphs nested past protobuf's depth
# limit come out as a "corrupt" file. So before the parse, the guard walks the
# protobuf wire format itself, only far enough to count nodes, graph entries and
# nesting (field numbers from onnx.proto), and stops at the first bound passed.
# Malformed bytes end the walk silently: the parse that follows names them.

_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _GRAPH_ENTRIES = 1, frozenset({5, 11, 12, 13, 15})  # initializer, input, output, value_info, sparse
_FUNCTION_NODE = 7
_NODE_ATTRIBUTE = 5
_ATTRIBUTE_GRAPHS = frozenset({6, 11})  # g, graphs


class _Malformed(Exception):
    pass


class _Bound(Exception):
    pass


def _varint(data, pos: int) -> tuple[int, int]:
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    value, shift = byte & 0x7F, 7
    while True:
        pos += 1
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + 1
        shift += 7
        if shift > 63:
            raise _Malformed


def _fields(data, start: int, end: int, wanted):
    """(field number, start, end) of each length-delimited field in `wanted` of the
    message in data[start:end]; every other field is skipped."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise _Malformed
            if number in wanted:
                yield number, pos, pos + length
            pos += length
        elif wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 3:  # a (deprecated) group: skip to its end marker
            pos = _skip_group(data, pos, end, number)
        else:
            raise _Malformed
    if pos != end:
        raise _Malformed


def _skip_group(data, pos: int, end: int, number: int) -> int:
    depth = 1
    while pos < end:
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == 2:
            length, pos = _varint(data, pos)
            pos += length
        elif wire == 0:
            _, pos = _varint(data, pos)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 3:
            depth += 1
        elif wire == 4:
            depth -= 1
            if depth == 0:
                return pos
        else:
            raise _Malformed
    raise _Malformed


class _Scan:
    def __init__(self, path: Path, data, limits):
        self.path, self.data, self.limits = path, data, limits
        self.nodes = self.entries = 0

    def count_nodes(self, start: int, end: int, field: int) -> list[tuple[int, int]]:
        """The nodes of one graph or function, counted (cheaply: no node is opened) before any is read."""
        nodes = []
        for _, node_start, node_end in _fields(self.data, start, end, {field}):
            nodes.append((node_start, node_end))
            self.nodes += 1
            if self.nodes > self.limits.max_nodes:
                raise _Bound(f"has more than {self.limits.max_nodes} nodes, the guard's bound "
                             "(resources/limits.toml)")
        return nodes

    def graph(self, start: int, end: int, level: int) -> None:
        if level > self.limits.max_graph_depth:
            raise _Bound(f"nests subgraphs (If/Loop/Scan bodies) more than {self.limits.max_graph_depth} "
                         "levels deep, the guard's bound (resources/limits.toml)")
        nodes = self.count_nodes(start, end, _GRAPH_NODE)
        for _ in _fields(self.data, start, end, _GRAPH_ENTRIES):
            self.entries += 1
            if self.entries > self.limits.max_graph_entries:
                raise _Bound(f"has more than {self.limits.max_graph_entries} initializers, inputs, outputs "
                             "and value_info entries, the guard's bound (resources/limits.toml)")
        self.subgraphs(nodes, level)

    def subgraphs(self, nodes, level: int) -> None:
        data = self.data
        for node_start, node_end in nodes:
            for _, a_start, a_end in _fields(data, node_start, node_end, {_NODE_ATTRIBUTE}):
                # A quick look first: without the key byte of field g or graphs
                # anywhere in it, an attribute holds no graph.
                if data.find(b"\x32", a_start, a_end) < 0 and data.find(b"\x5a", a_start, a_end) < 0:
                    continue
                for _, g_start, g_end in _fields(data, a_start, a_end, _ATTRIBUTE_GRAPHS):
                    self.graph(g_start, g_end, level + 1)

    def model(self) -> None:
        data = self.data
        for number, start, end in _fields(data, 0, len(data), {_MODEL_GRAPH, _MODEL_FUNCTIONS}):
            if number == _MODEL_GRAPH:
                self.graph(start, end, 1)
            else:
                self.subgraphs(self.count_nodes(start, end, _FUNCTION_NODE), 1)


def prescan(path: Path, limits=None) -> None:
    """Refuse a model whose node count, subgraph nesting or number of graph entries
    passes the bounds of resources/limits.toml, without parsing it."""
    import mmap

    from .limits import guard_limits

    limits = limits or guard_limits()
    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                return
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                try:
                    _Scan(path, data, limits).model()
                except (_Malformed, IndexError, RecursionError):
                    return  # the parse names it
    except _Bound as bound:
        _refuse(path, str(bound))
    except OSError:
        _refuse(path, "cannot be read")


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
