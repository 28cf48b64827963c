"""The binary reader behind interleave.py: every instruction's extent, sections and
bodies written back byte for byte, rewritten bodies with their new locals."""

from __future__ import annotations

import pytest
import wasmtime

from wasmforge.compiler import wasm_code
from wasmforge.compiler.wasm_code import Module, WasmFormatError

# One of each kind of immediate the reader must step over.
EVERY_IMMEDIATE = """
(module
  (type $t (func (param i32) (result i32)))
  (import "env" "g" (global $imported i32))
  (memory 1)
  (table 2 funcref)
  (global $g (mut i64) (i64.const -7))
  (data "abc")
  (elem (i32.const 0) $f)
  (func $f (param $x i32) (result i32)
    (local $v v128) (local $d f64) (local $e f32)
    (block $out (result i32)
      (loop $l
        (br_table $l $out $l (i32.const 1) (local.get $x))))
    (if (result i32) (local.get $x) (then (i32.const 3)) (else (i32.const 4)))
    drop
    (call_indirect (type $t) (i32.const 0) (i32.const 0)) drop
    (local.set $d (f64.const 1.5)) (local.set $e (f32.const 2.5))
    (global.set $g (i64.const 1234567890123))
    (local.set $v (i8x16.shuffle 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 (v128.const i32x4 1 2 3 4)
                                 (v128.load offset=4 align=4 (i32.const 0))))
    (local.set $v (v128.load32_lane 2 (i32.const 8) (local.get $v)))
    (v128.store64_lane 1 (i32.const 16) (local.get $v))
    (local.set $v (v128.load32_zero (i32.const 0)))
    (drop (f32x4.extract_lane 3 (local.get $v)))
    (memory.fill (i32.const 0) (i32.const 0) (i32.const 0))
    (memory.copy (i32.const 0) (i32.const 4) (i32.const 4))
    (drop (i32.trunc_sat_f32_s (local.get $e)))
    (drop (memory.grow (i32.const 0)))
    (i32.add (global.get $imported) (i32.load8_u offset=3 (i32.const 0)))))
"""


def test_every_instruction_is_stepped_over_exactly():
    wasm = wasmtime.wat2wasm(EVERY_IMMEDIATE)
    module = Module.parse(wasm)
    (function,) = module.functions
    instrs = function.decode()
    assert instrs is not None and instrs[-1].raw == b"\x0b"
    assert b"".join(i.raw for i in instrs) == function.body[function.code_start:]
    assert function.local_types() == [wasm_code.I32, wasm_code.V128, wasm_code.F64, wasm_code.F32]
    assert module.global_types == [wasm_code.I32, wasm_code.I64]  # imported first
    assert module.encode() == wasm


def test_a_replaced_body_gets_its_new_locals_and_the_rest_is_kept():
    wasm = wasmtime.wat2wasm('(module (func (export "a") (result i32) (local i64) (i32.const 1)) (func $b))')
    module = Module.parse(wasm)
    # One new i32 local; the body returns it, set to 5.
    module.functions[0].replace([wasm_code.I32], b"\x41\x05" + wasm_code.local_op(0x21, 1)
                                + wasm_code.local_op(0x20, 1) + b"\x0b")
    rewritten = Module.parse(module.encode())
    assert rewritten.functions[0].local_types() == [wasm_code.I64, wasm_code.I32]
    assert rewritten.functions[1].body == module.functions[1].body
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    instance = wasmtime.Instance(store, wasmtime.Module(engine, module.encode()), [])
    assert instance.exports(store)["a"](store) == 5


def test_an_unknown_operator_leaves_the_body_undecoded():
    with pytest.raises(WasmFormatError):
        wasm_code.decode_instructions(b"\xff\x0b", 0, 2)
    wasm = wasmtime.wat2wasm("(module (func))")
    module = Module.parse(wasm)
    module.functions[0].body = b"\x00\xfe\x0b"  # no locals; an atomics prefix this reader has no table for
    module.functions[0].code_start = 1
    assert module.functions[0].decode() is None


@pytest.mark.parametrize("data", [b"not wasm", b"\0asm\x01\0\0\0\x01\x05\x00"])
def test_bytes_that_are_not_a_module_are_refused(data):
    with pytest.raises(WasmFormatError):
        Module.parse(data)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**32 - 1])
def test_leb128_round_trip(value):
    assert wasm_code.read_uleb(wasm_code.uleb(value), 0) == (value, len(wasm_code.uleb(value)))
