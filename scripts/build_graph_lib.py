#!/usr/bin/env python3
"""ONNX -> TVM Relax -> wasm32 kernels (`libgraph_wasm32.a`), `plan.json`, `params.bin`.

Runs inside the builder image (it needs the pinned TVM and `llvm-ar`), with
nothing host-specific: every input comes from the command line. The plan format
is documented in docs/plan-format.md; the Rust runtime in rust_app/ reads it.

Exit codes: 0 ok, 2 bad model (one `error:` line on stderr), 1 internal failure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

# Only simd128 and relaxed-simd are enabled: the default "generic" wasm CPU
# would also turn on bulk-memory, multivalue, reference-types, ... which not
# every engine has. relaxed-simd + fp contraction turn the convolutions'
# multiply-adds into `f32x4.relaxed_madd` (an FMA under wasmtime on FMA hosts).
# -disable-lsr: LLVM's loop strength reduction drops `nuw` from the address
# arithmetic, and then no constant offset folds into a load's offset field.
# See docs/performance-notes.md.
WASM_TARGET = {
    "kind": "llvm",
    "mtriple": "wasm32-unknown-unknown",
    "mcpu": "mvp",
    "mattr": ["+simd128", "+relaxed-simd"],
    "fast-math-contract": True,
    "cl-opt": ["-disable-lsr"],
}


class ModelError(Exception):
    """The model cannot be built; the message is shown to the user as is."""


def load_onnx(path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelError(f"{path.name} is not a valid ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise ModelError(f"{path.name} is not a valid ONNX model (empty graph)")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise ModelError(f"{path.name} failed the ONNX checker: {first_line}") from None
    return model


def unsupported_ops(model: onnx.ModelProto) -> list[str]:
    """Names of the model's operators the pinned TVM frontend cannot convert."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = _get_convert_map()
    used = {node.op_type for node in model.graph.node if node.domain in ("", "ai.onnx")}
    foreign = {f"{n.domain}.{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")}
    return sorted({op for op in used if op not in known} | foreign)


def graph_inputs(model: onnx.ModelProto, shape_overrides: dict[str, list[int]]) -> list[dict]:
    """The real inputs (not initializers) with static shapes, in ONNX order."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dims = []
        for dim in tensor_type.shape.dim:
            dims.append(dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "?"))
        if value.name in shape_overrides:
            dims = shape_overrides[value.name]
        symbolic = [d for d in dims if not isinstance(d, int)]
        if symbolic:
            raise ModelError(
                f"input '{value.name}' has dynamic dimensions {symbolic}; "
                f"fix them with --input-shape {value.name}=" + "x".join(
                    str(d) if isinstance(d, int) else "N" for d in dims)
            )
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        inputs.append({"name": value.name, "shape": dims, "dtype": np.dtype(dtype).name})
    return inputs


def lower(model: onnx.ModelProto, inputs: list[dict], tuning_db: Path | None = None):
    """Import into Relax, optimise for inference and lower for the wasm32 target."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(
        model,
        shape_dict={i["name"]: i["shape"] for i in inputs},
        dtype_dict={i["name"]: i["dtype"] for i in inputs},
    )
    target = tvm.target.Target(WASM_TARGET)
    inference_passes = tvm.transform.Sequential(
        [
            # Fold BN into the preceding conv's weights while both are still
            # constants; whatever BN remains becomes plain arithmetic that
            # FuseOps can merge into its producer.
            relax.transform.FoldBatchnormToConv2D(),
            relax.transform.DecomposeOpsForInference(),
            relax.transform.FoldConstant(),
            relax.transform.DeadCodeElimination(),
        ]
    )
    mod = inference_passes(mod)
    # Blocked (NCHW8c) convolutions with a hand-written SIMD schedule, then the
    # rest of the CPU pipeline: legalize, fuse, memory planning, VM lowering.
    from optimize import optimize  # scripts/optimize.py

    mod = optimize(mod, target, tuning_db)
    return mod, target


def compile_kernels(mod, target, kernel_names: list[str], out_dir: Path) -> Path:
    """Build the called PrimFuncs into one wasm object and archive it."""
    import tvm
    from tvm import tirx

    funcs = {
        gv: func
        for gv, func in mod.functions.items()
        if isinstance(func, tirx.PrimFunc) and gv.name_hint in kernel_names
    }
    kernels = tvm.IRModule(funcs).with_attr("system_lib_prefix", "")
    from optimize import TIR_PIPELINE  # scripts/optimize.py

    library = tvm.tirx.build(kernels, target, pipeline=TIR_PIPELINE)
    archive = out_dir / "libgraph_wasm32.a"
    with tempfile.TemporaryDirectory() as tmp:
        obj = Path(tmp) / "kernels.o"
        library.write_to_file(str(obj))
        # `D`: deterministic member headers (zero timestamps, uids, modes).
        subprocess.run(["llvm-ar", "rcsD", str(archive.resolve()), obj.name], check=True, cwd=tmp)
    return archive


def toolchain_versions() -> dict[str, str]:
    import tvm
    import tvm_ffi

    from tvm.target import codegen

    return {
        "python": platform.python_version(),
        "tvm": tvm.__version__,
        "tvm-ffi": getattr(tvm_ffi, "__version__", "unknown"),
        # TVM's wheel bundles its own LLVM for code generation (not Debian's).
        "tvm-llvm-major": str(codegen.llvm_version_major()),
        "onnx": onnx.__version__,
        "numpy": np.__version__,
    }


def parse_shape_overrides(specs: list[str]) -> dict[str, list[int]]:
    overrides = {}
    for spec in specs:
        name, sep, dims = spec.partition("=")
        try:
            shape = [int(d) for d in dims.split("x")]
        except ValueError:
            shape = []
        if not sep or not name or not shape or min(shape) < 1:
            raise ModelError(f"bad --input-shape '{spec}' (expected NAME=1x3x224x224)")
        overrides[name] = shape
    return overrides


def build(onnx_path: Path, out_dir: Path, name: str, shape_specs: list[str],
          tuning_db: Path | None = None) -> dict:
    from plan import PlanError, derive_plan  # scripts/plan.py, beside this file

    model = load_onnx(onnx_path)
    missing = unsupported_ops(model)
    if missing:
        raise ModelError(
            f"{onnx_path.name} uses ONNX operators the TVM frontend does not support: "
            + ", ".join(missing)
        )
    inputs = graph_inputs(model, parse_shape_overrides(shape_specs))
    output_names = [o.name for o in model.graph.output]
    try:
        mod, target = lower(model, inputs, tuning_db)
    except Exception as exc:  # the frontend raises many kinds for bad graphs
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"TVM could not import {onnx_path.name}: {message}") from None

    try:
        plan, params = derive_plan(mod["main"], name, [i["name"] for i in inputs], output_names)
    except PlanError as exc:
        raise ModelError(f"cannot plan {onnx_path.name}: {exc}") from None
    compile_kernels(mod, target, sorted({c["kernel"] for c in plan["calls"]}), out_dir)
    (out_dir / "params.bin").write_bytes(params)
    (out_dir / "plan.json").write_text(json.dumps(plan, indent=1, sort_keys=True) + "\n")
    info = {
        "target": WASM_TARGET,
        "versions": toolchain_versions(),
        "inputs": inputs,
        "outputs": [{"name": o["name"], "shape": plan["tensors"][o["tensor"]]["shape"],
                     "dtype": plan["tensors"][o["tensor"]]["dtype"]} for o in plan["outputs"]],
        "kernels": len({c["kernel"] for c in plan["calls"]}),
        "calls": len(plan["calls"]),
        "params_size": len(params),
    }
    (out_dir / "graph-info.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument("--name", required=True, help="model name recorded in the plan")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=1x3x224x224")
    parser.add_argument("--tuning-db", type=Path, help="MetaSchedule database (scripts/tune.py) to apply")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ.setdefault("TVM_LOG_DEBUG", "0")
    try:
        if not args.onnx.is_file():
            raise ModelError(f"no such file: {args.onnx}")
        args.out.mkdir(parents=True, exist_ok=True)
        info = build(args.onnx, args.out, args.name, args.input_shape, args.tuning_db)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"graph: {info['calls']} kernel calls, {info['kernels']} kernels, "
          f"{info['params_size'] / 1e6:.1f} MB of parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
