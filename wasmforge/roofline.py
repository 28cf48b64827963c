"""The machine's wasm SIMD peak, measured by a register-resident microkernel.

The kernel keeps `ACCUMULATORS` independent f32x4 accumulators in registers
and updates each with `UNROLL` multiply-adds per loop iteration (`a = a * x + y`), so
nothing but the FP pipes limits it: its GFLOP/s is the most any wasm kernel
can get from this engine on this CPU. Two variants:

- `relaxed_madd`: `f32x4.relaxed_madd` (a fused multiply-add where the CPU has
  one: what wasmforge's default build uses);
- `mul_add`: `f32x4.mul` then `f32x4.add` (plain simd128: the portable build).

The bench times both under the runner's engine configuration and reports a
model's GFLOP/s as a share of the first (`% of peak`).
"""

from __future__ import annotations

import time

ACCUMULATORS = 10
UNROLL = 8  # updates of each accumulator per loop iteration: the loop's own cost (and an
#             epoch check at its head, when enabled) stays out of the measurement
LANES = 4
FLOPS_PER_UPDATE = 2  # one multiply, one add per lane
KINDS = ("relaxed_madd", "mul_add")


def _update(kind: str, index: int) -> str:
    acc = f"(local.get $a{index})"
    if kind == "relaxed_madd":
        return f"(local.set $a{index} (f32x4.relaxed_madd {acc} (local.get $x) (local.get $y)))"
    return f"(local.set $a{index} (f32x4.add (f32x4.mul {acc} (local.get $x)) (local.get $y)))"


def kernel_wat() -> str:
    """One module exporting both variants: `(iterations: i32) -> f32` (a checksum, so
    the work cannot be optimised away)."""
    funcs = []
    for kind in KINDS:
        locals_ = " ".join(f"(local $a{i} v128)" for i in range(ACCUMULATORS))
        init = "\n      ".join(f"(local.set $a{i} (f32x4.splat (f32.const {1 + i / 64})))"
                               for i in range(ACCUMULATORS))
        body = "\n        ".join(_update(kind, i) for _ in range(UNROLL) for i in range(ACCUMULATORS))
        total = "(local.get $a0)"
        for i in range(1, ACCUMULATORS):
            total = f"(f32x4.add {total} (local.get $a{i}))"
        funcs.append(f"""
  (func (export "{kind}") (param $n i32) (result f32)
    (local $x v128) (local $y v128) {locals_}
      (local.set $x (f32x4.splat (f32.const 0.9999)))
      (local.set $y (f32x4.splat (f32.const 0.0001)))
      {init}
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        {body}
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (f32x4.extract_lane 0 {total}))""")
    return "(module" + "".join(funcs) + ")\n"


def flops(iterations: int) -> int:
    return iterations * UNROLL * ACCUMULATORS * LANES * FLOPS_PER_UPDATE


def measure(engine, *, min_seconds: float = 0.25, repeats: int = 5) -> dict[str, float]:
    """{kind: best GFLOP/s of `repeats` timed calls of at least ~`min_seconds` each}."""
    import wasmtime

    store = wasmtime.Store(engine)
    # No deadline in the way (an engine without epoch interruption ignores it).
    store.set_epoch_deadline(1 << 62)
    instance = wasmtime.Instance(store, wasmtime.Module(engine, kernel_wat()), [])
    exports = instance.exports(store)
    peaks = {}
    for kind in KINDS:
        run = exports[kind]
        iterations = 1 << 16
        while True:  # calibrate: long enough to dwarf the call overhead
            started = time.perf_counter()
            run(store, iterations)
            elapsed = time.perf_counter() - started
            if elapsed >= min_seconds / 4 or iterations >= 1 << 30:
                break
            iterations *= 4
        best = min(_timed(run, store, iterations) for _ in range(repeats))
        peaks[kind] = flops(iterations) / best / 1e9
    return peaks


def _timed(run, store, iterations: int) -> float:
    started = time.perf_counter()
    run(store, iterations)
    return time.perf_counter() - started
