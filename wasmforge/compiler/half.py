"""float16 -> float64 casts that LLVM's wasm backend can compile.

LLVM 19 lowers `fpext half to double` on wasm32 to a call of compiler-rt's
half -> float helper (which takes an i32) but passes it the half zero-extended
to an i64: the module is invalid ("type mismatch: expected i32, found i64")
and wasmtime refuses to compile it. Casting through float32 does not help:
LLVM folds the two casts back into one. So `astype(float64)` of a float16 tensor
is legalized here with the half's bits widened to a float32 by integer
arithmetic (exact: every half is a float32), then cast to float64, which LLVM
compiles without a helper. Any other astype keeps TVM's legalization.
"""

from __future__ import annotations

import tvm
from tvm import te, tirx

_default_astype_legalize = tvm.ir.Op.get("relax.astype").get_attr("FLegalize")


def half_to_float(h: tirx.PrimExpr) -> tirx.PrimExpr:
    """The float32 with the value of the float16 `h` (signs, subnormals, inf and NaN kept)."""
    bits = tirx.reinterpret("uint16", h).astype("uint32")
    sign = (bits >> tirx.const(15, "uint32")) << tirx.const(31, "uint32")
    exponent = (bits >> tirx.const(10, "uint32")) & tirx.const(0x1F, "uint32")
    mantissa = bits & tirx.const(0x3FF, "uint32")
    shifted = mantissa << tirx.const(13, "uint32")
    # normal: rebias the exponent (15 -> 127); all ones: inf/NaN keep their payload
    normal = sign | ((exponent + tirx.const(112, "uint32")) << tirx.const(23, "uint32")) | shifted
    special = sign | tirx.const(0x7F800000, "uint32") | shifted
    # subnormal (or zero): mantissa x 2^-24, exact in float32
    magnitude = mantissa.astype("float32") * tirx.const(2.0 ** -24, "float32")
    subnormal = tirx.Select(sign != tirx.const(0, "uint32"), -magnitude, magnitude)
    return tirx.Select(exponent == tirx.const(0, "uint32"), subnormal,
                       tirx.reinterpret("float32", tirx.Select(exponent == tirx.const(0x1F, "uint32"),
                                                               special, normal)))


def _half_to_double(x):
    return te.compute(x.shape, lambda *i: half_to_float(x[i]).astype("float64"), name="half_to_double")


def legalize_astype(bb, call):
    source, target = str(call.args[0].ty.dtype), str(call.attrs.dtype)
    if source == "float16" and target == "float64":
        return bb.call_te(_half_to_double, call.args[0], primfunc_name_hint="half_to_double")
    return _default_astype_legalize(bb, call)


LEGALIZE = {"relax.astype": legalize_astype}
