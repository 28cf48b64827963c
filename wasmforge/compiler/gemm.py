"""Packed-GEMM kernels for matmul / dense without tuning: XNNPACK's layout, one TIR schedule.

TVM's default CPU pipeline leaves a matmul as a scalar triple loop (ResNet50's
2048 -> 1000 dense ran at ~1.6% of the wasm SIMD peak). This module gives every
float32 matmul the shape of XNNPACK's wasm SIMD GEMM microkernels:

1. **Packed weights.** A matmul whose right operand is a constant [K, N] matrix
   (N % 8 == 0) is legalized to `matmul_packed`, which reads the weights as
   [N/8, K, 8]: the 8 output columns of one register tile are 32 contiguous bytes
   per k, and one tile's whole panel is one contiguous stream. The packing is
   done here, in numpy, at build time; the packed array is an ordinary constant.
   Activations and outputs keep their layout, so nothing else changes.
2. **Register tiles.** Every PrimFunc with one `matmul_packed` block, or with
   TVM's own `matmul` block (batch matmuls of two activations, as in attention:
   their right operand is read [.., k, j] in place), gets the same schedule:
   an MR x (NB*8) tile of the output accumulated in a local buffer (f32x4
   values to LLVM), k unrolled by 4 so that optimize.py's splat rewrite turns
   the 4 broadcasts of one A row into one `v128.load` + lane shuffles, and the
   fused epilogue (bias, residual, scaling, mask, GELU) applied per tile.
   Column block outermost: a weight panel stays in L1 while the rows stream past.

Like the conv schedule, anything unexpected returns None and the PrimFunc keeps
TVM's default schedule (correct, slow): never a failed build.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, s_tir, te, tirx

from .tiling import root_block_names, schedule_if, unroll_tile_store

NR = 8  # output columns per packed panel: two f32x4 registers
K_UNROLL = 4  # one v128 of A per row per step (the splat rewrite's group)
PACKED_BLOCK = "matmul_packed"
MATMUL_BLOCKS = (PACKED_BLOCK, "matmul")  # "matmul": TVM's own legalization of relax.matmul

_default_matmul_legalize = tvm.ir.Op.get("relax.matmul").get_attr("FLegalize")


def pack_weights(weight: np.ndarray) -> np.ndarray:
    """[K, N] -> [N/NR, K, NR]: panel p holds columns p*NR .. p*NR+NR-1, row by row."""
    k, n = weight.shape
    return np.ascontiguousarray(weight.reshape(k, n // NR, NR).transpose(1, 0, 2))


def _packable(call) -> bool:
    x, w = call.args
    if not isinstance(w, tvm.ir.expr.Constant):
        return False
    x_ty, w_ty = x.ty, w.ty
    if str(w_ty.dtype) != "float32" or str(x_ty.dtype) != "float32" or x_ty.ndim < 2 \
            or len(w.value.shape) != 2:
        return False
    out_dtype = str(call.attrs.out_dtype)
    return out_dtype in ("", "None", "void", "float32") and w.value.shape[1] % NR == 0


def _matmul_packed(x, packed):
    """x [..., M, K], packed [N/NR, K, NR] -> [..., M, N]."""
    nb, k_extent, nr = [int(d) for d in packed.shape]
    k = te.reduce_axis((0, k_extent), "k")
    return te.compute(
        tuple(x.shape[:-1]) + (nb * nr,),
        lambda *idx: te.sum(x[tuple(idx[:-1]) + (k,)] * packed[idx[-1] // nr, k, idx[-1] % nr], axis=k),
        name=PACKED_BLOCK,
    )


def legalize_matmul(bb, call):
    """LegalizeOps entry for relax.matmul: packed weights where the right operand is a
    constant matrix, TVM's own legalization otherwise."""
    if not _packable(call):
        return _default_matmul_legalize(bb, call)
    packed = relax.const(pack_weights(call.args[1].value.numpy()), "float32")
    return bb.call_te(_matmul_packed, call.args[0], packed, primfunc_name_hint="matmul_packed")


LEGALIZE = {"relax.matmul": legalize_matmul}


def _tile(m: int, n: int) -> tuple[int, int]:
    """(MR rows, NB column panels) of the register tile. 8 x 8 (16 accumulators) where
    M allows: one step of 4 k loads 8 weight vectors and 8 A vectors for 64
    multiply-adds. Measured as wasm on minilm-synth, whole inference: 0.71x the
    time of 4 x 8 in an engine with epoch interruption, 0.79x (64.4 vs 81.0 ms) in
    the runner's engine without it (docs/performance-notes.md). Fewer rows take
    more panels (up to 8-10 accumulators), so that a GEMV (M = 1, a classifier
    head) still has independent multiply-add chains."""
    mr = next(r for r in (8, 4, 2, 3, 1) if m % r == 0)
    panels = n // NR
    choices = {8: (1,), 4: (1,), 3: (1,), 2: (2, 1), 1: (4, 5, 3, 2, 1)}[mr]
    return mr, next(nb for nb in choices if panels % nb == 0)


def schedule_gemm(func: tirx.PrimFunc) -> tirx.PrimFunc | None:
    """The register-tiled schedule for a PrimFunc with one matmul block, else None."""
    def recognise(sch):
        names = root_block_names(sch)
        found = [name for name in MATMUL_BLOCKS if name in names]
        return names.index(found[0]) if len(found) == 1 and names.count(found[0]) == 1 else None

    return schedule_if(func, recognise, _schedule)


def _schedule(sch: s_tir.Schedule, index: int) -> None:
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    gemm, epilogue = blocks[index], blocks[index + 1:]
    for block in epilogue[:-1]:
        sch.compute_inline(block)
    loops = sch.get_loops(gemm)
    *batch, i, j, k = loops
    m, n, k_extent = (int(sch.get(loop).extent) for loop in (i, j, k))
    if n % NR or k_extent % K_UNROLL:
        raise ValueError("matmul shape not tileable")
    mr, nb = _tile(m, n)
    io, ii = sch.split(i, [None, mr])
    jo, jb, ji = sch.split(j, [None, nb, NR])
    ko, ki = sch.split(k, [None, K_UNROLL])
    sch.reorder(*batch, jo, io, ko, ki, ii, jb, ji)
    if epilogue:
        sch.set_scope(gemm, 0, "local")
        store = epilogue[-1]
    else:
        store = sch.cache_write(gemm, 0, "local")
    sch.reverse_compute_at(store, io)
    unroll_tile_store(sch, store, io)
    sch.unroll(ki)
    sch.unroll(ii)
    sch.unroll(jb)
    sch.vectorize(ji)
    init = sch.decompose_reduction(gemm, ko)
    sch.vectorize(sch.get_loops(init)[-1])
