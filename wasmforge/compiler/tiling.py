"""What every hand-written kernel schedule does the same way: pick a tile that
divides the loop, and schedule a PrimFunc only if it recognises it, keeping
TVM's default (correct, slower) when the schedule fails."""

from __future__ import annotations

from typing import Callable, TypeVar

import tvm
from tvm import s_tir, tirx

Found = TypeVar("Found")


def first_divisor(n: int, preferred: tuple[int, ...], default: int | None = 1) -> int | None:
    """The first of `preferred` (in order of preference) that divides `n`, else `default`."""
    for t in preferred:
        if n % t == 0:
            return t
    return default


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
