"""The wasm harness: a kernel built as the build builds it, run under wasmtime, its
outputs equal numpy's (so a wrong argument layout fails here), timed."""

from __future__ import annotations

import numpy as np
import pytest

from wasmforge.compiler import optimize, wasm_measure

pytestmark = pytest.mark.skipif(wasm_measure.wasm_linker() is None,
                                reason="needs wasm-ld (the builder image) or a Rust toolchain's rust-lld")


def conv_func(h=10, w=12, ic=2, oc=2, pad=1):
    from tvm import te

    data = te.placeholder((1, ic, h, w, 8), name="data")
    weight = te.placeholder((oc, ic, 3, 3, 8, 8), name="weight")
    out = optimize._conv2d_nchwc(data, weight, (1, 1), (pad, pad, pad, pad), (1, 1))
    return te.create_prim_func([data, weight, out])


def conv_reference(data, weight, pad=1):
    """NCHW8c data, OIHW8i8o weight, 3x3 stride 1 -> NCHW8c."""
    n, _, h, w, _ = data.shape
    padded = np.pad(data, ((0, 0), (0, 0), (pad, pad), (pad, pad), (0, 0)))
    oh, ow = h + 2 * pad - 2, w + 2 * pad - 2
    out = np.zeros((n, weight.shape[0], oh, ow, 8), np.float64)
    for y in range(3):
        for x in range(3):
            out += np.einsum("nchwi,ocij->nohwj", padded[:, :, y:y + oh, x:x + ow], weight[:, :, y, x])
    return out


def test_hand_scheduled_conv_runs_like_numpy(tmp_path):
    func = optimize.schedule_conv(conv_func())
    wasm = wasm_measure.link_kernel(func, out_dir=tmp_path)
    kernel = wasm_measure.WasmKernel(wasm, wasm_measure.arg_specs(func), seed=3)
    data, weight, out = kernel.arrays
    assert np.abs(data).max() > 0 and np.abs(weight).max() > 0  # seeded random inputs
    out[...] = np.nan
    kernel.call()
    np.testing.assert_allclose(out, conv_reference(data, weight), rtol=1e-4, atol=1e-4)
    times = kernel.timed(min_repeat_ms=5, repeat=3)
    assert len(times) == 3 and all(0 < t < 1 for t in times)


def test_unscheduled_kernel_with_workspace_runs_like_numpy(tmp_path):
    """TVM's default schedule keeps pad_temp as its own buffer (a workspace allocation)."""
    func = conv_func(h=5, w=7, ic=1, oc=1)
    wasm = wasm_measure.link_kernel(func, out_dir=tmp_path)
    kernel = wasm_measure.WasmKernel(wasm, wasm_measure.arg_specs(func))
    kernel.call()
    data, weight, out = kernel.arrays
    np.testing.assert_allclose(out, conv_reference(data, weight), rtol=1e-4, atol=1e-4)


def test_a_wrong_argument_shape_fails_with_the_kernels_message(tmp_path):
    func = optimize.schedule_conv(conv_func())
    wasm = wasm_measure.link_kernel(func, out_dir=tmp_path)
    specs = wasm_measure.arg_specs(func)
    (shape, dtype), rest = specs[0], specs[1:]
    kernel = wasm_measure.WasmKernel(wasm, [((shape[0], shape[1], shape[2] + 1, *shape[3:]), dtype), *rest])
    with pytest.raises(RuntimeError, match="shape"):
        kernel.call()


def test_measure_func_gives_seconds_per_call():
    seconds = wasm_measure.measure_func(optimize.schedule_conv(conv_func()), min_repeat_ms=5, repeat=3)
    assert 0 < seconds < 1


def test_measure_funcs_times_each_kernel_in_turns():
    small, large = optimize.schedule_conv(conv_func(h=4, w=8)), optimize.schedule_conv(conv_func(h=32, w=32, ic=4))
    fast, slow = wasm_measure.measure_funcs([small, large], rounds=3, min_repeat_ms=5)
    assert 0 < fast < slow  # 4x the channels and 32x the pixels: far more work


def test_a_failed_link_says_the_linkers_message(tmp_path, monkeypatch):
    failing = ["sh", "-c", "echo 'undefined symbol: x' >&2; exit 1", "ld"]
    monkeypatch.setattr(wasm_measure, "_wasm_ld", lambda: failing)
    with pytest.raises(RuntimeError, match="wasm-ld failed: undefined symbol: x"):
        wasm_measure.link_kernel(optimize.schedule_conv(conv_func()), out_dir=tmp_path)
