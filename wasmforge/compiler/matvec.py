"""Matrix-vector products (a classifier's dense layer at batch 1) streamed row by row.

After FoldConstant, an ONNX Gemm with transB becomes `matmul(x[1, K], W[K, N])`
with W pre-transposed, and TVM's default loop nest computes one output at a
time over k: W is read down its columns, N floats apart (MobileNetV2's 1280 x
1000 classifier: 6.8 ms of a 40 ms inference, 0.4 GFLOP/s). Here the k loop is
outermost: each step broadcasts x[k] and multiply-adds it into a register tile
of `tile` outputs (f32x4 accumulators) from one contiguous run of W's row k,
so W streams through once, in order. The fused epilogue (bias, activation) is
applied per tile.

`schedule` returns None for anything else (a matmul with more than one row, a
width that is not a multiple of 4, an unexpected fused block), and the caller
keeps TVM's default schedule.
"""

from __future__ import annotations

from tvm import s_tir, tirx

from .tiling import first_divisor, schedule_if, unroll_tile_store

MATMUL_BLOCK = "matmul"
LANES = 4  # f32 lanes per v128


def tile(n: int) -> int | None:
    """Outputs per register tile (x86-64 has 16 xmm registers: at most 10 accumulators)."""
    return first_divisor(n, (32, 40, 24, 16, 8, 4), None)


def schedule(func: tirx.PrimFunc) -> tirx.PrimFunc | None:
    """The row-streaming schedule for a PrimFunc whose first block is a 1-row matmul, else None."""
    def recognise(sch):
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        return blocks if blocks and sch.get(blocks[0]).name_hint == MATMUL_BLOCK else None

    return schedule_if(func, recognise, _schedule)


def _schedule(sch: s_tir.Schedule, blocks: list) -> None:
    matmul, epilogue = blocks[0], blocks[1:]
    loops = sch.get_loops(matmul)
    if len(loops) != 3:
        raise ValueError("not a 2-D matmul")
    i, j, k = loops
    if int(sch.get(i).extent) != 1:
        raise ValueError("more than one row: not a matrix-vector product")
    width = tile(int(sch.get(j).extent))
    if width is None:
        raise ValueError("output width is not a multiple of the vector width")
    for block in epilogue[:-1]:
        sch.compute_inline(block)
    jo, ji = sch.split(j, [None, width])
    ju, jv = sch.split(ji, [None, LANES])
    sch.reorder(i, jo, k, ju, jv)
    if epilogue:
        sch.set_scope(matmul, 0, "local")
        store = epilogue[-1]
    else:
        store = sch.cache_write(matmul, 0, "local")
    sch.reverse_compute_at(store, jo)
    # Constant indices into the accumulator tile (everything unrolled): LLVM keeps it in registers.
    sch.split(sch.get_loops(store)[-1], [None, LANES])
    unroll_tile_store(sch, store, jo)
    sch.unroll(ju)
    sch.vectorize(jv)
    init = sch.decompose_reduction(matmul, k)
    sch.vectorize(sch.get_loops(init)[-1])
