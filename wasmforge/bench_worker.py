"""One engine of `invoke bench`, measured in its own process.

`python -m wasmforge.bench_worker REQUEST.json` runs one step and writes
`result.json` (and `outputN.npy`) into the request's `out_dir`. Each step runs
in a fresh process so that its peak resident set size belongs to
that engine alone, and compiling (Cranelift, TVM) happens in separate
*preparation* steps whose memory is not charged to the engine.

Peak RSS is the high-water mark of the worker's own address space (VmHWM;
`getrusage` elsewhere), taken right after the timed runs.

Steps:
  ort           onnxruntime CPU session with `threads` intra-op threads
  wasm-compile  compile the .wasm with wasmtime and serialize it (`.cwasm`)
  wasm          deserialize the precompiled module and run it (`--repeat`)
  wasi          a precompiled WASI command without the runner: this project's
                module with epoch interruption on, or the tract peer
  roofline      the machine's wasm SIMD peak (wasmforge/roofline.py)
  tvm-compile   ONNX -> Relax (as for the wasm build) -> kernels for the host
                CPU, exported as a shared library with the plan and params
  tvm-native    load that library and run the plan with compiler/native_plan.py

Progress goes to stdout as lines starting with EVENT_PREFIX and a JSON
object; anything else a library prints is ignored by the parent. An expected
failure ends with `{"error": ...}` in result.json and exit code 1; a missing
TVM ends with `{"skipped": ...}` and exit code 0.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EVENT_PREFIX = "@bench-event "


class StepError(Exception):
    """A failure worth one line in the bench report (not a traceback)."""


class Skip(Exception):
    """The engine is not available on this host."""


# --- helpers ----------------------------------------------------------------


def emit(**event) -> None:
    print(EVENT_PREFIX + json.dumps(event), flush=True)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far.

    On Linux this is VmHWM, the high-water mark of this process's own address
    space: `getrusage`'s ru_maxrss is not usable in a worker because Linux
    carries it over fork and exec, so a worker would report at least the
    parent's RSS at the time it was started.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # "VmHWM:   123456 kB"
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB elsewhere


def summary(times_ms: list[float]) -> dict:
    return {
        "min_ms": min(times_ms),
        "median_ms": statistics.median(times_ms),
        "max_ms": max(times_ms),
        "times_ms": [round(t, 4) for t in times_ms],
    }


def timed_runs(call, runs: int) -> tuple[float, list[float], object]:
    """One warm-up call, then `runs` timed calls; returns (warm-up ms, times ms, last result)."""
    started = time.perf_counter()
    result = call()
    warmup_ms = (time.perf_counter() - started) * 1e3
    emit(kind="run", done=1)
    times = []
    for index in range(runs):
        started = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - started) * 1e3)
        emit(kind="run", done=index + 2)
    return warmup_ms, times, result


def load_inputs(paths: list[str]) -> list[np.ndarray]:
    return [np.load(p, allow_pickle=False) for p in paths]


def save_outputs(out_dir: Path, outputs) -> None:
    for index, array in enumerate(outputs):
        np.save(out_dir / f"output{index}.npy", np.asarray(array), allow_pickle=False)


def _import_tvm():
    try:
        import tvm
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken native library
        first = str(exc).strip().splitlines()
        raise Skip(f"TVM is not importable on this host ({type(exc).__name__}"
                   f"{': ' + first[0] if first else ''})") from None
    return tvm


# --- onnxruntime --------------------------------------------------------------


def step_ort(request: dict, out_dir: Path) -> dict:
    import onnxruntime

    from wasmforge import reference

    inputs = load_inputs(request["inputs"])
    baseline = peak_rss_bytes()
    emit(kind="phase", text="creating session")
    started = time.perf_counter()
    sess = reference.session(Path(request["onnx"]), threads=request["threads"])
    session_ms = (time.perf_counter() - started) * 1e3
    feed = dict(zip([i.name for i in sess.get_inputs()], inputs, strict=True))
    emit(kind="phase", text="running")
    warmup_ms, times, outputs = timed_runs(lambda: sess.run(None, feed), request["runs"])
    save_outputs(out_dir, outputs)
    return {
        **summary(times),
        "warmup_ms": warmup_ms,
        "load_ms": session_ms,
        "threads": request["threads"],
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak_rss_bytes(),
        "version": onnxruntime.__version__,
    }


# --- wasmtime ---------------------------------------------------------------


def _wasmtime_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wasmtime")
    except PackageNotFoundError:
        return "unknown"


def step_wasm_compile(request: dict, out_dir: Path) -> dict:
    import wasmtime

    from wasmforge.runner import new_engine

    engine = new_engine(epoch_interruption=request.get("epoch", False))
    emit(kind="phase", text="compiling with Cranelift")
    started = time.perf_counter()
    try:
        module = wasmtime.Module.from_file(engine, request["wasm"])
    except wasmtime.WasmtimeError as exc:
        from wasmforge.sandbox import describe_error

        raise StepError(f"wasmtime cannot compile {Path(request['wasm']).name}: {describe_error(exc)}") from None
    compile_ms = (time.perf_counter() - started) * 1e3
    cwasm = out_dir / "module.cwasm"
    cwasm.write_bytes(module.serialize())
    return {"compile_ms": compile_ms, "cwasm": str(cwasm), "cwasm_bytes": cwasm.stat().st_size,
            "version": _wasmtime_version()}


def _bench_model_class():
    """WasmModel that also records instantiation times and the linear memory size."""
    from wasmforge.runner import WasmModel

    class BenchWasmModel(WasmModel):
        def __init__(self, cwasm: Path, memory_limit: int, time_limit: float,
                     params_path: Path | None = None):
            self.cwasm = cwasm
            self.instantiate_ms: list[float] = []
            self.linear_memory_bytes = 0
            # wasm_path None: an external-params module then needs params_path.
            super().__init__(None, params_path=params_path, memory_limit=memory_limit,
                             time_limit=time_limit)

        def _load_request(self) -> dict:
            # Precompiled by the compile step: deserialized, not compiled here.
            return {"op": "load", "cwasm": str(self.cwasm)}

        def _instantiated(self, milliseconds: float) -> None:
            self.instantiate_ms.append(milliseconds)

        def _finished(self, answer: dict) -> None:
            # Linear memory never shrinks: its size at the end is its peak.
            self.linear_memory_bytes = max(self.linear_memory_bytes, answer.get("memory_bytes") or 0)

        def instantiate_only(self) -> float:
            """Milliseconds to instantiate (data segments copied, nothing run), in the sandbox."""
            with tempfile.TemporaryDirectory(prefix="wasmforge-bench-") as tmp:
                answer = self._invoke(Path(tmp), ["--info"], instantiate_only=True)
            return answer["instantiate_ms"]

    return BenchWasmModel


def step_wasm(request: dict, out_dir: Path) -> dict:
    from wasmforge.runner import DEFAULT_MEMORY_LIMIT, DEFAULT_TIME_LIMIT, WasmRunError

    inputs = load_inputs(request["inputs"])
    runs = request["runs"]
    baseline = peak_rss_bytes()
    # The runner's time limit is per invocation; here one invocation runs `runs + 1` inferences.
    params = Path(request["params"]) if request.get("params") else None
    model = _bench_model_class()(Path(request["cwasm"]), DEFAULT_MEMORY_LIMIT, DEFAULT_TIME_LIMIT * (runs + 1),
                                 params_path=params)
    try:
        model.info_outputs  # noqa: B018 - one `--info` invocation, outside the timed run
        # The module runs in the runner's sandbox process: its memory is what counts.
        baseline = model.sandbox_peak_rss() or baseline
        emit(kind="phase", text=f"{runs + 1} inferences inside one instance (first is warm-up)")
        result = model.run(inputs, repeat=runs + 1)
    except WasmRunError as exc:
        raise StepError(f"the module failed: {exc}") from None
    if len(result.run_ms) != runs + 1:
        raise StepError(f"the module reported {len(result.run_ms)} timings for --repeat {runs + 1}")
    emit(kind="run", done=runs + 1)
    peak_after_run = model.sandbox_peak_rss() or peak_rss_bytes()
    save_outputs(out_dir, result.outputs)
    emit(kind="phase", text="timing instantiation")
    try:
        instantiate = model.instantiate_ms + [model.instantiate_only() for _ in range(max(2, min(runs, 10)))]
    except WasmRunError as exc:
        raise StepError(f"the module failed to instantiate: {exc}") from None
    finally:
        model.close()
    return {
        **summary(result.run_ms[1:]),
        "warmup_ms": result.run_ms[0],
        "instantiate_ms": statistics.median(instantiate),
        "instantiate_min_ms": min(instantiate),
        "load_ms": statistics.median(instantiate),
        "linear_memory_bytes": model.linear_memory_bytes,
        "threads": 1,
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak_after_run,
        "version": _wasmtime_version(),
    }


def run_wasi(request: dict, args: list[str], io_dir: Path) -> tuple[str, str]:
    """One `_start` of a precompiled WASI command with `io_dir` as /io; (stdout, stderr).

    The engine is the runner's, with or without epoch interruption as the
    request says; with it, a timer ends the run after the time limit, so the
    setting pays what an in-process deadline would pay in use."""
    import threading

    import wasmtime

    from wasmforge.runner import DEFAULT_MEMORY_LIMIT, DEFAULT_TIME_LIMIT, new_engine
    from wasmforge.sandbox import wasi_store

    epoch = request["epoch"]
    engine = new_engine(epoch_interruption=epoch)
    module = wasmtime.Module.deserialize_file(engine, request["cwasm"])
    # stdout/stderr to io_dir/.stdout and .stderr (a trusted peer: no pipes needed)
    store, linker = wasi_store(engine, io_dir, args, DEFAULT_MEMORY_LIMIT)
    timer = None
    if epoch:
        timer = threading.Timer(DEFAULT_TIME_LIMIT * (request["runs"] + 1), engine.increment_epoch)
        timer.daemon = True
        timer.start()
    code = 0
    try:
        linker.instantiate(store, module).exports(store)["_start"](store)
    except wasmtime.ExitTrap as exc:
        code = exc.code
    except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise StepError(f"the module trapped: {lines[-1] if lines else type(exc).__name__}") from None
    finally:
        if timer is not None:
            timer.cancel()
    stdout = (io_dir / ".stdout").read_text(errors="replace")
    stderr = (io_dir / ".stderr").read_text(errors="replace")
    if code != 0:
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        raise StepError(f"the module exited with {code}: {lines[-1] if lines else 'no message'}")
    return stdout, stderr


def _timings_line(text: str, key: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith("{") and key in line:
            return json.loads(line)
    raise StepError(f"the module printed no timings ({key})")


def step_wasi(request: dict, out_dir: Path) -> dict:
    """A wasm engine without the runner: this project's module (`flavor` wasmforge,
    timed by its `--repeat`) or the tract peer (`flavor` tract, which loads the
    ONNX file inside wasm and prints its own timings). Warm-up and timed runs all
    happen inside one instance, as for the `wasm` step."""
    inputs = load_inputs(request["inputs"])
    runs, outputs = request["runs"], request["outputs"]
    baseline = peak_rss_bytes()
    with tempfile.TemporaryDirectory(prefix="wasmforge-bench-") as tmp:
        io_dir = Path(tmp)
        args = []
        if request["flavor"] == "tract":
            _place(Path(request["onnx"]), io_dir / "model.onnx")
            args += ["--model", "/io/model.onnx", "--runs", str(runs)]
        else:
            args += ["--repeat", str(runs + 1)]
        for index, array in enumerate(inputs):
            np.save(io_dir / f"input{index}.npy", array, allow_pickle=False)
            args += ["--input", f"/io/input{index}.npy"]
        args += [a for i in range(outputs) for a in ("--output", f"/io/output{i}.npy")]
        emit(kind="phase", text=f"{runs + 1} inferences inside one instance (first is warm-up)")
        stdout, stderr = run_wasi(request, args, io_dir)
        emit(kind="run", done=runs + 1)
        peak = peak_rss_bytes()
        save_outputs(out_dir, [np.load(io_dir / f"output{i}.npy", allow_pickle=False) for i in range(outputs)])
    if request["flavor"] == "tract":
        timings = _timings_line(stdout, "times_ms")
        warmup, times, load = timings["warmup_ms"], timings["times_ms"], timings["load_ms"]
    else:
        run_ms = _timings_line(stderr, "run_ms")["run_ms"]
        warmup, times, load = run_ms[0], run_ms[1:], None
    if len(times) != runs:
        raise StepError(f"the module reported {len(times)} timings for {runs} runs")
    return {**summary(times), "warmup_ms": warmup, "load_ms": load, "threads": 1,
            "baseline_rss_bytes": baseline, "peak_rss_bytes": peak, "version": _wasmtime_version()}


def step_roofline(request: dict, out_dir: Path) -> dict:
    """The wasm SIMD peak (wasmforge/roofline.py) under both engine configurations."""
    from wasmforge import roofline
    from wasmforge.runner import new_engine

    emit(kind="phase", text="register-resident f32x4 multiply-adds")
    return {"epoch_on": roofline.measure(new_engine(True)), "epoch_off": roofline.measure(new_engine(False))}


def _place(source: Path, target: Path) -> None:
    """The ONNX file inside the module's /io: a hard link where possible (it may be large)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


# --- TVM, natively ------------------------------------------------------------


def _lower_for_host(request: dict):
    """The plan and kernels exactly as the wasm build derives them, kernels built for the host."""
    from .compiler import native_plan
    from .compiler.graph_lib import plan_of, prepare_and_lower

    overrides = {i["name"]: list(i["shape"]) for i in request["graph_inputs"]}
    emit(kind="phase", text="lowering with TVM Relax")
    # The build's own preparation too (folding, quirks, RNN unrolling): the same plan as the wasm.
    model, inputs, mod, _ = prepare_and_lower(Path(request["onnx"]), overrides)
    plan, params = plan_of(model, inputs, mod, request["name"])
    emit(kind="phase", text="compiling kernels for the host CPU")
    library = native_plan.compile_native(mod, sorted({c["kernel"] for c in plan["calls"]}))
    return plan, params, library, native_plan.NATIVE_TARGET


def step_tvm_compile(request: dict, out_dir: Path) -> dict:
    tvm = _import_tvm()
    started = time.perf_counter()
    try:
        plan, params, library, target = _lower_for_host(request)
    except Exception as exc:  # noqa: BLE001 - the frontend and codegen raise many kinds
        text = str(exc).strip().splitlines()
        raise StepError(f"TVM could not build the model natively: {text[-1] if text else type(exc).__name__}") \
            from None
    (out_dir / "plan.json").write_text(json.dumps(plan))
    (out_dir / "params.bin").write_bytes(params)
    result = {
        "compile_s": time.perf_counter() - started,
        "target": str(tvm.target.Target(target)),
        "kernel_calls": len(plan["calls"]),
        "kernels": len({c["kernel"] for c in plan["calls"]}),
        "version": tvm.__version__,
        "plan": str(out_dir / "plan.json"),
        "params": str(out_dir / "params.bin"),
        "library": None,
    }
    artifact_plan = request.get("artifact_plan")
    if artifact_plan and Path(artifact_plan).is_file():
        # The artifact keeps the plan its .wasm embeds: the native run must execute the same one.
        result["same_plan_as_wasm"] = json.loads(Path(artifact_plan).read_text()) == json.loads(json.dumps(plan))
    try:
        library.export_library(str(out_dir / "kernels.so"))
        result["library"] = str(out_dir / "kernels.so")
    except Exception as exc:  # noqa: BLE001 - e.g. no C compiler/linker on the host
        result["export_error"] = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return result


def step_tvm_native(request: dict, out_dir: Path) -> dict:
    os.environ["TVM_NUM_THREADS"] = "1"  # before the runtime starts its pool
    tvm = _import_tvm()
    from .compiler import native_plan

    inputs = load_inputs(request["inputs"])
    baseline = peak_rss_bytes()
    started = time.perf_counter()
    if request.get("library"):
        library = tvm.runtime.load_module(request["library"])
        plan = json.loads(Path(request["plan"]).read_text())
        params = Path(request["params"]).read_bytes()
    else:  # the library could not be exported: compile here (peak RSS includes compiling)
        plan, params, library, _ = _lower_for_host(request)
    runner = native_plan.NativePlan(plan, params, library)
    load_ms = (time.perf_counter() - started) * 1e3
    emit(kind="phase", text="running")
    warmup_ms, times, outputs = timed_runs(lambda: runner.run(inputs), request["runs"])
    save_outputs(out_dir, outputs)
    return {
        **summary(times),
        "warmup_ms": warmup_ms,
        "load_ms": load_ms,
        "threads": 1,
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak_rss_bytes(),
        "version": tvm.__version__,
    }


STEPS = {
    "ort": step_ort,
    "wasm-compile": step_wasm_compile,
    "wasm": step_wasm,
    "wasi": step_wasi,
    "roofline": step_roofline,
    "tvm-compile": step_tvm_compile,
    "tvm-native": step_tvm_native,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m wasmforge.bench_worker REQUEST.json", file=sys.stderr)
        return 2
    request = json.loads(Path(argv[0]).read_text())
    out_dir = Path(request["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    code = 0
    try:
        result = STEPS[request["step"]](request, out_dir)
    except Skip as exc:
        result = {"skipped": str(exc)}
    except StepError as exc:
        result, code = {"error": str(exc)}, 1
    result.setdefault("python", platform.python_version())
    (out_dir / "result.json").write_text(json.dumps(result, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
