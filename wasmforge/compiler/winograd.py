"""Winograd F(m x m, 3 x 3) for 3x3 stride-1 convolutions in the blocked (NCHW8c) layout.

A 3x3 convolution computes each m x m output tile from an (m+2) x (m+2) input
patch with alpha^2 = (m+2)^2 multiply-adds per input channel instead of 9 m^2
(F(2x2): 16 instead of 36, 2.25x fewer; F(4x4): 36 instead of 144, 4x fewer):

    Y = A^T [ (G g G^T) . (B^T d B) ] A        (. = elementwise)

- U = G g G^T, the transformed weights, is computed here in numpy at build time
  (float64, then rounded once to float32) and embedded as a constant laid out
  [alpha, alpha, K/8, C/8, 8 (in), 8 (out)].
- V = B^T d B, the input transform, per tile and 8-channel block.
- M[a, b] = sum over input channels of U[a, b] V[a, b]: alpha^2 independent
  GEMMs, scheduled like the direct conv (a register tile of tiles x 8 output
  channels, f32x4 over the channel block).
- Y = A^T M A, the output transform; the fused epilogue (bias, residual, relu)
  is computed on it, tile by tile.

Both transforms are separable (rows, then columns). Each is written as a
`Select` over the transform row whose branches hold only the non-zero terms;
the schedule unrolls the row loops, so the conditions fold to constants.

`legalize` returns None for anything it does not cover (the caller then emits
the direct conv); `schedule` returns None for a PrimFunc without the Winograd
blocks and raises ScheduleFailed if it cannot schedule one (optimize.py then
lowers the module again with direct convs only).
"""

from __future__ import annotations

from fractions import Fraction as Fr

import numpy as np
import tvm
from tvm import relax, s_tir, te, tirx, topi

from .tiling import first_divisor, unroll_steps, unroll_tile_store

BLOCK = 8  # channels per block (input and output): NCHW8c, OIHW8i8o
INPUT_TRANSFORM = "winograd_input"
GEMM = "winograd_gemm"
OUTPUT_TRANSFORM = "winograd_output"
F4_MIN_TILES = 16  # see tile_size
F4_MAX_WORK = 0.6
ROW_SPANNING_TILE = 8  # see _gemm_tile

# Transform matrices (Lavin & Gray 2015), exact as fractions: B^T, G, A^T.
MATRICES = {
    2: ([[1, 0, -1, 0],
         [0, 1, 1, 0],
         [0, -1, 1, 0],
         [0, 1, 0, -1]],
        [[1, 0, 0],
         [Fr(1, 2), Fr(1, 2), Fr(1, 2)],
         [Fr(1, 2), Fr(-1, 2), Fr(1, 2)],
         [0, 0, 1]],
        [[1, 1, 1, 0],
         [0, 1, -1, -1]]),
    4: ([[4, 0, -5, 0, 1, 0],
         [0, -4, -4, 1, 1, 0],
         [0, 4, -4, -1, 1, 0],
         [0, -2, -1, 2, 1, 0],
         [0, 2, -1, -2, 1, 0],
         [0, 4, 0, -5, 0, 1]],
        [[Fr(1, 4), 0, 0],
         [Fr(-1, 6), Fr(-1, 6), Fr(-1, 6)],
         [Fr(-1, 6), Fr(1, 6), Fr(-1, 6)],
         [Fr(1, 24), Fr(1, 12), Fr(1, 6)],
         [Fr(1, 24), Fr(-1, 12), Fr(1, 6)],
         [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0],
         [0, 1, -1, 2, -2, 0],
         [0, 1, 1, 4, 4, 0],
         [0, 1, -1, 8, -8, 1]]),
}


def matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B^T, G, A^T) of F(m, 3) as float64 arrays."""
    return tuple(np.array([[float(v) for v in row] for row in mat]) for mat in MATRICES[m])


def tile_size(out_h: int, out_w: int) -> int:
    """m of F(m x m, 3 x 3) for an output map of out_h x out_w (0: no Winograd).

    F(4x4) where it needs at most F4_MAX_WORK of F(2x2)'s multiply-adds, counting the
    padding of partial tiles (36 per 4x4 tile, 16 per 2x2 tile: 0.5625 when both tile
    the map alike), on a map of at least F4_MIN_TILES 4x4 tiles; else F(2x2). Measured
    as wasm (docs/performance-notes.md): F(4x4) took 0.2-0.8x the time of F(2x2) on
    ResNet50's 56- and 28-wide maps and 0.69x on SqueezeNet's 55- and 27-wide ones
    (0.5625 of the work each); 0.93x on 14-wide maps (0.73 of the work, and 2.25x the
    transformed weights: ResNet50's .wasm 144 -> 176 MB for 1.5% of its time: not
    taken); 1.26x on 7-wide maps (4 tiles: each transformed weight, 4x the size of
    the 3x3 weights, is used by 4 tiles only, so the GEMM streams weights)."""
    def tiles(m: int) -> int:
        return -(-out_h // m) * (-(-out_w // m))

    f4_work = 36 * tiles(4) / (16 * tiles(2))
    return 4 if tiles(4) >= F4_MIN_TILES and f4_work <= F4_MAX_WORK else 2


def transform_weights(weight: np.ndarray, m: int) -> np.ndarray:
    """OIHW8i8o weights [K/8, C/8, 3, 3, 8, 8] -> U [alpha, alpha, K/8, C/8, 8, 8] (float32).

    Summed in a fixed order in float64 (no BLAS), so the bytes are the same on every host."""
    _, g, _ = matrices(m)
    w = weight.astype(np.float64)
    alpha = m + 2
    rows = [sum(g[a, r] * w[:, :, r] for r in range(3)) for a in range(alpha)]  # [K/8, C/8, 3(s), 8, 8]
    u = [[sum(g[b, s] * rows[a][:, :, s] for s in range(3)) for b in range(alpha)] for a in range(alpha)]
    return np.ascontiguousarray(np.array(u, dtype=np.float64).astype(np.float32))


def _combine(coeffs, terms):
    """sum(c * t) over the non-zero coefficients, with +-1 as plain add/subtract."""
    out = None
    pairs = sorted(zip(coeffs, terms, strict=True), key=lambda ct: ct[0] < 0)  # stable: + first
    for c, t in pairs:
        if c == 0:
            continue
        term = t if abs(c) == 1 else t * tirx.const(float(abs(c)), t.dtype)
        if out is None:
            out = term if c > 0 else -term
        else:
            out = out + term if c > 0 else out - term
    return out


def _pick(index, matrix, terms):
    """Row `index` (a loop variable) of `matrix` applied to `terms`, as a Select chain."""
    rows = [_combine(row, terms) for row in matrix]
    expr = rows[-1]
    for i in range(len(rows) - 2, -1, -1):
        expr = tirx.Select(index == i, rows[i], expr)
    return expr


def conv2d_winograd(data, u, padding, m: int):
    """data [N, C/8, H, W, 8], u [alpha, alpha, K/8, C/8, 8, 8] -> [N, K/8, OH, OW, 8]."""
    n, co_blocks, h, w, _ = [int(d) for d in data.shape]
    alpha, _, k_blocks = [int(d) for d in u.shape[:3]]
    pt, pl, pb, pr = padding
    oh, ow = h + pt + pb - 2, w + pl + pr - 2
    th, tw = -(-oh // m), -(-ow // m)
    bt, _, at = MATRICES[m]
    # Pad so that every tile's (m+2) x (m+2) patch is inside (beyond pb/pr: zeros that
    # only feed outputs the crop drops).
    padded = topi.nn.pad(data, [0, 0, pt, pl, 0], [0, 0, th * m + 2 - h - pt, tw * m + 2 - w - pl, 0],
                         name="winograd_pad")
    rows = te.compute(
        (n, co_blocks, th, tw, alpha, alpha, BLOCK),
        lambda b, c, y, x, i, s, ci: _pick(i, bt, [padded[b, c, y * m + r, x * m + s, ci]
                                                   for r in range(alpha)]),
        name="winograd_input_rows")
    v = te.compute(
        (alpha, alpha, n, co_blocks, th, tw, BLOCK),
        lambda i, j, b, c, y, x, ci: _pick(j, bt, [rows[b, c, y, x, i, s, ci] for s in range(alpha)]),
        name=INPUT_TRANSFORM)
    rc = te.reduce_axis((0, co_blocks), "rc")
    rci = te.reduce_axis((0, BLOCK), "rci")
    mm = te.compute(
        (alpha, alpha, n, k_blocks, th, tw, BLOCK),
        lambda i, j, b, k, y, x, kb: te.sum(u[i, j, k, rc, rci, kb] * v[i, j, b, rc, y, x, rci],
                                            axis=[rc, rci]),
        name=GEMM)
    cols = te.compute(
        (n, k_blocks, th, tw, m, alpha, BLOCK),
        lambda b, k, y, x, i, j, kb: _pick(i, at, [mm[a, j, b, k, y, x, kb] for a in range(alpha)]),
        name="winograd_output_rows")
    return te.compute(
        (n, k_blocks, oh, ow, BLOCK),
        lambda b, k, y, x, kb: _pick(x % m, at, [cols[b, k, y // m, x // m, y % m, j, kb]
                                                 for j in range(alpha)]),
        name=OUTPUT_TRANSFORM)


def legalize(bb: relax.BlockBuilder, call) -> relax.Expr | None:
    """The Winograd kernel for a blocked 3x3 stride-1 conv with constant weights, else None."""
    a = call.attrs
    data, weight = call.args
    if (a.data_layout != "NCHW8c" or a.kernel_layout != "OIHW8i8o" or a.out_layout != "NCHW8c"
            or a.groups != 1 or [int(s) for s in a.strides] != [1, 1]
            or [int(d) for d in a.dilation] != [1, 1] or not isinstance(weight, tvm.ir.expr.Constant)
            or str(weight.value.dtype) != "float32"):
        return None
    wshape = [int(d) for d in weight.value.shape]
    dshape = getattr(data.ty, "shape", None)
    if (wshape[2:4] != [3, 3] or dshape is None or not hasattr(dshape, "values")
            or not all(isinstance(d, tirx.IntImm) for d in dshape.values)):
        return None
    padding = [int(p) for p in a.padding]
    h, w = [int(d) for d in dshape.values[2:4]]
    m = tile_size(h + padding[0] + padding[2] - 2, w + padding[1] + padding[3] - 2)
    if not m:
        return None
    u = relax.const(transform_weights(weight.value.numpy(), m), "float32")
    return bb.call_te(conv2d_winograd, data, u, padding, m, primfunc_name_hint="conv2d_winograd")


def _gemm_tile(rows: int, width: int) -> int:
    """Winograd tiles per register tile for a map of `rows` x `width` tiles: as the direct
    conv's pixels per tile (4, else 7, ...) along a row, or ROW_SPANNING_TILE tiles of
    whole rows where rows are only 1, 2 or 4 tiles wide (ResNet50's 7x7 stage: 4 x 4
    tiles for F(2x2)). The register tile is what the GEMM reuses each transformed
    weight for, so a 4-tile register tile read each weight 4 times per layer."""
    if width < ROW_SPANNING_TILE and ROW_SPANNING_TILE % width == 0 and rows * width % ROW_SPANNING_TILE == 0:
        return ROW_SPANNING_TILE
    return first_divisor(width, (4, 7, 6, 8, 5, 3, 2))


class ScheduleFailed(Exception):
    """A Winograd PrimFunc the schedule cannot handle (the caller then lowers its convs directly)."""


def schedule(func: tirx.PrimFunc) -> tirx.PrimFunc | None:
    """The schedule for a PrimFunc holding one Winograd conv (+ fused epilogue); None for
    any other PrimFunc; raises ScheduleFailed if the schedule fails on a Winograd one."""
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    names = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    if GEMM not in names:
        return None
    try:
        _schedule(sch, names)
    except Exception as exc:  # noqa: BLE001 - s_tir.ScheduleError, tvm.error.InternalError, ...
        raise ScheduleFailed(str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__) \
            from exc
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def _schedule(sch: s_tir.Schedule, names: list[str], tile: int | None = None, blocks: int = 1,
              unroll: int | None = None) -> None:
    """The Winograd schedule; the GEMM's register tile is `tile` Winograd tiles (default
    `_gemm_tile`) x `blocks` output-channel blocks, `unroll` input channels per unrolled
    step (default: tiling.unroll_steps's rule). conv_variants.py measures the non-defaults."""
    root_blocks = sch.get_child_blocks(sch.get_sblock("root"))
    epilogue = root_blocks[names.index(OUTPUT_TRANSFORM) + 1:]
    _schedule_input(sch)
    _schedule_gemm(sch, tile, blocks, unroll)
    _schedule_output(sch, epilogue)


def _schedule_input(sch: s_tir.Schedule) -> None:
    pad = sch.get_sblock("winograd_pad")
    sch.vectorize(sch.get_loops(pad)[-1])
    v = sch.get_sblock(INPUT_TRANSFORM)
    i, j, b, c, y, x, ci = sch.get_loops(v)
    sch.reorder(b, c, y, x, i, j, ci)
    rows = sch.get_sblock("winograd_input_rows")
    sch.compute_at(rows, x)
    for loop in sch.get_loops(rows)[-3:-1]:
        sch.unroll(loop)
    sch.vectorize(sch.get_loops(rows)[-1])
    sch.unroll(i)
    sch.unroll(j)
    sch.vectorize(ci)


def _schedule_gemm(sch: s_tir.Schedule, tile: int | None, blocks: int, unroll: int | None) -> None:
    gemm = sch.get_sblock(GEMM)
    i, j, b, k, y, x, kb, rc, rci = sch.get_loops(gemm)
    rows, width = int(sch.get(y).extent), int(sch.get(x).extent)
    tile = tile or _gemm_tile(rows, width)
    outer = [y]
    if tile > width:  # a register tile of whole rows: one loop over the map's tiles
        if tile % width or (rows * width) % tile:
            raise ValueError(f"a tile of {tile} does not cover whole rows of {width} tiles")
        x, outer = sch.fuse(y, x), []
    xo, xi = sch.split(x, [None, tile])
    steps = unroll_steps(sch, rci, unroll)
    inner = [xi, kb]
    if blocks > 1:
        k, ki = sch.split(k, [None, blocks])
        inner = [ki, xi, kb]
    sch.reorder(i, j, b, k, *outer, xo, rc, *steps, *inner)
    store = sch.cache_write(gemm, 0, "local")
    sch.reverse_compute_at(store, xo)
    unroll_tile_store(sch, store, xo)
    for loop in inner[:-1]:
        sch.unroll(loop)
    sch.vectorize(kb)
    init = sch.decompose_reduction(gemm, rc)
    sch.vectorize(sch.get_loops(init)[-1])


def _schedule_output(sch: s_tir.Schedule, epilogue: list) -> None:
    if epilogue:
        for block in [sch.get_sblock(OUTPUT_TRANSFORM)] + list(epilogue[:-1]):
            sch.compute_inline(block)
        final = epilogue[-1]
    else:
        final = sch.get_sblock(OUTPUT_TRANSFORM)
    m = int(sch.get(sch.get_loops(sch.get_sblock("winograd_output_rows"))[4]).extent)
    b, k, y, x, kb = sch.get_loops(final)
    yo, yi = sch.split(y, [None, m])
    xo, xi = sch.split(x, [None, m])
    sch.reorder(b, k, yo, xo, yi, xi, kb)
    cols = sch.get_sblock("winograd_output_rows")
    sch.compute_at(cols, xo)
    for loop in sch.get_loops(cols)[-3:-1]:
        sch.unroll(loop)
    sch.vectorize(sch.get_loops(cols)[-1])
    sch.unroll(yi)
    sch.unroll(xi)
    sch.vectorize(kb)
