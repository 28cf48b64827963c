"""float16 -> float64 casts: a module LLVM's wasm backend can compile, exact for every half."""

from __future__ import annotations

import numpy as np
import pytest

from wasmforge.compiler import half, wasm_measure


@pytest.mark.skipif(wasm_measure.wasm_linker() is None,
                    reason="needs wasm-ld (the builder image) or a Rust toolchain's rust-lld")
def test_every_half_becomes_the_same_double_as_wasm(tmp_path):
    """All 65,536 bit patterns (zeros, subnormals, normals, infinities, NaNs) through the
    kernel as wasmtime runs it; TVM's own lowering of this cast is an invalid module."""
    from tvm import te

    x = te.placeholder((1 << 16,), "float16", name="x")
    func = te.create_prim_func([x, half._half_to_double(x)])
    kernel = wasm_measure.WasmKernel(wasm_measure.link_kernel(func, out_dir=tmp_path),
                                     wasm_measure.arg_specs(func))
    halves = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    kernel.arrays[0][...] = halves
    kernel.call()
    got, want = kernel.arrays[1].copy(), halves.astype(np.float64)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint64), want[~nan].view(np.uint64))  # -0.0 too


def test_only_half_to_double_is_legalized_here():
    import tvm
    from tvm import relax
    from tvm.script import relax as R

    def lowered(source: str, target: str) -> list[str]:
        bb = relax.BlockBuilder()
        x = relax.Var("x", R.Tensor((4,), source))
        with bb.function("main", [x]):
            bb.emit_func_output(bb.emit(relax.op.astype(x, target)))
        mod = relax.transform.LegalizeOps(half.LEGALIZE)(bb.get())
        return [gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]

    assert lowered("float16", "float64") == ["half_to_double"]
    assert "half_to_double" not in lowered("float32", "float64")
    assert "half_to_double" not in lowered("float16", "float32")
