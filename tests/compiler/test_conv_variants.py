"""The direct conv's schedule variants: valid choices only, the hand rule first, and
every variant computes the same convolution (run natively against numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from wasmforge.compiler import conv_variants, optimize

from .convs import conv_bias_relu
from .native_checks import run_native


def expected(data, weight, bias):
    # out[o, y, x, c] = sum over (i, r) of data[i, y, x, r] * weight[o, i, 0, 0, r, c]
    out = np.einsum("niyxr,oir c->noyxc".replace(" ", ""), data, weight[:, :, 0, 0]) + bias
    return np.maximum(out, 0.0)


def test_choices_divide_their_loops_fit_the_registers_and_start_with_the_rule():
    found = conv_variants.choices(56, 32, 8, optimize._ow_tile(56))
    assert found[0] == (8, 1, 4)  # the rule: 8-pixel tiles, steps of 4 input channels
    assert (8, 1, 8) in found and (4, 1, 4) in found
    assert len(found) == len(set(found)) > 10
    for pixels, blocks, unroll in found:
        assert 56 % pixels == 0 and 32 % blocks == 0 and 8 % unroll == 0
        assert pixels * blocks * 2 <= conv_variants.MAX_ACCUMULATORS


def test_a_prime_width_and_an_odd_channel_count_keep_what_divides():
    found = conv_variants.choices(7, 3, 8, 7)
    assert found[0] == (7, 1, 4)  # the rule: steps of 4 channels, whatever the tile
    assert (7, 1, 8) in found
    assert all(pixels == 7 and blocks == 1 for pixels, blocks, _ in found)
    assert conv_variants.choices(13, 1, 3, 1) == [(1, 1, 3)]


def test_not_a_conv_gives_no_variants():
    from tvm import te

    a = te.placeholder((4, 4), name="a")
    func = te.create_prim_func([a, te.compute((4, 4), lambda i, j: a[i, j] * 2.0, name="b")])
    assert conv_variants.variants(func) == []


def test_every_variant_computes_the_convolution():
    func = conv_bias_relu(16, 32, 4, 8)
    found = conv_variants.variants(func)
    labels = [label for label, _ in found]
    assert labels[0] == "tile=8 blocks=1 unroll=4"
    assert {"tile=4 blocks=1 unroll=4", "tile=4 blocks=1 unroll=8", "tile=2 blocks=2 unroll=4", "tile=8 blocks=1 unroll=2"} <= set(labels)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((1, 2, 4, 8, 8)).astype(np.float32)
    weight = rng.standard_normal((4, 2, 1, 1, 8, 8)).astype(np.float32)
    bias = rng.standard_normal((1, 4, 1, 1, 8)).astype(np.float32)
    want = expected(data, weight, bias)
    for label, sch in found:
        out = run_native(sch.mod, [data, weight, bias], want.shape)
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4, err_msg=label)


@pytest.mark.parametrize("index", [1, 5])
def test_a_variant_replays_from_its_trace(index):
    """The build applies a tuning record by replaying its trace on the unscheduled PrimFunc."""
    import tvm
    from tvm import s_tir

    func = conv_bias_relu(16, 32, 4, 8)
    label, sch = conv_variants.variants(func)[index]
    replayed = s_tir.Schedule(tvm.IRModule({"main": func}))
    sch.trace.apply_to_schedule(replayed, remove_postproc=False)
    tvm.ir.assert_structural_equal(replayed.mod, sch.mod)


def test_every_winograd_variant_computes_the_convolution():
    from tvm import te

    from wasmforge.compiler import winograd

    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)  # OIHW
    u = winograd.transform_weights(w.reshape(2, 8, 2, 8, 3, 3).transpose(0, 2, 4, 5, 3, 1).copy(), 2)
    data = te.placeholder((1, 2, 8, 8, 8), name="data")
    u_in = te.placeholder(u.shape, name="u")
    func = te.create_prim_func([data, u_in, winograd.conv2d_winograd(data, u_in, (1, 1, 1, 1), 2)])
    found = conv_variants.variants(func)
    assert [label for label, _ in found][0] == f"tile={winograd._gemm_tile(4, 4)} blocks=1 unroll=4"
    assert len(found) > 5
    x = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.zeros((1, 16, 8, 8), np.float32)
    for dy in range(3):
        for dx in range(3):
            want += np.einsum("nchw,kc->nkhw", padded[:, :, dy:dy + 8, dx:dx + 8], w[:, :, dy, dx])
    want_blocked = want.reshape(1, 2, 8, 8, 8).transpose(0, 1, 3, 4, 2)
    x_blocked = x.reshape(1, 2, 8, 8, 8).transpose(0, 1, 3, 4, 2).copy()
    for label, sch in found:
        out = run_native(sch.mod, [x_blocked, u], want_blocked.shape)
        np.testing.assert_allclose(out, want_blocked, rtol=1e-3, atol=1e-3, err_msg=label)
