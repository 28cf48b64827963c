"""ONNX backend test cases: where they are, how to sample them, what they hold.

Suites (the onnx package's `onnx/backend/test/data/<suite>` layout: a case is a
directory with `model.onnx` and `test_data_set_*/{input,output}_*.pb`):

- `pytorch-converted`, `pytorch-operator`, `simple`: shipped in the pinned onnx
  wheel, used where they are;
- `node`: no longer shipped in the wheel; generated once into
  `.cache/conformance/data/node-<onnx version>/` from the pinned onnx's own
  generators (`onnx.backend.test.case.node.collect_testcases`, written by
  `onnx.backend.test.cmd_tools.generate_data`, the code behind
  `backend-test-tools generate-data`);
- `light`: `light_<model>.onnx` + `light_<model>_output_0.pb` in the wheel; the
  input is onnx's own dummy input for them (`Runner.generate_dummy_data(seed=0,
  random=False)`, as the onnx backend runner makes it), materialised into
  `.cache/conformance/data/light-<onnx version>/test_<model>/`.

`real` needs downloads and is not a suite here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..paths import CACHE

SUITES = ("node", "light", "pytorch-converted", "pytorch-operator", "simple")
DEFAULT_RTOL = 1e-3  # the onnx backend runner's defaults (loader/__init__.py)
DEFAULT_ATOL = 1e-7
CONFORMANCE_CACHE = CACHE / "conformance"

# ONNX element types the plan (and the Rust runtime) can carry; anything else
# (string, complex, bfloat16, float8, int4, ...) makes a case `unsupported`.
PLAN_DTYPES = {
    "FLOAT", "DOUBLE", "FLOAT16", "INT8", "INT16", "INT32", "INT64",
    "UINT8", "UINT16", "UINT32", "UINT64", "BOOL",
}
_EXPANDED = re.compile(r"_expanded(_ver\d+)?$")


@dataclass(frozen=True)
class Case:
    suite: str
    name: str
    directory: Path  # holds model.onnx and test_data_set_*/
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL

    @property
    def model(self) -> Path:
        return self.directory / "model.onnx"

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.name}"

    def data_sets(self) -> list[Path]:
        return sorted(self.directory.glob("test_data_set_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))

    def digest(self) -> str:
        """sha256 over the model, every data file and the tolerances: the cache key."""
        digest = hashlib.sha256()
        digest.update(f"{self.rtol!r} {self.atol!r}\n".encode())
        files = [self.model] + [f for d in self.data_sets() for f in sorted(d.glob("*.pb"))]
        for path in files:
            digest.update(path.relative_to(self.directory).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()


def onnx_data_dir() -> Path:
    import onnx.backend.test

    return Path(onnx.backend.test.__file__).resolve().parent / "data"


def onnx_version() -> str:
    import onnx

    return onnx.__version__


def discover(suite: str, cache: Path = CONFORMANCE_CACHE) -> list[Case]:
    """Every case of `suite`, sorted by name (node and light data made if missing)."""
    if suite == "node":
        root = ensure_node_data(cache)
        return sorted((Case("node", d.name, d) for d in root.iterdir() if (d / "model.onnx").is_file()),
                      key=lambda c: c.name)
    if suite == "light":
        return ensure_light_data(cache)
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r} (one of {', '.join(SUITES)})")
    from onnx.backend.test.loader import load_model_tests

    cases = [Case(suite, t.name, Path(t.model_dir), t.rtol, t.atol)
             for t in load_model_tests(kind=suite) if t.model_dir]
    return sorted(cases, key=lambda c: c.name)


@contextlib.contextmanager
def _fresh_dir(final: Path):
    """Yield a temporary directory beside `final`, renamed to `final` on success:
    an interrupted generation leaves nothing that looks complete."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        yield tmp
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_node_data(cache: Path = CONFORMANCE_CACHE) -> Path:
    """The node suite's data for the pinned onnx, generated once (~30 s)."""
    root = cache / "data" / f"node-{onnx_version()}"
    if root.is_dir():
        return root
    import warnings
    from unittest import mock

    import onnx.backend.test.case.model as model_cases
    import onnx.backend.test.case.node as node_cases
    from onnx.backend.test import cmd_tools

    with warnings.catch_warnings():  # the generators divide by zero on purpose
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases()
    with _fresh_dir(root) as tmp:
        # cmd_tools.generate_data writes every case of model.collect_testcases()
        # to <out>/<kind>/<name>/; pointed at the node cases, it writes the node
        # suite exactly as `backend-test-tools generate-data` did when it shipped.
        with mock.patch.object(model_cases, "collect_testcases", lambda: list(cases)):
            cmd_tools.generate_data(type("Args", (), {"output": str(tmp / "out")})())
        for case_dir in (tmp / "out" / "node").iterdir():
            os.replace(case_dir, tmp / case_dir.name)
        shutil.rmtree(tmp / "out")
    return root


def ensure_light_data(cache: Path = CONFORMANCE_CACHE) -> list[Case]:
    """The light models with onnx's dummy input and their shipped output."""
    import onnx
    from onnx import numpy_helper
    from onnx.backend.test.case.model import collect_testcases
    from onnx.backend.test.runner import Runner

    root = cache / "data" / f"light-{onnx_version()}"
    tolerances = {t.model_name: (t.rtol, t.atol) for t in collect_testcases() if t.kind == "real"}
    light = onnx_data_dir() / "light"
    if not root.is_dir():
        with _fresh_dir(root) as tmp:
            for path in sorted(light.glob("light_*.onnx")):
                model_name = path.stem[len("light_"):]
                case_dir = tmp / f"test_{model_name}"
                data_dir = case_dir / "test_data_set_0"
                data_dir.mkdir(parents=True)
                shutil.copyfile(path, case_dir / "model.onnx")
                model = onnx.load(str(path))
                initializers = {i.name for i in model.graph.initializer}
                inputs = [i for i in model.graph.input if i.name not in initializers]
                for index, value in enumerate(inputs):
                    array = Runner.generate_dummy_data(value, seed=0, name=model_name, random=False)
                    (data_dir / f"input_{index}.pb").write_bytes(
                        numpy_helper.from_array(array).SerializeToString())
                for index in range(len(model.graph.output)):
                    shipped = light / f"light_{model_name}_output_{index}.pb"
                    if shipped.is_file():
                        shutil.copyfile(shipped, data_dir / f"output_{index}.pb")
    cases = []
    for case_dir in sorted(root.iterdir()):
        rtol, atol = tolerances.get(case_dir.name[len("test_"):], (DEFAULT_RTOL, DEFAULT_ATOL))
        cases.append(Case("light", case_dir.name, case_dir, rtol, atol))
    return cases


def sample(cases: list[Case], limit: int | None, seed: int = 0) -> list[Case]:
    """A fixed, seeded sample of at most `limit` cases (all when `limit` is None):
    the `limit` cases whose sha256(seed:suite/name) is smallest, in name order.
    Deterministic, and stable when the suite grows: a new case only displaces
    an old one if it ranks before it."""
    if limit is None or limit >= len(cases):
        return list(cases)

    def rank(case: Case) -> str:
        return hashlib.sha256(f"{seed}:{case.key}".encode()).hexdigest()

    chosen = sorted(cases, key=rank)[:max(limit, 0)]
    return sorted(chosen, key=lambda c: c.name)


def select(cases: list[Case], patterns: list[str] | None) -> list[Case]:
    """The cases whose name matches one of the fnmatch `patterns` (all without any)."""
    import fnmatch

    if not patterns:
        return list(cases)
    return [c for c in cases if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]


# --- what a case holds --------------------------------------------------------------


@dataclass
class CaseData:
    """The model's real inputs and outputs, and the data sets as numpy arrays."""

    input_names: list[str]
    output_names: list[str]
    input_shapes: dict[str, list[int]]
    data_sets: list[tuple[list, list]] = field(default_factory=list)  # (inputs, outputs)
    ops: list[str] = field(default_factory=list)
    operator: str = ""
    unsupported: str | None = None  # what the pipeline cannot express, if anything
    frozen: list[str] = field(default_factory=list)  # attribute-like inputs baked in (see below)


class Unsupported(Exception):
    """The case needs something the pipeline cannot express; the message names it."""


def _graph_ops(graph, into: set[str]) -> None:
    for node in graph.node:
        domain = "" if node.domain in ("", "ai.onnx") else f"{node.domain}."
        into.add(domain + node.op_type)
        for attr in node.attribute:
            if attr.HasField("g"):
                _graph_ops(attr.g, into)
            for sub in attr.graphs:
                _graph_ops(sub, into)


def model_ops(model) -> list[str]:
    ops: set[str] = set()
    _graph_ops(model.graph, ops)
    return sorted(ops)


def operator_of(case: Case, model) -> str:
    """The operator a case tests: the node suite's single node (for `_expanded`
    cases, the op of the case they expand, from the name); else ''."""
    if case.suite != "node":
        return ""
    top = [n for n in model.graph.node]
    if not _EXPANDED.search(case.name) and len(top) == 1:
        node = top[0]
        return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
    base = _EXPANDED.sub("", case.name)
    sibling = case.directory.parent / base / "model.onnx"
    if base != case.name and sibling.is_file():
        import onnx

        nodes = onnx.load(str(sibling), load_external_data=False).graph.node
        if len(nodes) == 1:
            return nodes[0].op_type
    return "(graph)"


def _value_kind(value_type) -> str:
    kind = value_type.WhichOneof("value")
    return {"tensor_type": "tensor", "sequence_type": "sequence", "map_type": "map",
            "optional_type": "optional", "sparse_tensor_type": "sparse tensor"}.get(kind, kind or "untyped")


def _check_value(value, role: str) -> None:
    import onnx

    kind = _value_kind(value.type)
    if kind != "tensor":
        raise Unsupported(f"{kind} {role} '{value.name}'")
    elem = onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type)
    if elem not in PLAN_DTYPES:
        raise Unsupported(f"dtype {elem.lower()} ({role} '{value.name}')")


def load_case(case: Case) -> CaseData:
    """Read the model's interface and every data set; `unsupported` names what
    the pipeline cannot express (then the data sets may be missing)."""
    import onnx

    model = onnx.load(str(case.model), load_external_data=False)
    ops = model_ops(model)
    operator = operator_of(case, model)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    data = CaseData([v.name for v in inputs], [v.name for v in model.graph.output], {}, ops=ops,
                    operator=operator)
    try:
        _read_data(case, model, inputs, data)
    except Unsupported as exc:
        data.unsupported = str(exc)
        data.data_sets.clear()
    return data


def _read_data(case: Case, model, inputs, data: CaseData) -> None:
    import onnx
    from onnx import numpy_helper

    for value in inputs:
        _check_value(value, "input")
    for value in model.graph.output:
        _check_value(value, "output")
    sets = case.data_sets()
    if not sets:
        raise Unsupported("no test data set")
    for data_dir in sets:
        count_in = len(list(data_dir.glob("input_*.pb")))
        count_out = len(list(data_dir.glob("output_*.pb")))
        if count_in > len(inputs):
            raise Unsupported("test data override initializers")
        if count_in < len(inputs):
            raise Unsupported(f"test data give {count_in} of {len(inputs)} inputs")
        if count_out != len(model.graph.output):
            raise Unsupported(f"test data give {count_out} of {len(model.graph.output)} outputs")

        def read(path: Path):
            tensor = onnx.TensorProto()
            tensor.ParseFromString(path.read_bytes())
            return numpy_helper.to_array(tensor)

        arrays_in = [read(data_dir / f"input_{i}.pb") for i in range(count_in)]
        arrays_out = [read(data_dir / f"output_{i}.pb") for i in range(count_out)]
        data.data_sets.append((arrays_in, arrays_out))
    first = data.data_sets[0][0]
    for arrays, _ in data.data_sets[1:]:
        if [a.shape for a in arrays] != [a.shape for a in first]:
            raise Unsupported("data sets differ in input shapes (one static build per case)")
    data.input_shapes = {name: list(a.shape) for name, a in zip(data.input_names, first)}


# --- attribute-like inputs ----------------------------------------------------------

# Input slots (by their name in the operator's schema) that say *how* to compute
# rather than *what* to compute on: axes, shapes, sizes, ... Many node cases pass
# them as graph inputs; TVM's frontend needs most of them constant. Like the
# static shapes, their value is fixed by the test data, so the conformance run
# freezes them (as `invoke build --freeze` would) and says so per case.
ATTRIBUTE_SLOTS = {"axes", "axis", "shape", "sizes", "scales", "roi", "pads", "repeats", "k", "K", "split",
                   "starts", "ends", "steps", "depth", "output_shape", "blocksize", "size", "constant_value"}
# Of those, the ones whose value may be a float (a window's size is an integer).
FLOAT_SLOTS = {"scales", "roi", "constant_value"}
FREEZE_MAX_ELEMENTS = 64


def attribute_inputs(model, data: CaseData) -> list[str]:
    """The model's inputs that only feed attribute-like slots and hold the same
    small value in every data set (in input order)."""
    import numpy as np
    import onnx

    opsets = {o.domain or "": o.version for o in model.opset_import}
    slots: dict[str, set[str]] = {}
    for node in model.graph.node:
        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        try:
            schema = onnx.defs.get_schema(node.op_type, opsets.get(domain, 1), domain)
            formal = [i.name for i in schema.inputs]
        except Exception:  # noqa: BLE001 - unknown op: nothing is attribute-like
            formal = []
        for index, name in enumerate(node.input):
            slot = formal[min(index, len(formal) - 1)] if formal else "?"
            slots.setdefault(name, set()).add(slot)
    # Inputs read by a subgraph (If/Loop bodies) are not frozen.
    for node in model.graph.node:
        for attr in node.attribute:
            for graph in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                for inner in graph.node:
                    for name in inner.input:
                        slots.setdefault(name, set()).add("?")
    chosen = []
    for index, name in enumerate(data.input_names):
        used = slots.get(name)
        if not used or not used <= ATTRIBUTE_SLOTS:
            continue
        values = [arrays[index] for arrays, _ in data.data_sets]
        first = values[0]
        if first.size > FREEZE_MAX_ELEMENTS or first.dtype.kind not in "iuf":
            continue
        if first.dtype.kind == "f" and not used <= FLOAT_SLOTS:
            continue
        if all(v.shape == first.shape and np.array_equal(v, first) for v in values[1:]):
            chosen.append(name)
    return chosen


def freeze_inputs(case: Case, data: CaseData, names: list[str], out_dir: Path) -> Path:
    """Write `case`'s model with `names` turned into initializers holding the test
    data's value to `out_dir/model.onnx`; drop them from `data` (in place)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(case.model), load_external_data=False)
    positions = [data.input_names.index(n) for n in names]
    first = data.data_sets[0][0]
    for name, position in zip(names, positions):
        model.graph.initializer.append(numpy_helper.from_array(first[position], name))
    if model.ir_version >= 4:  # before IR 4 an initializer must also be listed as an input
        kept = [v for v in model.graph.input if v.name not in names]
        del model.graph.input[:]
        model.graph.input.extend(kept)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"
    path.write_bytes(model.SerializeToString())
    keep = [i for i in range(len(data.input_names)) if i not in positions]
    data.input_names = [data.input_names[i] for i in keep]
    data.data_sets = [([arrays[i] for i in keep], outputs) for arrays, outputs in data.data_sets]
    data.input_shapes = {n: shape for n, shape in data.input_shapes.items() if n not in names}
    data.frozen = list(names)
    return path
