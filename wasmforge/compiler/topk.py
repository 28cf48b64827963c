"""TopK as plain TE compute, so it needs no runtime library.

TVM lowers `relax.topk` on a CPU to `topi.topk`, an extern call of the runtime's
`tvm.contrib.sort` functions: the module would import TVM's FFI (only WASI is
allowed). `as_te` replaces each `relax.topk` with a compute by ranks before
that dispatch happens: an element's rank is how many elements of its row come
before it (larger, or equal at a lower index, for `largest`; the reverse for
the smallest), and output j of a row is the element of rank j. That is ONNX's
order (ties: the lower index first), O(n^2) per row: right for the small axes
TopK sees in classifiers and post-processing, slow for very long ones.
"""

from __future__ import annotations

import tvm
from tvm import relax, te, tirx


def _at(index, axis: int, value):
    return tuple(value if d == axis else i for d, i in enumerate(index))


def topk(data: te.Tensor, k: int, axis: int, ret_type: str, largest: bool, dtype: str):
    rank_of, shape = len(data.shape), [int(d) for d in data.shape]
    axis %= rank_of
    n = shape[axis]
    k = n if k < 1 else min(k, n)

    def before(other, other_at, mine, mine_at):  # does `other` come before `mine`?
        wins = other > mine if largest else other < mine
        return tirx.Or(wins, tirx.And(other == mine, other_at < mine_at))

    m = te.reduce_axis((0, n), "m")
    rank = te.compute(shape, lambda *i: te.sum(
        tirx.Select(before(data[_at(i, axis, m)], m, data[i], i[axis]), 1, 0), axis=m), name="topk_rank")
    out_shape = _at(shape, axis, k)
    r = te.reduce_axis((0, n), "r")
    indices = te.compute(out_shape, lambda *o: te.sum(
        tirx.Select(rank[_at(o, axis, r)] == o[axis], r, 0), axis=r), name="topk_index")
    values = te.compute(out_shape, lambda *o: data[_at(o, axis, indices[o])], name="topk_values")
    cast = te.compute(out_shape, lambda *o: indices[o].astype(dtype), name="topk_indices")
    if ret_type == "values":
        return values
    if ret_type == "indices":
        return cast
    return [values, cast]


def as_te(mod: tvm.IRModule) -> tvm.IRModule:
    """`mod` with every statically shaped `relax.topk` computed by `topk`."""
    op = tvm.ir.Op.get("relax.topk")

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            ty = call.args[0].ty if call.op == op else None
            if not isinstance(ty, relax.TensorType) or not isinstance(ty.shape, relax.ShapeExpr) \
                    or not all(isinstance(d, tirx.IntImm) for d in ty.shape.values):
                return call
            a = call.attrs
            return self.builder_.call_te(topk, call.args[0], int(a.k), int(a.axis), str(a.ret_type),
                                         bool(a.largest), str(a.dtype), primfunc_name_hint="topk")

    rewriter = Rewriter(mod)
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
    return rewriter.builder_.get()
