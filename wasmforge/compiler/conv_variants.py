"""The conv kernels' hand schedules in their variants: `invoke tune --space hand`.

optimize._schedule (direct convs) and winograd._schedule (its GEMM) have three
choices their hand rules fix: pixels (or Winograd tiles) per register tile
(`_ow_tile`, `_gemm_tile`), output-channel blocks per tile (1) and input
channels per unrolled step (tiling.STEP_CHANNELS). Which combination is fastest as wasm
depends on the shape in ways no rule captured: LLVM hoists the step's loads,
Cranelift emits each accumulator's chain of multiply-adds in turn, and spills
follow from the mix (measured per shape: anything from 0.5x to 2x the rule;
docs/performance-notes.md).
So tune.py times every variant of each conv workload as wasm
(wasm_measure.py) and records the fastest as an ordinary MetaSchedule tuning
record (the schedule's trace), which the build applies like any other.

Only variants with at most MAX_ACCUMULATORS vector accumulators (x86-64's 16
xmm registers: the runner's engine has no epoch check, so accumulators stay in
registers) that divide their loops evenly are offered.
"""

from __future__ import annotations

from itertools import product

PIXELS = (2, 4, 7, 8)
BLOCKS = (1, 2)
UNROLL = (8, 4, 2)
MAX_ACCUMULATORS = 16  # a tile holds 2 f32x4 per pixel and output-channel block
VECTORS_PER_BLOCK = 2  # OC_BLOCK channels = two f32x4


def _found(func):
    """(apply, (width, output-channel blocks, input-channel block), the rule's tile) for a
    PrimFunc holding a direct or a Winograd conv, else None. `apply(sch, tile, blocks,
    unroll)` schedules a fresh schedule of it."""
    import tvm
    from tvm import s_tir

    from . import optimize, winograd
    from .tiling import root_block_names

    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    names = root_block_names(sch)
    if optimize.CONV_BLOCK in names:
        _, o, _, x, _, _, _, _, rci = sch.get_loops(sch.get_sblock(optimize.CONV_BLOCK))
        index = names.index(optimize.CONV_BLOCK)

        def apply(s, *choice):
            optimize._schedule(s, index, *choice)
        rule = optimize._ow_tile
    elif winograd.GEMM in names:
        _, _, _, o, y, x, _, _, rci = sch.get_loops(sch.get_sblock(winograd.GEMM))

        def apply(s, *choice):
            winograd._schedule(s, names, *choice)

        def rule(width):
            return winograd._gemm_tile(int(sch.get(y).extent), width)
    else:
        return None
    width = int(sch.get(x).extent)
    return apply, (width, int(sch.get(o).extent), int(sch.get(rci).extent)), rule(width)


def choices(width: int, oc_blocks: int, ic_block: int, rule_tile: int) -> list[tuple[int, int, int]]:
    """Every (tile, blocks, unroll) that divides its loop and fits the registers, the hand
    rule's own choice (`rule_tile`, 1, its step of input channels) first."""
    from .tiling import step_channels

    rule = (rule_tile, 1, step_channels(ic_block))
    found = [rule]
    for pixels, blocks, unroll in product(PIXELS, BLOCKS, UNROLL):
        if (width % pixels or oc_blocks % blocks or unroll > ic_block or ic_block % unroll
                or pixels * blocks * VECTORS_PER_BLOCK > MAX_ACCUMULATORS):
            continue
        if (pixels, blocks, unroll) != rule:
            found.append((pixels, blocks, unroll))
    return found


def variants(func):
    """[(label, traced s_tir.Schedule)] for a PrimFunc with one direct or Winograd conv,
    the hand rule's first; [] for any other PrimFunc. Variants the schedule refuses are
    left out."""
    import tvm
    from tvm import s_tir

    found = _found(func)
    if found is None:
        return []
    apply, extents, rule = found
    scheduled = []
    for tile, blocks, unroll in choices(*extents, rule):
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        try:
            apply(sch, tile, blocks, unroll)
        except Exception:  # noqa: BLE001 - s_tir.ScheduleError on an epilogue the variant cannot take
            continue
        scheduled.append((f"tile={tile} blocks={blocks} unroll={unroll}", sch))
    return scheduled
