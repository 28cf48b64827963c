"""The direct conv's hand schedule in its variants: `invoke tune --space hand`.

optimize._schedule has three choices the hand rule fixes: pixels per register
tile (`_ow_tile`), output-channel blocks per tile (1) and input channels per
unrolled step (the whole block of 8). Which combination is fastest as wasm
depends on the shape in ways no rule captured: LLVM hoists the step's loads,
Cranelift emits each accumulator's chain of multiply-adds in turn, and spills
follow from the mix (measured per shape: anything from 0.4x to 1.6x the rule).
So tune.py times every variant of each conv workload as wasm
(wasm_measure.py) and records the fastest as an ordinary MetaSchedule tuning
record (the schedule's trace), which the build applies like any other.

Only variants that fit the x86-64 register file (at most MAX_ACCUMULATORS
vector accumulators) and divide their loops evenly are offered.
"""

from __future__ import annotations

from itertools import product

PIXELS = (2, 4, 7, 8)
BLOCKS = (1, 2)
UNROLL = (8, 4, 2)
MAX_ACCUMULATORS = 16  # x86-64 has 16 xmm registers; a tile of 2 f32x4 per pixel and block
VECTORS_PER_BLOCK = 2  # OC_BLOCK channels = two f32x4


def _conv_extents(func) -> tuple[int, int, int] | None:
    """(output width, output-channel blocks, input-channel block) of the PrimFunc's conv."""
    import tvm
    from tvm import s_tir

    from .optimize import CONV_BLOCK
    from .tiling import root_block_names

    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    if CONV_BLOCK not in root_block_names(sch):
        return None
    _, o, _, x, _, _, _, _, rci = sch.get_loops(sch.get_sblock(CONV_BLOCK))
    return int(sch.get(x).extent), int(sch.get(o).extent), int(sch.get(rci).extent)


def choices(width: int, oc_blocks: int, ic_block: int) -> list[tuple[int, int, int]]:
    """Every (pixels, blocks, unroll) that divides its loop and fits the registers;
    the hand rule's own choice is among them."""
    from .optimize import _ow_tile

    rule = (_ow_tile(width), 1, ic_block)
    found = [rule]
    for pixels, blocks, unroll in product(PIXELS, BLOCKS, UNROLL):
        if (width % pixels or oc_blocks % blocks or unroll > ic_block or ic_block % unroll
                or pixels * blocks * VECTORS_PER_BLOCK > MAX_ACCUMULATORS):
            continue
        if (pixels, blocks, unroll) != rule:
            found.append((pixels, blocks, unroll))
    return found


def variants(func):
    """[(label, traced s_tir.Schedule)] for a PrimFunc with one direct conv, the hand
    rule's first; [] for any other PrimFunc or a variant the schedule refuses."""
    import tvm
    from tvm import s_tir

    from . import optimize
    from .tiling import root_block_names

    extents = _conv_extents(func)
    if extents is None:
        return []
    found = []
    for pixels, blocks, unroll in choices(*extents):
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        try:
            optimize._schedule(sch, root_block_names(sch).index(optimize.CONV_BLOCK), pixels, blocks, unroll)
        except Exception:  # noqa: BLE001 - s_tir.ScheduleError on an epilogue the variant cannot take
            continue
        found.append((f"pixels={pixels} blocks={blocks} unroll={unroll}", sch))
    return found
