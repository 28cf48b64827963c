"""Blocked max pools: the padding read in place, the channel block vectorized, same values."""

from __future__ import annotations

import numpy as np
import pytest

from wasmforge.compiler import pool

from .native_checks import run_native


def pool2d(shape, kernel, stride, padding, ceil_mode=False, kind="max", layout="NCHW8c"):
    """(PrimFunc, output shape) of TVM's pool2d."""
    from tvm import te, topi

    x = te.placeholder(shape, name="x")
    y = topi.nn.pool2d(x, kernel, stride, (1, 1), padding, kind, ceil_mode=ceil_mode, layout=layout)
    return te.create_prim_func([x, y]), [int(d) for d in y.shape]


@pytest.mark.parametrize(("shape", "kernel", "stride", "padding", "ceil_mode"), [
    ((1, 2, 111, 111, 8), (3, 3), (2, 2), (0, 0, 0, 0), True),   # SqueezeNet's: pads right/bottom
    ((1, 2, 112, 112, 8), (3, 3), (2, 2), (1, 1, 1, 1), False),  # ResNet50's: pads all sides
    ((1, 1, 9, 9, 4), (2, 2), (1, 1), (0, 0, 0, 0), False),      # no padding at all
])
def test_the_schedule_computes_the_same_pool(shape, kernel, stride, padding, ceil_mode):
    import tvm
    from tvm import tirx

    func, out_shape = pool2d(shape, kernel, stride, padding, ceil_mode)
    scheduled = pool.schedule(func)
    assert scheduled is not None
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": scheduled}))
    assert [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))] == ["pool_max_init",
                                                                                           "pool_max_update"]
    lanes = sch.get_loops(sch.get_sblock("pool_max_update"))[-1]
    assert sch.get(lanes).kind == tirx.ForKind.VECTORIZED
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(run_native(scheduled, [x], out_shape), run_native(func, [x], out_shape))


def test_other_pools_keep_the_default():
    assert pool.schedule(pool2d((1, 2, 9, 9, 8), (3, 3), (2, 2), (1, 1, 1, 1), kind="avg")[0]) is None
    assert pool.schedule(pool2d((1, 2, 9, 9, 3), (3, 3), (2, 2), (1, 1, 1, 1))[0]) is None  # block of 3
    assert pool.schedule(pool2d((1, 16, 9, 9), (3, 3), (2, 2), (1, 1, 1, 1), layout="NCHW")[0]) is None
