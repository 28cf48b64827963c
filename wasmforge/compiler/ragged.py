"""Blocked convs whose output width has no good register tile: computed a little wider.

optimize.py's conv schedule tiles each output row into runs of `_ow_tile(ow)`
pixels, a divisor of the width. A prime width gets a tile of 1 (SqueezeNet's
13x13 stages: 2 accumulators, ~25% of the wasm peak).
`wrap` makes the conv compute `padded_width(ow)` columns instead (the input
padded on the right with as many more zero columns as that needs) and crops
the result back to `ow` in a second, injective block ("conv2d_NCHWc_crop"),
which the conv schedule inlines into its epilogue like any other. The few extra
columns (13 -> 14: 8%) cost less than the narrow tile does.

Widths that already have a tile of 3 or more are left exactly as they were:
padding 27 -> 28 and 111 -> 112 (tile 3 -> 4) was measured as no gain in
squeezenet-synth (docs/performance-notes.md).
"""

from __future__ import annotations

from collections.abc import Callable

from tvm import te

from .tiling import window_extent

CROP_BLOCK = "conv2d_NCHWc_crop"
GOOD_TILE = 3  # the smallest register tile that is left alone
MAX_EXTRA = 1 / 8  # at most this fraction of extra columns


def padded_width(ow: int, tile: Callable[[int], int]) -> int:
    """The width to compute for an output `ow` wide: `ow` itself if `tile(ow)` is good,
    else the next width (at most MAX_EXTRA wider) whose tile is."""
    if tile(ow) >= GOOD_TILE:
        return ow
    for wider in range(ow + 1, ow + int(ow * MAX_EXTRA) + 1):  # none below 8 wide
        if tile(wider) >= GOOD_TILE:
            return wider
    return ow


def wrap(conv: Callable, tile: Callable[[int], int]) -> Callable:
    """`conv(data, weight, strides, padding, dilation)` (an NCHWc TE compute whose width
    is axis 3 of the output) computing a padded width and cropping it when that helps."""

    def ragged_conv(data, weight, strides, padding, dilation):
        w = int(data.shape[3])
        kw = int(weight.shape[3])
        sw, dw = int(strides[1]), int(dilation[1])
        pt, pl, pb, pr = padding
        ow = window_extent(w, pl, pr, kw, sw, dw)
        wider = padded_width(ow, tile)
        if wider == ow:
            return conv(data, weight, strides, padding, dilation)
        # sw more zero columns on the right per extra output column.
        full = conv(data, weight, strides, [pt, pl, pb, pr + (wider - ow) * sw], dilation)
        shape = list(full.shape)
        shape[3] = ow
        return te.compute(shape, lambda *i: full(*i), name=CROP_BLOCK)

    return ragged_conv
