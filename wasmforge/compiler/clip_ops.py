"""Clip bounds as Relax operators, so blocked layouts flow through ReLU6.

TVM's ONNX frontend imports Clip(x, lo, hi) as two `call_tir`s of TE PrimFuncs
(topi.maximum, then topi.minimum). ConvertLayout cannot see into a call_tir,
so every Clip after a blocked conv pulled its input back to NCHW (MobileNetV2:
a layout_transform per activation), and FuseOps kept it out of the conv.
`as_relax_ops` turns each such call whose bound is a 0-d constant back into
`R.maximum` / `R.minimum`, which ConvertLayout handles (a scalar broadcasts in
any layout) and legalises to the same TE compute.

A call is rewritten only when its PrimFunc is structurally equal to the one
topi builds for the same shapes, so nothing else is ever touched.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax, te, topi, tirx

_OPS = {"maximum": (topi.maximum, relax.op.maximum), "minimum": (topi.minimum, relax.op.minimum)}


def _reference(kind: str, shape, dtype: str) -> tirx.PrimFunc:
    a = te.placeholder(shape, dtype, "A")
    b = te.placeholder((), dtype, "B")
    # As emit_te leaves it: private (no global symbol).
    return te.create_prim_func([a, b, _OPS[kind][0](a, b)]).without_attr("global_symbol")


def _as_op(mod: tvm.IRModule, call: relax.Call):
    """The Relax operator equivalent to `call`, or None."""
    if call.op != tvm.ir.Op.get("relax.call_tir") or not isinstance(call.args[0], tvm.ir.GlobalVar):
        return None
    args = call.args[1]
    if not isinstance(args, relax.Tuple) or len(args.fields) != 2:
        return None
    x, bound = args.fields
    if not isinstance(bound, tvm.ir.expr.GenericConst) or not isinstance(bound.ty, relax.TensorType) \
            or bound.ty.ndim != 0:
        return None
    ty = x.ty
    if not isinstance(ty, relax.TensorType) or not isinstance(ty.shape, relax.ShapeExpr):
        return None
    if str(ty.dtype) != str(bound.ty.dtype):
        return None
    func = mod[call.args[0]]
    for kind, (_, op) in _OPS.items():
        if tvm_ffi.structural_equal(func, _reference(kind, list(ty.shape.values), str(ty.dtype))):
            return op(x, bound)
    return None


def as_relax_ops(mod: tvm.IRModule) -> tvm.IRModule:
    """`mod` with every call_tir of a topi maximum/minimum against a scalar constant
    replaced by R.maximum / R.minimum (the unused PrimFuncs stay for DCE)."""

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            op = _as_op(mod, call)
            return call if op is None else op

    rewriter = Rewriter(mod)
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
    return rewriter.builder_.get()
