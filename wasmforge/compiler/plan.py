"""Derive the execution plan (docs/plan-format.md) from the lowered Relax `main`.

After TVM's default pipeline, `main` is a straight line of VM builtins:
`vm.alloc_storage`, `vm.alloc_tensor(storage, offset, shape, dtype)`, calls of
kernels (PrimFuncs, destination-passing style: outputs are arguments),
`vm.builtin.reshape` (a view), `vm.kill_object` and input checks. Memory
planning has already decided which tensors share storage, so the plan simply
records it. Anything else is refused with a clear message rather than guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

PLAN_FORMAT = 1
PARAM_ALIGN = 64

# Bindings that matter to the VM only: input checks (shapes are static and the
# Rust runtime checks inputs itself) and lifetime hints (storage is static).
IGNORED_BUILTINS = {
    "vm.builtin.check_tensor_info",
    "vm.builtin.match_shape",
    "vm.builtin.check_shape_info",
    "vm.builtin.check_tuple_info",
}
IGNORED_OPS = {"relax.null_value", "relax.vm.kill_object"}


class PlanError(Exception):
    pass


def _type_name(obj) -> str:
    return type(obj).__name__


def _ints(shape_expr) -> list[int]:
    return [int(v) for v in shape_expr.values]


def _int(value) -> int:
    return int(value.value) if hasattr(value, "value") else int(value)


class PlanBuilder:
    def __init__(self, name: str):
        self.name = name
        self.storages: list[dict] = []
        self.tensors: list[dict] = []
        self.calls: list[dict] = []
        self.params = bytearray()
        self.bound: dict[object, object] = {}  # relax Var -> storage/tensor id(s)
        self.constants: list[tuple[object, int]] = []

    # -- values -----------------------------------------------------------
    def lookup(self, var):
        try:
            return self.bound[var]
        except KeyError:
            raise PlanError(f"unbound variable {var.name} in lowered main") from None

    def add_tensor(self, entry: dict) -> int:
        self.tensors.append(entry)
        return len(self.tensors) - 1

    def constant(self, const) -> int:
        for seen, tid in self.constants:
            if seen.same_as(const):
                return tid
        # Not np.ascontiguousarray: it turns a 0-d (scalar) constant into shape [1],
        # and kernels check ndim.
        array = np.asarray(const.value.numpy(), order="C")
        offset = -len(self.params) % PARAM_ALIGN + len(self.params)
        self.params.extend(b"\0" * (offset - len(self.params)))
        self.params.extend(array.astype(array.dtype.newbyteorder("<")).tobytes())
        tid = self.add_tensor(
            {"kind": "param", "offset": offset, "dtype": _dtype(array.dtype),
             "shape": list(array.shape)}
        )
        self.constants.append((const, tid))
        return tid

    def tensor_arg(self, arg) -> int:
        kind = _type_name(arg)
        if kind in ("Var", "DataflowVar"):
            tid = self.lookup(arg)
            if not isinstance(tid, int) or tid >= len(self.tensors) or tid < 0:
                raise PlanError(f"{arg.name} is not a tensor")
            return tid
        if kind == "GenericConst":
            return self.constant(arg)
        raise PlanError(f"unsupported kernel argument {kind}: {str(arg)[:80]}")

    # -- bindings ---------------------------------------------------------
    def bind(self, var, value) -> None:
        kind = _type_name(value)
        if kind in ("Var", "DataflowVar"):
            self.bound[var] = self.lookup(value)
        elif kind == "Tuple":
            self.bound[var] = tuple(self.tensor_arg(f) for f in value.fields)
        elif kind == "TupleGetItem":
            self.bound[var] = self.lookup(value.tuple_value)[value.index]
        elif kind == "Call":
            self.call(var, value)
        else:
            raise PlanError(f"unsupported binding {kind} for {var.name} in lowered main")

    def call(self, var, call) -> None:
        op_kind = _type_name(call.op)
        if op_kind == "GlobalVar":
            args = [self.tensor_arg(a) for a in call.args]
            self.calls.append({"kernel": call.op.name_hint, "args": args})
            return
        if op_kind == "Op":
            op = call.op.name
            if op in IGNORED_OPS:
                return
            if op == "relax.vm.alloc_storage":
                self.storages.append({"size": _ints(call.args[0])[0]})
                self.bound[var] = ("storage", len(self.storages) - 1)
                return
            if op == "relax.vm.alloc_tensor":
                storage = self.lookup(call.args[0])
                if not (isinstance(storage, tuple) and storage[0] == "storage"):
                    raise PlanError(f"alloc_tensor on a non-storage value for {var.name}")
                self.bound[var] = self.add_tensor(
                    {"kind": "storage", "storage": storage[1], "offset": _int(call.args[1]),
                     "shape": _ints(call.args[2]), "dtype": str(call.args[3].value)}
                )
                return
            raise PlanError(f"unsupported operator {op} in lowered main")
        if op_kind == "ExternFunc":
            name = call.op.global_symbol
            if name in IGNORED_BUILTINS:
                return
            if name == "vm.builtin.reshape":
                source = self.tensor_arg(call.args[0])
                dtype = self.tensors[source]["dtype"]
                self.bound[var] = self.add_tensor(
                    {"kind": "view", "of": source, "shape": _ints(call.args[1]), "dtype": dtype}
                )
                return
            raise PlanError(f"unsupported VM builtin {name} in lowered main")
        raise PlanError(f"unsupported call of {op_kind} in lowered main")


def _dtype(dtype: np.dtype) -> str:
    return "bool" if dtype == np.bool_ else np.dtype(dtype).name


def derive_plan(main, name: str, input_names: list[str], output_names: list[str]):
    """Return (plan dict, params bytes) for the lowered Relax function `main`."""
    builder = PlanBuilder(name)
    if len(main.params) != len(input_names):
        raise PlanError(f"main takes {len(main.params)} inputs, the model declares {len(input_names)}")
    inputs = []
    for index, (param, input_name) in enumerate(zip(main.params, input_names)):
        ty = param.ty
        tid = builder.add_tensor(
            {"kind": "input", "index": index, "shape": [int(d) for d in ty.shape.values],
             "dtype": str(ty.dtype)}
        )
        builder.bound[param] = tid
        inputs.append({"name": input_name, "tensor": tid})

    body = main.body
    for block in body.blocks:
        for binding in block.bindings:
            if _type_name(binding) != "VarBinding":
                raise PlanError(f"unsupported binding {_type_name(binding)} in lowered main")
            builder.bind(binding.var, binding.value)

    result = body.body
    if _type_name(result) == "Tuple":
        out_ids = [builder.tensor_arg(f) for f in result.fields]
    else:
        value = builder.lookup(result) if _type_name(result) in ("Var", "DataflowVar") else None
        out_ids = list(value) if isinstance(value, tuple) else [builder.tensor_arg(result)]
    if len(out_ids) != len(output_names):
        raise PlanError(f"main returns {len(out_ids)} tensors, the model declares {len(output_names)}")

    plan = {
        "format": PLAN_FORMAT,
        "model": name,
        "params_size": len(builder.params),
        "storages": builder.storages,
        "tensors": builder.tensors,
        "calls": builder.calls,
        "inputs": inputs,
        "outputs": [{"name": n, "tensor": t} for n, t in zip(output_names, out_ids)],
    }
    return plan, bytes(builder.params)


# Operator kinds by kernel name, first match wins: the compute-heavy anchor of a
# fused kernel (conv, matmul, pool, ...) wins over the element-wise ops fused into it.
_OP_PATTERNS = [
    (r"conv\dd_transpose|conv_transpose", "conv_transpose"),
    (r"depthwise", "depthwise_conv2d"),
    (r"conv(\d)d", "conv{0}d"),
    (r"batch_matmul|matmul", "matmul"),
    (r"dense", "dense"),
    (r"pool", "pool"),
    (r"softmax", "softmax"),
    (r"layer_norm", "layer_norm"),
    (r"group_norm|rms_norm|instance_norm|batch_norm", "norm"),
    (r"layout_transform", "layout_transform"),
    (r"transpose|permute_dims", "transpose"),
    (r"concatenate|concat", "concat"),
    (r"(?:^|_)(?:mean|sum|prod|argmax|argmin|variance)(?:_|$)", "reduce"),
    (r"resize|upsampl", "resize"),
    (r"take|gather", "gather"),
    (r"strided_slice|dynamic_slice", "slice"),
]


def op_kind(kernel: str) -> str:
    """The kind of operator a kernel computes, from its name (TVM names fused kernels
    after their operators, numbered: `fused_conv2d_nchwc3_add2_relu1`, `max_pool2d1`,
    `te_layout_transform`): `conv2d`, `matmul`, `pool`, `softmax`, `layout_transform`,
    ... (see _OP_PATTERNS), else the name's first operator (`add`, `relu`, ...)."""
    name = re.sub(r"^(?:fused_|te_)+", "", kernel)
    name = re.sub(r"(?<=[a-z])\d+(?=_|$)", "", name)  # the numbering, not conv2d's 2
    for pattern, kind in _OP_PATTERNS:
        found = re.search(pattern, name)
        if found:
            return kind.format(*found.groups())
    return name.split("_")[0] or "other"


def annotate_calls(plan: dict, flops: Mapping[str, int | None]) -> None:
    """Give every call of `plan` its `op` (op_kind) and, when `flops` knows its kernel,
    `flops`: the floating-point operations of one call (docs/plan-format.md)."""
    for call in plan["calls"]:
        call["op"] = op_kind(call["kernel"])
        count = flops.get(call["kernel"])
        if count is not None:
            call["flops"] = int(count)
