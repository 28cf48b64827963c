"""What every hand-written kernel does the same way: size a conv window's output and
pad its blocked input; pick a tile that divides the loop, step through input
channels 4 (or 8) at a time, unroll the tile's store, and schedule a PrimFunc only
if it recognises it, keeping TVM's default (correct, slower) when the schedule fails."""

from __future__ import annotations

from typing import Callable, TypeVar

import tvm
from tvm import s_tir, tirx, topi

Found = TypeVar("Found")

# Input channels per unrolled step of a conv's reduction (direct or Winograd GEMM),
# whatever the tile. Cranelift keeps the loads of a loop body where the wasm has
# them, so a step's input and weight vectors are live together: steps of 4
# channels measured 1.15-1.3x faster than whole blocks of 8 for 4-pixel tiles. For
# 7-pixel tiles whole blocks won on the Xeon before interleave.py existed
# (1.05-1.10x per kernel); with it, on the AMD EPYC, steps of 4 win: 0.67-0.96x
# per 7-wide kernel, 0.88-0.94x (fastest runs) for ResNet50, MobileNetV2 and
# SqueezeNet (docs/performance-notes.md).
STEP_CHANNELS = 4


def window_extent(size: int, before: int, after: int, kernel: int, stride: int,
                  dilation: int) -> int:
    """Output positions along one axis of a conv window over `size` inputs padded by
    `before` and `after` zeros."""
    return (size + before + after - (kernel - 1) * dilation - 1) // stride + 1


def pad_nchwc(data, padding):
    """`data` [N, C/b, H, W, b] zero-padded by (top, left, bottom, right); as it is if no padding."""
    pt, pl, pb, pr = padding
    if not (pt or pl or pb or pr):
        return data
    return topi.nn.pad(data, [0, 0, pt, pl, 0], [0, 0, pb, pr, 0], name="pad_temp")


def first_divisor(n: int, preferred: tuple[int, ...], default: int | None = 1) -> int | None:
    """The first of `preferred` (in order of preference) that divides `n`, else `default`."""
    for t in preferred:
        if n % t == 0:
            return t
    return default


def step_channels(block: int) -> int:
    """The rule's input channels per unrolled step for an input-channel block of `block`."""
    return STEP_CHANNELS if block > STEP_CHANNELS and block % STEP_CHANNELS == 0 else block


def unroll_steps(sch: s_tir.Schedule, channels, unroll: int | None = None) -> list:
    """Split a conv's innermost input-channel loop into steps of `unroll` channels
    (default: `step_channels`) and unroll the step; the loops,
    outer first (one loop when no split was needed)."""
    extent = int(sch.get(channels).extent)
    unroll = unroll or step_channels(extent)
    steps = [channels] if unroll == extent else list(sch.split(channels, [None, unroll]))
    sch.unroll(steps[-1])
    return steps


def unroll_tile_store(sch: s_tir.Schedule, store, at) -> None:
    """Unroll the loops of a register tile's store (or fused epilogue) block that lie
    inside `at`, the loop it was computed at, and vectorize the innermost. With
    constant indices everywhere LLVM keeps the accumulator tile in SSA values; one
    loop over the tile's pixels left rolled (as the direct convs had it) can leave
    the tile in a stack array that is zeroed with a `memset` call per tile (ResNet50's
    stem: 25,088 calls per inference)."""
    loops = sch.get_loops(store)
    node = sch.get(at)
    start = next(i for i, loop in enumerate(loops) if sch.get(loop).same_as(node)) + 1
    *outer, innermost = loops[start:]
    for loop in outer:
        sch.unroll(loop)
    sch.vectorize(innermost)


def schedule_if(func: tirx.PrimFunc, recognise: Callable[[s_tir.Schedule], Found | None],
                apply: Callable[[s_tir.Schedule, Found], None]) -> tirx.PrimFunc | None:
    """`func` scheduled by `apply(sch, found)` when `recognise(sch)` finds its block
    (not None), marked scheduled; None when it is not this schedule's kind or
    `apply` fails on it (s_tir.ScheduleError, tvm.error.InternalError, ...)."""
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    found = recognise(sch)
    if found is None:
        return None
    try:
        apply(sch, found)
    except Exception:  # noqa: BLE001 - an unexpected shape, fused producer or epilogue
        return None
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def root_block_names(sch: s_tir.Schedule) -> list[str]:
    return [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
