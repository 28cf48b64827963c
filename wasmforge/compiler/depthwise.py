"""Depthwise conv2d (groups == channels) in the blocked NCHW{B}c layout, with its own schedule.

MobileNet-style networks alternate 1x1 convs (blocked by optimize.py) with 3x3
depthwise convs. Left in NCHW, every block pays two layout transforms and the
depthwise conv runs TVM's unscheduled scalar loop nest. Here:

1. `layout` asks ConvertLayout for NCHW{B}c activations and OIHW1i{B}o weights
   (B = optimize.OC_BLOCK) when the channel count is a multiple of B; other
   depthwise convs (and grouped convs that are not depthwise) keep NCHW.
2. `legalize` turns such a conv into a TE compute whose innermost axis is the
   channel block: each lane is its own channel, so nothing crosses lanes.
3. `schedule` tiles it: per output row, a run of `tile` pixels x 4 channels
   (one f32x4 per pixel) is accumulated in registers over the unrolled kernel
   window, so neighbouring pixels share their input loads; the zero padding is
   computed per channel block right before it is used (compute_at), or for
   strided convs read in place, and the fused epilogue (bias, Clip/ReLU6,
   residual) is applied per tile.

Like optimize.schedule_conv, `schedule` returns None for anything it does not
recognise, and the caller keeps TVM's default schedule for that PrimFunc.
"""

from __future__ import annotations

from tvm import s_tir, te, tirx

from .tiling import (first_divisor, pad_nchwc, root_block_names, schedule_if, unroll_tile_store,
                     window_extent)

BLOCK = 8  # channels per layout block (optimize.OC_BLOCK)
LANES = 4  # f32 lanes per v128
DW_BLOCK = "depthwise_conv2d_NCHWc"
OP = "relax.nn.conv2d"


def is_depthwise(call) -> bool:
    """A conv2d whose every group is one input channel with one output channel."""
    oc, icg = [int(d) for d in call.args[1].ty.shape.values[:2]]
    return int(call.attrs.groups) == oc and icg == 1 and oc > 1


def layout(call) -> dict | None:
    """Desired layouts for a depthwise conv (ConvertLayout callback form); None for other convs."""
    if call.attrs.groups == 1 or not is_depthwise(call):
        return None
    channels = int(call.args[1].ty.shape.values[0])
    if call.attrs.data_layout != "NCHW" or channels % BLOCK:
        return {OP: ["NCHW", "OIHW"]}
    return {OP: [f"NCHW{BLOCK}c", f"OIHW1i{BLOCK}o", f"NCHW{BLOCK}c"]}


def depthwise_nchwc(data, weight, strides, padding, dilation):
    """data [N, C/B, H, W, B], weight [C/B, 1, KH, KW, 1, B] -> [N, C/B, OH, OW, B]."""
    n, cb, h, w, b = [int(d) for d in data.shape]
    _, _, kh, kw, _, _ = [int(d) for d in weight.shape]
    (sh, sw), (dh, dw) = strides, dilation
    pt, pl, pb, pr = padding
    oh, ow = window_extent(h, pt, pb, kh, sh, dh), window_extent(w, pl, pr, kw, sw, dw)
    data = pad_nchwc(data, padding)
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    return te.compute(
        (n, cb, oh, ow, b),
        lambda i, o, y, x, c: te.sum(
            data[i, o, y * sh + ry * dh, x * sw + rx * dw, c] * weight[o, 0, ry, rx, 0, c], axis=[ry, rx]),
        name=DW_BLOCK,
    )


def legalize(bb, call):
    """The blocked depthwise conv as a call_te, or None if `call` is not one."""
    a = call.attrs
    if a.data_layout != f"NCHW{BLOCK}c" or a.kernel_layout != f"OIHW1i{BLOCK}o" or a.groups == 1:
        return None
    return bb.call_te(depthwise_nchwc, call.args[0], call.args[1],
                      [int(s) for s in a.strides], [int(p) for p in a.padding],
                      [int(d) for d in a.dilation], primfunc_name_hint="depthwise_conv2d_nchwc")


def tile(ow: int) -> int:
    """Output pixels per register tile: one f32x4 accumulator each (x86-64 has 16 xmm
    registers; the rest hold the shared input pixels and the weights)."""
    return first_divisor(ow, (8, 7, 4, 6, 5, 3, 2))


def schedule(func: tirx.PrimFunc) -> tirx.PrimFunc | None:
    """The register-tiled schedule for a PrimFunc with one blocked depthwise conv, else None."""
    def recognise(sch):
        names = root_block_names(sch)
        return names if DW_BLOCK in names else None

    return schedule_if(func, recognise, _schedule)


def _schedule(sch: s_tir.Schedule, names: list[str]) -> None:
    index = names.index(DW_BLOCK)
    if index > 1 or (index == 1 and names[0] != "pad_temp"):
        raise ValueError(f"unexpected producers {names[:index]}")
    conv = sch.get_sblock(DW_BLOCK)
    strided = index == 1 and _padded_width(sch) >= 2 * int(sch.get(sch.get_loops(conv)[3]).extent)  # stride >= 2
    epilogue = sch.get_child_blocks(sch.get_sblock("root"))[index + 1:]
    for block in epilogue[:-1]:
        sch.compute_inline(block)  # bias, clip, residual: folded into the last block
    n, o, y, x, c, ry, rx = sch.get_loops(conv)
    if int(sch.get(c).extent) % LANES:
        raise ValueError("channel block is not a multiple of the vector width")
    xo, xi = sch.split(x, [None, tile(int(sch.get(x).extent))])
    co, ci = sch.split(c, [None, LANES])
    # Per tile: 4 channels of `tile` pixels, the kernel window unrolled so that
    # pixels sharing an input column share its load.
    sch.reorder(n, o, y, xo, co, ry, rx, xi, ci)
    if epilogue:
        sch.set_scope(conv, 0, "local")
        store = epilogue[-1]
    else:
        store = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(store, co)
    unroll_tile_store(sch, store, co)
    for loop in (ry, rx, xi):
        sch.unroll(loop)
    sch.vectorize(ci)
    init = sch.decompose_reduction(conv, ry)
    sch.vectorize(sch.get_loops(init)[-1])
    if strided:
        # A strided conv reads each input pixel for 1-2 outputs: reading the padding in
        # place (a bounds test per row and column) beats copying it: MobileNetV2's four
        # stride-2 depthwise convs as wasm 0.64 -> 0.44 ms in all (0.46 -> 0.30-0.34 ms
        # for the 112 -> 56 one).
        sch.compute_inline(sch.get_sblock("pad_temp"))
    elif index == 1:
        # Stride 1: each input pixel feeds 9 outputs. The padded copy of one channel
        # block, just before its rows are read (instead of a padded copy of the whole
        # tensor in a separate pass); padding read in place was 1.02x slower here.
        pad = sch.get_sblock("pad_temp")
        sch.compute_at(pad, o)
        sch.vectorize(sch.get_loops(pad)[-1])


def _padded_width(sch: s_tir.Schedule) -> int:
    return int(sch.get(sch.get_loops(sch.get_sblock("pad_temp"))[3]).extent)
