"""Vectorizable exp and erf for transformer encoders: softmax rows and exact GELU.

In a wasm32 build, `T.exp` and `T.erf` become calls of libm's `expf` / `erff`:
one scalar call per element, and a loop that contains them does not vectorize.
In minilm-synth that made the softmax (12 x 128 x 128 exps per layer) 4-6% and
the GELU epilogue of the feed-forward matmul ~25% of that kernel. This module
legalizes both with TOPI's polynomial versions (`fast_exp`: 2^n times a degree-5
polynomial, `fast_erf`: Eigen's rational approximation on [-4, 4]; both within
a few float32 ulp), which are plain f32x4 arithmetic:

- `relax.erf` -> `topi.fast_erf` (fused into the matmul tile's epilogue, so the
  GELU is computed 8 lanes at a time right after the accumulation);
- `relax.nn.softmax` over the last axis -> max, fast_exp(x - max), sum, divide,
  scheduled row by row (`schedule_softmax`): the four passes over one 128-wide row
  stay in L1 and the element-wise ones are vectorized.

Anything else keeps TVM's own legalization and schedule.
"""

from __future__ import annotations

import tvm
from tvm import s_tir, te, tirx, topi

SOFTMAX_BLOCKS = ("softmax_max", "softmax_exp", "softmax_sum", "softmax_norm")

_default_softmax_legalize = tvm.ir.Op.get("relax.nn.softmax").get_attr("FLegalize")


def _is_f32(expr) -> bool:
    return str(expr.ty.dtype) == "float32"


def legalize_erf(bb, call):
    if not _is_f32(call.args[0]):
        return tvm.ir.Op.get("relax.erf").get_attr("FLegalize")(bb, call)
    return bb.call_te(topi.fast_erf, call.args[0], primfunc_name_hint="erf")


def _softmax_last_axis(x):
    *rows, n = x.shape
    k = te.reduce_axis((0, n), "k")
    top = te.compute(tuple(rows), lambda *r: te.max(x[r + (k,)], axis=k), name=SOFTMAX_BLOCKS[0])
    shifted = te.compute(tuple(x.shape), lambda *i: x[i] - top[i[:-1]], name="softmax_shift")
    exp = topi.fast_exp(shifted)
    exp = te.compute(tuple(x.shape), lambda *i: exp[i], name=SOFTMAX_BLOCKS[1])
    j = te.reduce_axis((0, n), "j")
    total = te.compute(tuple(rows), lambda *r: te.sum(exp[r + (j,)], axis=j), name=SOFTMAX_BLOCKS[2])
    return te.compute(tuple(x.shape), lambda *i: exp[i] / total[i[:-1]], name=SOFTMAX_BLOCKS[3])


def legalize_softmax(bb, call):
    x = call.args[0]
    ndim = int(x.ty.ndim)
    if not _is_f32(x) or ndim < 1 or int(call.attrs.axis) not in (-1, ndim - 1):
        return _default_softmax_legalize(bb, call)
    return bb.call_te(_softmax_last_axis, x, primfunc_name_hint="softmax")


LEGALIZE = {"relax.erf": legalize_erf, "relax.nn.softmax": legalize_softmax}


def schedule_softmax(func: tirx.PrimFunc) -> tirx.PrimFunc | None:
    """Row-by-row schedule of a PrimFunc that is exactly this module's softmax, else None."""
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    names = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    if not set(SOFTMAX_BLOCKS) <= set(names) or names[-1] != SOFTMAX_BLOCKS[3]:
        return None
    try:
        for name in names:
            if name not in SOFTMAX_BLOCKS:  # the shift and fast_exp's own block
                sch.compute_inline(sch.get_sblock(name))
        norm = sch.get_sblock(SOFTMAX_BLOCKS[3])
        row = sch.get_loops(norm)[-2]
        for name in reversed(SOFTMAX_BLOCKS[:3]):
            sch.compute_at(sch.get_sblock(name), row)
        sch.vectorize(sch.get_loops(sch.get_sblock(SOFTMAX_BLOCKS[1]))[-1])
        sch.vectorize(sch.get_loops(norm)[-1])
    except Exception:  # noqa: BLE001 - s_tir.ScheduleError and friends: keep the default
        return None
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)
