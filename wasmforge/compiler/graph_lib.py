"""ONNX -> TVM Relax -> wasm32 kernels (`libgraph_wasm32.a`), `plan.json`, `params.bin`.

Runs inside the builder image (it needs the pinned TVM and `llvm-ar`), with
nothing host-specific: every input comes from one `ModelJob`. The plan format
is documented in docs/plan-format.md; the Rust runtime in rust_app/ reads it.
"""

from __future__ import annotations

import platform
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import onnx

from .frontend import ModelError, graph_inputs, import_relax, load_onnx, unsupported_ops
from .request import DEFAULT_FEATURES, FEATURES


def wasm_target(features: str = DEFAULT_FEATURES) -> dict:
    """TVM's target for the kernels with `features` (a key of request.FEATURES).

    Only the SIMD features are enabled: the default "generic" wasm CPU would
    also turn on bulk-memory, multivalue, reference-types, ... which not every
    engine has. relaxed-simd + fp contraction turn the convolutions'
    multiply-adds into `f32x4.relaxed_madd` (an FMA under wasmtime on FMA
    hosts); with simd128 alone they stay a multiply and an add.
    -disable-lsr: LLVM's loop strength reduction drops `nuw` from the address
    arithmetic, and then no constant offset folds into a load's offset field.
    See docs/performance-notes.md."""
    return {
        "kind": "llvm",
        "mtriple": "wasm32-unknown-unknown",
        "mcpu": "mvp",
        "mattr": list(FEATURES[features]),
        "fast-math-contract": True,
        "cl-opt": ["-disable-lsr"],
    }


WASM_TARGET = wasm_target()


class StageError(ModelError):
    """A model the frontend took failed in a later stage; `stage` names it."""

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage} failed: {message}")
        self.stage = stage


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def lower(model: onnx.ModelProto, inputs: list[dict], tuning_db: Path | None = None,
          warnings: list[str] | None = None, features: str = DEFAULT_FEATURES):
    """Import into Relax, optimise for inference and lower for the wasm32 target."""
    import tvm

    from .optimize import optimize

    try:
        mod = import_relax(model, inputs)
    except Exception as exc:  # the frontend raises many kinds for bad graphs
        raise StageError("import", f"TVM could not import the model: {_last_line(exc)}") from None
    target = tvm.target.Target(wasm_target(features))
    try:
        mod = optimize(mod, target, tuning_db, warnings=warnings)
    except Exception as exc:  # noqa: BLE001 - the default pipeline itself failed
        raise StageError("optimise", _last_line(exc)) from None
    return mod, target


def compile_kernels(mod, target, kernel_names: list[str], out_dir: Path) -> Path:
    """Build the called PrimFuncs into one wasm object and archive it."""
    import tvm
    from tvm import tirx

    from .optimize import TIR_PIPELINE

    funcs = {
        gv: func
        for gv, func in mod.functions.items()
        if isinstance(func, tirx.PrimFunc) and gv.name_hint in kernel_names
    }
    kernels = tvm.IRModule(funcs).with_attr("system_lib_prefix", "")
    library = tvm.tirx.build(kernels, target, pipeline=TIR_PIPELINE)
    archive = out_dir / "libgraph_wasm32.a"
    with tempfile.TemporaryDirectory() as tmp:
        obj = Path(tmp) / "kernels.o"
        library.write_to_file(str(obj))
        # `D`: deterministic member headers (zero timestamps, uids, modes).
        subprocess.run(["llvm-ar", "rcsD", str(archive.resolve()), obj.name], check=True, cwd=tmp)
    return archive


def plan_of(model, inputs, mod, name: str) -> tuple[dict, bytes]:
    """The plan (with each call's op kind and FLOPs) and params of a lowered model, exactly
    as the build writes them: the bench's native run executes this same plan."""
    from .plan import annotate_calls, derive_plan

    output_names = [o.name for o in model.graph.output]
    plan, params = derive_plan(mod["main"], name, [i["name"] for i in inputs], output_names)
    annotate_calls(plan, kernel_flops(mod, {c["kernel"] for c in plan["calls"]}))
    return plan, params


def kernel_flops(mod, kernel_names) -> dict[str, int | None]:
    """{kernel: floating-point operations of one call}, as TVM's TIR analysis
    (`estimate_tir_flops`: arithmetic operations times loop extents, on the scheduled
    PrimFunc) counts them: a multiply-add is two, and the element-wise ops fused
    into a kernel count too. None where the analysis cannot tell (it raises)."""
    import tvm
    from tvm.s_tir.analysis import estimate_tir_flops

    counts: dict[str, int | None] = {}
    for name in sorted(kernel_names):
        try:
            counts[name] = round(float(estimate_tir_flops(tvm.IRModule({"main": mod[name]}))))
        except Exception:  # noqa: BLE001 - a kernel the analysis does not handle
            counts[name] = None
    return counts


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


def prepare_and_lower(onnx_path: Path, shapes: dict[str, list[int]], *,
                      frozen: dict[str, dict] | None = None, tuning_db: Path | None = None,
                      warnings: list[str] | None = None, features: str = DEFAULT_FEATURES):
    """(prepared model, its inputs, lowered module, target): the steps every user of
    the compiler shares, the build and the bench's native run alike."""
    from .prepare import prepare

    model = prepare(load_onnx(onnx_path), onnx_path.parent, shapes, frozen or {}, warnings)
    missing = unsupported_ops(model)
    if missing:
        raise ModelError(
            f"{onnx_path.name} uses ONNX operators the TVM frontend does not support: "
            + ", ".join(missing)
        )
    inputs = graph_inputs(model, shapes)
    mod, target = lower(model, inputs, tuning_db, warnings, features)
    return model, inputs, mod, target


def build_graph(onnx_path: Path, out_dir: Path, name: str, shapes: dict[str, list[int]], *,
                frozen: dict[str, dict] | None = None, tuning_db: Path | None = None,
                warnings: list[str] | None = None, features: str = DEFAULT_FEATURES) -> dict:
    """Write kernels, plan.json and params.bin into `out_dir`; return the graph's description."""
    import json

    from .plan import PlanError

    model, inputs, mod, target = prepare_and_lower(onnx_path, shapes, frozen=frozen, tuning_db=tuning_db,
                                                   warnings=warnings, features=features)
    try:
        plan, params = plan_of(model, inputs, mod, name)
    except PlanError as exc:
        raise StageError("plan", str(exc)) from None
    try:
        compile_kernels(mod, target, sorted({c["kernel"] for c in plan["calls"]}), out_dir)
    except Exception as exc:  # noqa: BLE001 - codegen errors come in many kinds
        raise StageError("compile", _last_line(exc)) from None
    (out_dir / "params.bin").write_bytes(params)
    (out_dir / "plan.json").write_text(json.dumps(plan, indent=1, sort_keys=True) + "\n")
    return {
        "target": wasm_target(features),
        "versions": toolchain_versions(),
        "inputs": inputs,
        "outputs": [{"name": o["name"], "shape": plan["tensors"][o["tensor"]]["shape"],
                     "dtype": plan["tensors"][o["tensor"]]["dtype"]} for o in plan["outputs"]],
        "kernels": len({c["kernel"] for c in plan["calls"]}),
        "calls": len(plan["calls"]),
        "params_size": len(params),
    }
