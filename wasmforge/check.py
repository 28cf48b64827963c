"""`invoke check`: what a build would make of an ONNX model, without compiling anything.

It answers, in seconds and on the host: which operators (and how many of each) the
model uses and whether the pinned TVM frontend converts them, its opset, which input
dimensions are dynamic and how they get fixed (`--input-shape`, or the registry's
shapes for `--model`), how many parameters it has and roughly how big the `.wasm`
will be. The verdicts come from the compiler's own frontend (`wasmforge.compiler.frontend`,
which the builder container runs; the host has the same TVM), so
`check` and `build` cannot disagree about what is supported.

`invoke check --list-ops --markdown` prints the frontend's operator table;
`docs/supported-ops.md` is that output.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .terminal import make_console


# Size model of a `.wasm`, a least-squares fit of the artifacts built so far (lenet-digits,
# resnet50-synth, mobilenetv2-synth, squeezenet-synth, bert-synth; code = .wasm size minus
# params_size in their manifests): the runtime (WASI command, npy, TVM backend symbols; the
# plan is compiled in as statics since the core/CLI split) is ~0.19 MB (~0.15 MB while the release profile used LTO), each compiled kernel
# adds ~9.5 KB of code, and the parameters are embedded byte for byte. The estimates were within 2% of those five .wasm files (lenet's,
# nearly all runtime, within 12%).
RUNTIME_BYTES = 190_000  # the runtime crate and std without LTO (lenet-digits: 291 KB in all)
KERNEL_BYTES = 9_500
# Operators that TVM never turns into a kernel of their own: views, folded constants,
# inference no-ops, and BatchNormalization (folded into the preceding conv). Only
# the remaining (operator, attributes, input shapes) signatures count as kernels.
_NO_KERNEL_OPS = frozenset({
    "BatchNormalization", "Constant", "Dropout", "Flatten", "Identity", "Reshape", "Shape",
    "Squeeze", "Unsqueeze",
})
# Element-wise operators that FuseOps folds into the kernel of their producer.
_FUSED_OPS = frozenset({
    "Abs", "Add", "Cast", "Ceil", "Clip", "Div", "Elu", "Equal", "Erf", "Exp", "Floor", "Greater",
    "HardSigmoid", "HardSwish", "LeakyRelu", "Less", "Log", "Max", "Min", "Mul", "Neg", "Not",
    "Pow", "PRelu", "Reciprocal", "Relu", "Sigmoid", "Sign", "Sqrt", "Sub", "Tanh", "Where",
})


# --- the compiler's frontend, the single source of truth ----------------------------


def convert_map() -> dict:
    """The pinned TVM ONNX frontend's operator -> converter table."""
    try:
        import tvm.relax.frontend.onnx.onnx_frontend  # noqa: F401 - the check below needs TVM

        from .compiler.converters import convert_map as compiler_map
    except ImportError:
        raise UserError("invoke check needs the pinned TVM on the host: "
                        "pip install --require-hashes -r requirements/host.txt", exit_code=1) from None
    return compiler_map()


def converter_versions(converter) -> list[int]:
    """The opsets from which `converter` has its own rule (its `_impl_v<N>` methods)."""
    return sorted(int(name[len("_impl_v"):]) for name in dir(converter) if name.startswith("_impl_v"))


# --- the report -----------------------------------------------------------------------


@dataclass
class OpUse:
    op: str  # "Conv", or "domain.Op" outside the default domain (as unsupported_ops names it)
    count: int
    supported: bool
    rule: str = ""  # the frontend's converter rule used at this model's opset, e.g. "v13"


@dataclass
class InputReport:
    name: str
    dtype: str
    declared: list  # ints and dimension names ("N", "?") as the file has them
    shape: list[int] | None  # static shape the build will use, None while a dim is dynamic
    fixed_by: str  # "" (static in the file), "--input-shape", "models.toml"


@dataclass
class Report:
    file: str
    opsets: dict[str, int]  # domain ("" = ai.onnx) -> version
    ops: list[OpUse]
    inputs: list[InputReport]
    outputs: list[tuple[str, str, list, list]]  # name, dtype, shape in the file, inferred shape
    param_count: int
    param_bytes: int
    kernel_estimate: int
    problems: list[str] = field(default_factory=list)
    transformed_bytes: int = 0  # what Winograd weight transforms add to the parameters

    @property
    def opset(self) -> int | None:
        return self.opsets.get("")

    @property
    def unsupported(self) -> list[str]:
        return [use.op for use in self.ops if not use.supported]

    @property
    def wasm_estimate(self) -> int:
        return self.param_bytes + self.transformed_bytes + RUNTIME_BYTES + KERNEL_BYTES * self.kernel_estimate

    @property
    def ok(self) -> bool:
        return not self.problems


def analyse(path: Path, input_shapes: tuple[str, ...] = (),
            registry_shapes: dict[str, list[int]] | None = None, label: str | None = None) -> Report:
    """Everything `check` reports about the ONNX file at `path`; raises UserError only
    for a file that is not a usable ONNX model or a malformed `--input-shape`."""
    from .compiler import frontend as lib

    convert = convert_map()
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    from .onnx_guard import inspect_onnx  # the build's own gate for broken or hostile files
    from .source import parse_input_shapes

    inspect_onnx(path)
    overrides = parse_input_shapes(input_shapes)
    try:
        model = lib.load_onnx(path)
    except lib.ModelError as exc:
        raise UserError(str(exc)) from None

    opsets = {entry.domain if entry.domain != "ai.onnx" else "": entry.version for entry in model.opset_import}
    problems: list[str] = []

    unsupported = lib.unsupported_ops(model)
    rewritten = _rewritten_by_prepare(model, path, unsupported, {**(registry_shapes or {}), **overrides})
    unsupported = [op for op in unsupported if op not in rewritten]
    counts = Counter(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
                     for node in model.graph.node)
    ops = []
    for op, count in sorted(counts.items()):
        rule = ""
        if op in rewritten:
            rule = "rewritten"  # unrolled (LSTM, GRU, RNN) or expanded through its ONNX function
        elif op not in unsupported:
            rule = convert[op].get_converter(opsets.get("", 1)).__name__.replace("_impl_", "")
        ops.append(OpUse(op, count, op not in unsupported, rule))
    if unsupported:
        problems.append("operators the TVM frontend does not support: " + ", ".join(unsupported))

    known_problems = len(problems)
    inputs = _inputs(model, overrides, registry_shapes or {}, problems)
    if len(problems) == known_problems:
        # The script's own verdict on the fixed shapes (it is what the build will call).
        try:
            lib.graph_inputs(model, {i.name: i.shape for i in inputs if i.fixed_by})
        except lib.ModelError as exc:
            problems.append(str(exc))

    param_count, param_bytes = _parameters(model)
    static = {i.name: i.shape for i in inputs if i.shape is not None}
    outputs, kernels, transformed = _shapes_and_kernels(model, static)
    return Report(label or path.name, opsets, ops, inputs, outputs, param_count, param_bytes, kernels,
                  problems, transformed)


def _rewritten_by_prepare(model, path: Path, unsupported: list[str], shapes: dict) -> set[str]:
    """The operators the TVM frontend lacks that the build's own preparation removes
    (RNNs unrolled, ops with an ONNX function body expanded): the build's verdict,
    not a second list. Needs the static shapes; without them nothing is claimed."""
    if not unsupported:
        return set()
    from .compiler.frontend import unsupported_ops
    from .compiler.prepare import prepare

    try:
        prepared = prepare(model, path.parent, shapes, {}, [])
    except Exception:  # noqa: BLE001 - dynamic dims, control flow, ...: no claim
        return set()
    return set(unsupported) - set(unsupported_ops(prepared))


def _dims(value) -> list:
    from .compiler.frontend import declared_dim

    return [declared_dim(d) for d in value.type.tensor_type.shape.dim]


def _inputs(model, overrides: dict[str, list[int]], registry: dict[str, list[int]],
            problems: list[str]) -> list[InputReport]:
    import numpy as np
    import onnx

    initializers = {init.name for init in model.graph.initializer}
    reports = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        declared = _dims(value)
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)).name
        dynamic = [d for d in declared if not isinstance(d, int)]
        if value.name in overrides:
            shape, fixed_by = overrides[value.name], "--input-shape"
            if len(shape) != len(declared):
                problems.append(f"--input-shape {value.name} has {len(shape)} dimensions, "
                                f"the model's input has {len(declared)}")
        elif dynamic and value.name in registry and len(registry[value.name]) == len(declared):
            shape, fixed_by = registry[value.name], "models.toml"
        elif dynamic:
            shape, fixed_by = None, ""
            problems.append(f"input '{value.name}' has dynamic dimensions {dynamic}; fix them with "
                            f"--input-shape {value.name}="
                            + "x".join(str(d) if isinstance(d, int) else "N" for d in declared))
        else:
            shape, fixed_by = declared, ""
        reports.append(InputReport(value.name, dtype, declared, shape, fixed_by))
    unknown = sorted(set(overrides) - {r.name for r in reports})
    if unknown:
        problems.append(f"--input-shape names no input of the model: {', '.join(unknown)} "
                        f"(inputs: {', '.join(r.name for r in reports)})")
    return reports


def _parameters(model) -> tuple[int, int]:
    """Elements and bytes of the initializers and Constant nodes (from dims: external data is not read)."""
    import numpy as np
    import onnx

    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            tensors += [a.t for a in node.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR]
    count = nbytes = 0
    for tensor in tensors:
        elements = int(np.prod(tensor.dims, dtype=np.int64))
        try:
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        except (KeyError, TypeError, ValueError):
            itemsize = 1
        count += elements
        nbytes += elements * itemsize
    return count, nbytes


def _shapes_and_kernels(model, static: dict[str, list[int]]) -> tuple[list[tuple[str, str, list, list]], int, int]:
    """Output shapes after fixing the inputs, an estimate of the number of kernels, and
    the bytes Winograd weight transforms add."""
    import numpy as np
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        if value.name in static:
            dims = value.type.tensor_type.shape.dim
            if len(dims) == len(static[value.name]):
                for dim, size in zip(dims, static[value.name]):
                    dim.Clear()
                    dim.dim_value = size
    # Best effort: without inferred shapes, the outputs show as declared and the
    # kernel estimate counts signatures without shapes; neither may fail the check.
    with contextlib.suppress(Exception):
        fixed = onnx.shape_inference.infer_shapes(fixed, strict_mode=False)
    infos = {v.name: v for v in (*fixed.graph.input, *fixed.graph.value_info, *fixed.graph.output)}
    for init in fixed.graph.initializer:
        infos.setdefault(init.name, onnx.helper.make_tensor_value_info(init.name, init.data_type, init.dims))

    outputs = []
    for declared, value in zip(model.graph.output, fixed.graph.output):
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)).name
        outputs.append((value.name, dtype, _dims(declared), _dims(value)))

    producers = {out: node for node in fixed.graph.node for out in node.output}
    signatures = set()
    for node in fixed.graph.node:
        if node.op_type in _FUSED_OPS and _follows_blocked_conv(node, producers, infos):
            # The blocked conv kernel fuses only bias, residual add, ReLU and Clip;
            # anything else after it is a kernel of its own.
            signatures.add((node.op_type, tuple(_dims(infos[node.input[0]])) if node.input[0] in infos else None))
        if node.op_type in _NO_KERNEL_OPS or node.op_type in _FUSED_OPS:
            continue
        shapes = tuple(tuple(_dims(infos[name])) if name in infos else None for name in node.input)
        signatures.add((node.domain, node.op_type, shapes,
                        tuple(onnx.helper.printable_attribute(a) for a in node.attribute)))
        if node.op_type == "Conv" and _is_grouped(node) and not _blocked_depthwise(node, infos):
            # Grouped convs other than depthwise ones over a multiple of 8 channels
            # stay in NCHW while the others are blocked (NCHW8c): one layout
            # transform in and one out per shape.
            out = node.output[0]
            signatures.add(("layout", shapes[0]))
            signatures.add(("layout", tuple(_dims(infos[out])) if out in infos else None))
    # Element-wise-only graphs still compile to at least one kernel.
    return outputs, max(len(signatures), 1), _winograd_growth(fixed, infos)


def _winograd_growth(model, infos: dict) -> int:
    """Bytes added by convs the compiler lowers as Winograd (compiler/winograd.py): their
    3x3 float32 weights are embedded transformed, (m+2)^2 instead of 9 per filter."""
    import onnx

    from .compiler.winograd import tile_size

    weights = {i.name: i for i in model.graph.initializer}
    extra = 0
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        weight = weights.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if (weight is None or weight.data_type != onnx.TensorProto.FLOAT or list(weight.dims[2:]) != [3, 3]
                or weight.dims[0] % 8 or weight.dims[1] % 8 or attrs.get("group", 1) != 1
                or list(attrs.get("strides", [1, 1])) != [1, 1] or list(attrs.get("dilations", [1, 1])) != [1, 1]):
            continue
        out = _dims(infos[node.output[0]]) if node.output[0] in infos else []
        if len(out) != 4 or not all(isinstance(d, int) and d > 0 for d in out[2:]):
            continue
        m = tile_size(out[2], out[3])
        if m:
            extra += weight.dims[0] * weight.dims[1] * 4 * ((m + 2) ** 2 - 9)
    return extra


def _is_grouped(node) -> bool:
    return any(a.name == "group" and a.i > 1 for a in node.attribute)


def _blocked_depthwise(node, infos: dict) -> bool:
    """A depthwise conv (groups == channels) that compiler/depthwise.py blocks: channels % 8 == 0."""
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    weight = _dims(infos[node.input[1]]) if len(node.input) > 1 and node.input[1] in infos else []
    return len(weight) == 4 and weight[0] == group and weight[1] == 1 and group % 8 == 0


def _follows_blocked_conv(node, producers: dict, infos: dict) -> bool:
    """An element-wise op other than Add/Relu/Clip right after a blocked Conv (and its BN)."""
    if node.op_type in ("Add", "Relu", "Clip") or not node.input:
        return False
    source = producers.get(node.input[0])
    if source is not None and source.op_type == "BatchNormalization":
        source = producers.get(source.input[0])
    return source is not None and source.op_type == "Conv" and (
        not _is_grouped(source) or _blocked_depthwise(source, infos))


def registry_input_shapes(name: str) -> dict[str, list[int]]:
    """The static input shapes models.toml records for `name` (what a build of it uses)."""
    from .registry import get_model

    return {t.name: list(t.shape) for t in get_model(name).inputs}


# --- the task -------------------------------------------------------------------------


def check(onnx: str | None = None, model: str | None = None, input_shapes: tuple[str, ...] = (),
          console=None) -> Report:
    """Print the report for a file or a registry model; raise UserError (exit 2) if it cannot be built."""
    if bool(model) == bool(onnx):
        raise UserError("give exactly one of --model NAME or --onnx PATH")
    registry_shapes = None
    if model:
        from .fetch import model_path
        from .registry import get_model

        path = model_path(get_model(model))
        registry_shapes = registry_input_shapes(model)
    else:
        path = Path(onnx)
    report = analyse(path, input_shapes, registry_shapes, label=model)
    render(report, console or make_console(stderr=False))
    if report.problems:
        raise UserError(f"{model or report.file} cannot be built: " + "; ".join(report.problems))
    return report


def _shape_text(dims) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]" if dims is not None else "-"


def _megabytes(nbytes: int) -> str:
    if nbytes < 1e6:
        return f"{nbytes / 1e3:.1f} KB" if nbytes >= 1e3 else f"{nbytes} B"
    return f"{nbytes / 1e6:.2f} MB"


def render(report: Report, console) -> None:
    from rich.table import Table

    domains = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in sorted(report.opsets.items()))
    console.print(f"[bold]{report.file}[/]: opset {domains}")

    ops = Table(title="operators", title_justify="left")
    ops.add_column("operator", overflow="fold")
    ops.add_column("count", justify="right")
    ops.add_column("TVM frontend")
    for use in report.ops:
        verdict = f"[green]supported[/] ({use.rule})" if use.supported else "[bold red]unsupported[/]"
        ops.add_row(use.op, str(use.count), verdict)
    ops.add_section()
    ops.add_row("total", str(sum(u.count for u in report.ops)),
                f"{len(report.unsupported)} unsupported" if report.unsupported else "all supported")
    console.print(ops)

    tensors = Table(title="inputs and outputs", title_justify="left")
    for column in ("", "name", "dtype", "in the file", "built as"):
        tensors.add_column(column, overflow="fold")
    for i in report.inputs:
        if i.shape is None:
            built = "[bold red]dynamic: needs --input-shape[/]"
        elif i.fixed_by:
            built = f"{_shape_text(i.shape)} [dim](from {i.fixed_by})[/]"
        else:
            built = _shape_text(i.shape)
        tensors.add_row("input", i.name, i.dtype, _shape_text(i.declared), built)
    for name, dtype, declared, inferred in report.outputs:
        tensors.add_row("output", name, dtype, _shape_text(declared), _shape_text(inferred))
    console.print(tensors)

    size = Table(title="size", title_justify="left", show_header=False)
    size.add_column("what")
    size.add_column("size", justify="right")
    size.add_column("how")
    size.add_row("parameters", f"{report.param_count:,}", _megabytes(report.param_bytes))
    size.add_row("kernels", f"~{report.kernel_estimate}", "estimated from operator signatures")
    if report.transformed_bytes:
        size.add_row("Winograd weights", f"+{_megabytes(report.transformed_bytes)}",
                     "3x3 convs embed transformed weights: 16 or 36 values per filter instead of 9")
    size.add_row(".wasm", f"~{_megabytes(report.wasm_estimate)}",
                 f"parameters (+ Winograd) + {_megabytes(RUNTIME_BYTES)} runtime + {KERNEL_BYTES / 1000:g} KB per kernel")
    console.print(size)
    if report.ok:
        console.print("[bold green]ok[/]: every operator is supported and every input shape is static")


# --- the supported-operator table --------------------------------------------------------


def supported_ops() -> list[tuple[str, list[int]]]:
    """(operator, opsets with their own converter rule) for every default-domain operator
    the frontend converts, sorted by name. Non-standard entries of the frontend's map
    (com.microsoft contrib ops) are left out: a build refuses nodes outside ai.onnx."""
    import onnx

    standard = {schema.name for schema in onnx.defs.get_all_schemas_with_history() if schema.domain == ""}
    return sorted((op, converter_versions(conv)) for op, conv in convert_map().items() if op in standard)


def unsupported_standard_ops() -> list[str]:
    import onnx

    standard = {schema.name for schema in onnx.defs.get_all_schemas_with_history() if schema.domain == ""}
    return sorted(standard - set(convert_map()))


def supported_ops_markdown() -> str:
    import onnx
    import tvm

    supported = supported_ops()
    lines = [
        "# Supported ONNX operators",
        "",
        "<!-- Generated by `invoke check --list-ops --markdown > docs/supported-ops.md`; do not edit. -->",
        "",
        (f"Generated by `invoke check --list-ops --markdown > docs/supported-ops.md` from the ONNX "
         f"frontend of the pinned TVM ({tvm.__version__}; onnx {onnx.__version__}): its converter "
         "map (`tvm.relax.frontend.onnx.onnx_frontend._get_convert_map`) plus the compiler's "
         "own converters (`wasmforge/compiler/converters.py`), the same table "
         "the compiler's frontend checks a model against before building. "
         "Regenerate it after changing the TVM pin."),
        "",
        ("*Converter rules* are the opsets from which the frontend has its own conversion rule; "
         "a model of opset N is converted with the newest rule at or below N (or the oldest "
         "one if N is below all of them). Only nodes of the default domain (`ai.onnx`) are "
         "converted: contrib operators (`com.microsoft`) are refused even where the frontend "
         "knows the name. Supported here means *importable*: a model can still fail later, "
         "e.g. on a dynamic shape the plan cannot express. `invoke check --onnx MODEL` "
         "checks one model."),
        "",
        f"## Supported ({len(supported)})",
        "",
        "| operator | converter rules (opset) |",
        "|---|---|",
    ]
    lines += [f"| {op} | {', '.join(map(str, versions))} |" for op, versions in supported]
    missing = unsupported_standard_ops()
    lines += [
        "",
        f"## Not supported ({len(missing)})",
        "",
        "Default-domain operators of onnx " + onnx.__version__ + " that the frontend has no converter for:",
        "",
        ", ".join(missing),
        "",
    ]
    return "\n".join(lines)


def list_ops(markdown: bool = False, console=None) -> None:
    from rich.table import Table

    if markdown:
        sys.stdout.write(supported_ops_markdown())
        return
    console = console or make_console(stderr=False)
    table = Table(title="ONNX operators the pinned TVM frontend converts", title_justify="left")
    table.add_column("operator")
    table.add_column("converter rules (opset)")
    for op, versions in supported_ops():
        table.add_row(op, ", ".join(map(str, versions)))
    console.print(table)
    console.print(f"not supported: {', '.join(unsupported_standard_ops())}")
