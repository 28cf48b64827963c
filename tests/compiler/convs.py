"""Blocked conv PrimFuncs for the schedule tests, shaped as optimize.fuse() makes them."""

from __future__ import annotations

from wasmforge.compiler import optimize


def conv_bias_relu(in_channels: int, out_channels: int, height: int, width: int | None = None, *,
                   kernel: int = 1, stride: int = 1, ic_block: int = 8):
    """Conv + bias + relu over an NCHWc input (`in_channels` in blocks of `ic_block`),
    `out_channels` in blocks of 8, `kernel` x `kernel` with 'same' padding."""
    from tvm import te

    width = height if width is None else width
    data = te.placeholder((1, in_channels // ic_block, height, width, ic_block), name="data")
    weight = te.placeholder((out_channels // 8, in_channels // ic_block, kernel, kernel, ic_block, 8),
                            name="weight")
    bias = te.placeholder((1, out_channels // 8, 1, 1, 8), name="bias")
    pad = kernel // 2
    conv = optimize._conv2d_nchwc(data, weight, (stride, stride), (pad, pad, pad, pad), (1, 1))
    add = te.compute(conv.shape, lambda n, o, y, x, c: conv[n, o, y, x, c] + bias[n, o, 0, 0, c], name="add")
    relu = te.compute(conv.shape, lambda *i: te.max(add(*i), 0.0), name="relu")
    return te.create_prim_func([data, weight, bias, relu])
