"""ONNX -> Relax -> plan + params, run with native kernels and checked against onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from wasmforge import reference
from wasmforge.compiler import native_plan
from wasmforge.compiler.frontend import graph_inputs
from wasmforge.compiler.graph_lib import lower
from wasmforge.compiler.plan import derive_plan


def plan_and_native(model: onnx.ModelProto, name: str = "m"):
    """(plan, params, NativePlan running it, graph inputs) of `model`, as the build lowers it."""
    inputs = graph_inputs(model, {})
    mod, _ = lower(model, inputs)
    plan, params = derive_plan(mod["main"], name, [i["name"] for i in inputs],
                               [o.name for o in model.graph.output])
    library = native_plan.compile_native(mod, sorted({c["kernel"] for c in plan["calls"]}))
    return plan, params, native_plan.NativePlan(plan, params, library), inputs


def assert_matches_onnxruntime(model: onnx.ModelProto, path: Path, cases: int = 3) -> dict:
    """Saves `model` to `path`; the native plan's outputs equal onnxruntime's on `cases`
    seeded inputs. Returns the plan."""
    onnx.save(model, path)
    plan, _, native, inputs = plan_and_native(model)
    sess = reference.session(path)
    for seed in range(cases):
        x = reference.seeded_inputs(inputs, seed)
        comparison = reference.compare(native.run(x), reference.run_reference(sess, x))
        assert comparison.ok, comparison
        assert comparison.max_abs_diff < 1e-4
    return plan


def run_native(mod, inputs: list[np.ndarray], out_shape) -> np.ndarray:
    """Build `mod` (a PrimFunc or an IRModule holding one) for the host and call it on
    `inputs`; its float32 output of `out_shape`."""
    import tvm

    if isinstance(mod, tvm.tirx.PrimFunc):
        mod = tvm.IRModule({"main": mod})
    kernel = tvm.tirx.build(mod, tvm.target.Target("llvm"))
    out = tvm.runtime.tensor(np.zeros(out_shape, np.float32))
    kernel(*(tvm.runtime.tensor(a) for a in inputs), out)
    return out.numpy()
