"""The multiply-add interleaving pass: same results bit for bit, a new order only where
it can see every dependency, and the chains of a kernel-like loop interleaved."""

from __future__ import annotations

import numpy as np
import wasmtime

from wasmforge.compiler import interleave as il
from wasmforge.compiler.wasm_code import SIMD, Module


def kernel_wat(accumulators: int = 4, steps: int = 4, body_extra: str = "") -> str:
    """A loop like a conv's register tile: `accumulators` f32x4 sums, each updated
    `steps` times per iteration as one nested expression (as LLVM writes it), from a
    splat of the input and a weight vector; the sums stored at the end."""
    locals_ = " ".join(f"(local $a{k} v128)" for k in range(accumulators))
    updates = []
    for k in range(accumulators):
        expr = f"(local.get $a{k})"
        for s in range(steps):
            expr = (f"(f32x4.relaxed_madd (v128.load32_splat offset={4 * s} (local.get $p)) "
                    f"(v128.load offset={1024 + 16 * (s * accumulators + k)} (i32.const 0)) {expr})")
        updates.append(f"(local.set $a{k} {expr})")
    stores = "".join(f"(v128.store offset={4096 + 16 * k} (i32.const 0) (local.get $a{k}))"
                     for k in range(accumulators))
    return f"""
(module
  (memory (export "mem") 1)
  (func (export "k") (param $n i32) {locals_} (local $p i32)
    (loop $l
      {' '.join(updates)}
      {body_extra}
      (local.set $p (i32.add (local.get $p) (i32.const {4 * steps})))
      (br_if $l (i32.lt_u (local.get $p) (local.get $n))))
    {stores}))
"""


def run(wasm: bytes, n: int = 64) -> np.ndarray:
    engine = wasmtime.Engine(wasmtime.Config())
    store = wasmtime.Store(engine)
    instance = wasmtime.Instance(store, wasmtime.Module(engine, wasm), [])
    memory = instance.exports(store)["mem"]
    data = np.random.default_rng(0).standard_normal(1024, dtype=np.float32)
    memory.write(store, data.tobytes(), 0)
    instance.exports(store)["k"](store, n)
    return np.frombuffer(memory.read(store, 0, 65536), np.uint8).copy()


def madd_accumulators(wasm: bytes) -> list[int]:
    """For each relaxed_madd of the module's function, in order, the index of the
    instruction that pushed its accumulator (its third operand)."""
    instrs = Module.parse(wasm).functions[0].decode()
    found = []
    for i, instr in enumerate(instrs):
        if instr.op == (SIMD << 16) | 261:
            found.append(instrs[i - 1].index)  # the rewrite pushes each operand with local.get
    return found


def test_kernel_loop_is_interleaved_and_computes_the_same_bits():
    source = wasmtime.wat2wasm(kernel_wat())
    rewritten, count = il.interleave(source)
    assert count == 1
    assert rewritten != source
    np.testing.assert_array_equal(run(rewritten), run(source))
    # The first four multiply-adds update the four accumulators (their incoming locals 1-4),
    # not the first accumulator's chain four times.
    assert madd_accumulators(rewritten)[:4] == [1, 2, 3, 4]


def test_rewrite_is_deterministic():
    source = wasmtime.wat2wasm(kernel_wat(accumulators=6, steps=3))
    assert il.interleave(source) == il.interleave(source)


def test_stretches_below_the_threshold_stay_byte_identical():
    source = wasmtime.wat2wasm(kernel_wat(accumulators=1, steps=il.MIN_MULTIPLIES - 1))
    assert il.interleave(source) == (source, 0)


def test_a_store_keeps_later_loads_after_it():
    # Inside the stretch: the first sum is stored where a later weight is loaded from.
    extra = "(v128.store offset=1024 (i32.const 0) (local.get $a0))" \
            "(local.set $a1 (f32x4.relaxed_madd (v128.load offset=1024 (i32.const 0)) (local.get $a2) (local.get $a1)))"
    source = wasmtime.wat2wasm(kernel_wat(body_extra=extra))
    rewritten, count = il.interleave(source)
    assert count == 1
    np.testing.assert_array_equal(run(rewritten), run(source))


def test_locals_swapped_in_the_stretch_keep_their_values():
    extra = "(local.get $a0) (local.get $a1) (local.set $a0) (local.set $a1)" \
            "(local.set $a2 (f32x4.add (local.get $a2) (local.get $a3)))"
    source = wasmtime.wat2wasm(kernel_wat(body_extra=extra))
    rewritten, count = il.interleave(source)
    assert count == 1
    np.testing.assert_array_equal(run(rewritten), run(source))


def test_calls_and_branches_end_a_stretch():
    # A call between two halves of the updates: neither half has enough multiplies alone.
    wat = kernel_wat(accumulators=2, steps=3).replace(
        "(local.set $a1", "(call $f) (local.set $a1").replace(
        '(func (export "k")', '(func $f) (func (export "k")')
    source = wasmtime.wat2wasm(wat)
    assert il.interleave(source) == (source, 0)


def test_a_stretch_that_consumes_values_pushed_before_it_is_left_alone():
    # The call's result is an operand of the stretch's first instruction.
    wat = kernel_wat().replace('(func (export "k")',
                               '(func $g (result v128) (v128.const i64x2 0 0)) (func (export "k")')
    wat = wat.replace("(local.set $a0 (f32x4.relaxed_madd",
                      "(local.set $a0 (f32x4.add (call $g) (f32x4.relaxed_madd", 1)
    wat = wat.replace("(local.get $a0))))))", "(local.get $a0)))))))", 1)
    source = wasmtime.wat2wasm(wat)
    assert il.interleave(source) == (source, 0)


def test_unreachable_code_is_not_rewritten():
    zero = "(v128.const i64x2 0 0)"
    dead = f"(drop (f32x4.relaxed_madd {zero} {zero} {zero}))" * il.MIN_MULTIPLIES
    wat = kernel_wat().replace("(loop $l", f"(block $b (br $b) {dead}) (loop $l")
    source = wasmtime.wat2wasm(wat)
    rewritten, count = il.interleave(source)
    assert count == 1
    wasmtime.Module(wasmtime.Engine(), rewritten)  # validates
    np.testing.assert_array_equal(run(rewritten), run(source))
