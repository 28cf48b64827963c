"""Run a wasmforge `.wasm` module under wasmtime-py, with memory and time limits.

Only numpy, wasmtime and the standard library are used here, because the smoke
test image (which has no TVM, onnx or docker SDK) runs this same module.

The module sees one private, freshly made directory as `/io`: the inputs are
written there as `.npy` files and the outputs read back from it. A module built
with `--external-params` (its `--info` says `"params": {"external": true, ...}`)
also sees the directory holding its weights file, read-only, as `/model`, and
is passed `--params /model/<file>`; it checks the file's size and sha256
itself. Nothing else of the host file system, no environment variables and no
network are visible.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wasmtime

from .errors import WasmRunError  # noqa: F401 - raised here; lives there so the CLI needs no wasmtime

DEFAULT_MEMORY_LIMIT = 2 << 30  # bytes of linear memory; ResNet50 needs ~230 MiB
DEFAULT_TIME_LIMIT = 600.0  # seconds per invocation
WASM_PAGE = 65536
# Where an external-params module's weights sit: `<name>.params.bin` beside
# `<name>.wasm`, seen by the module read-only under MODEL_DIR.
PARAMS_SUFFIX = ".params.bin"
MODEL_DIR = "/model"
# memory.grow past the store's limit returns -1 (it does not trap), so a
# refused growth shows up as what the module says next: Rust's standard
# library before it aborts, or the runtime's own error for its buffers.
_ALLOC_FAILED = re.compile(r"memory allocation of (\d+) bytes failed|cannot allocate (\d+) bytes")


@dataclass
class RunResult:
    outputs: list[np.ndarray]
    run_ms: list[float]  # per inference, as timed inside the module
    wall_s: float  # instantiate + I/O + inference, as seen from the host


def new_engine(epoch_interruption: bool = True) -> wasmtime.Engine:
    """The one engine configuration for running wasmforge modules (precompiled
    modules only load into an engine configured the same way). The bench also
    measures with `epoch_interruption=False`, to show what the deadline costs."""
    config = wasmtime.Config()
    config.epoch_interruption = epoch_interruption  # lets a timer stop a runaway module
    config.cranelift_opt_level = "speed"
    # The kernels use f32x4.relaxed_madd (FMA); wasmtime enables relaxed SIMD by
    # default, said explicitly so a changed default cannot break the modules.
    config.wasm_relaxed_simd = True
    return wasmtime.Engine(config)


class WasmModel:
    """A compiled module, ready to be instantiated once per run."""

    def __init__(self, wasm_path: Path, *, params_path: Path | None = None,
                 memory_limit: int = DEFAULT_MEMORY_LIMIT, time_limit: float = DEFAULT_TIME_LIMIT):
        """`params_path`: the weights of a module built with `--external-params`
        (default: `<name>.params.bin` beside `<name>.wasm`); whether the module
        needs them is asked of the module itself (`--info`)."""
        self.wasm_path = Path(wasm_path) if wasm_path is not None else None
        self.params_path = Path(params_path) if params_path is not None else None
        self.engine = new_engine()
        self.module = self._load_module()
        self.memory_limit = memory_limit
        self.time_limit = time_limit
        # What the module's memories ask for before any code runs.
        self.initial_memory = sum(item.type.limits.min * WASM_PAGE for item in self.module.exports
                                  if isinstance(item.type, wasmtime.MemoryType))

    def _load_module(self) -> wasmtime.Module:
        return wasmtime.Module.from_file(self.engine, str(self.wasm_path))

    # Observation hooks (the benchmark overrides them); running is unaffected.
    def _instantiated(self, milliseconds: float) -> None:
        pass

    def _finished(self, instance: wasmtime.Instance, store: wasmtime.Store) -> None:
        pass

    def imports(self) -> list[tuple[str, str]]:
        return [(imp.module, imp.name or "") for imp in self.module.imports]

    def info(self) -> dict:
        """The module's own description of its inputs and outputs (`--info`)."""
        with tempfile.TemporaryDirectory(prefix="wasmforge-run-") as tmp:
            stdout = self._invoke(Path(tmp), ["--info"])
        return json.loads(stdout)

    @property
    def external_params(self) -> bool:
        """Whether the module reads its weights from a file (`--external-params`)."""
        params = self._cached_info().get("params")
        return isinstance(params, dict) and params.get("external") is True

    def params_args(self) -> tuple[list[str], Path | None]:
        """The `--params` flag and the directory to show read-only as /model, for
        a module with external weights; `([], None)` for one that embeds them."""
        if not self.external_params:
            if self.params_path is not None:
                raise WasmRunError(f"{self._module_name()} embeds its weights; it takes no "
                                   f"params file ({self.params_path.name})", exit_code=2)
            return [], None
        path = self.params_path
        if path is None and self.wasm_path is not None:
            path = self.wasm_path.with_name(self.wasm_path.stem + PARAMS_SUFFIX)
        if path is None or not path.is_file():
            raise WasmRunError(f"{self._module_name()} keeps its weights in a separate file: "
                               f"{path or 'no params file given'} is missing", exit_code=2)
        return ["--params", f"{MODEL_DIR}/{path.name}"], path.resolve().parent

    def _module_name(self) -> str:
        return self.wasm_path.name if self.wasm_path is not None else "the module"

    def run(self, inputs: list[np.ndarray], repeat: int = 1) -> RunResult:
        params_args, model_dir = self.params_args()
        with tempfile.TemporaryDirectory(prefix="wasmforge-run-") as tmp:
            io_dir = Path(tmp)
            args = list(params_args)
            for index, array in enumerate(inputs):
                np.save(io_dir / f"input{index}.npy", array, allow_pickle=False)
                args += ["--input", f"/io/input{index}.npy"]
            count = len(self.info_outputs)
            for index in range(count):
                args += ["--output", f"/io/output{index}.npy"]
            if repeat != 1:
                args += ["--repeat", str(repeat)]
            started = time.perf_counter()
            _, stderr = self._invoke(io_dir, args, want_stderr=True, model_dir=model_dir)
            wall = time.perf_counter() - started
            outputs = [np.load(io_dir / f"output{i}.npy", allow_pickle=False) for i in range(count)]
        run_ms = []
        for line in stderr.splitlines():
            if line.startswith("{") and "run_ms" in line:
                run_ms = json.loads(line)["run_ms"]
        return RunResult(outputs, run_ms, wall)

    @property
    def info_outputs(self) -> list[dict]:
        return self._cached_info()["outputs"]

    def _cached_info(self) -> dict:
        if not hasattr(self, "_info"):
            self._info = self.info()
        return self._info

    def _invoke(self, io_dir: Path, args: list[str], want_stderr: bool = False,
                model_dir: Path | None = None):
        if self.initial_memory > self.memory_limit:
            raise WasmRunError(f"memory limit exceeded: the module needs {_size(self.initial_memory)} "
                               f"of memory to start (limit {_size(self.memory_limit)})", exit_code=1)
        store, linker = wasi_store(self.engine, io_dir, args, self.memory_limit, model_dir=model_dir)
        stdout_path, stderr_path = io_dir / ".stdout", io_dir / ".stderr"

        timer = threading.Timer(self.time_limit, self.engine.increment_epoch)
        timer.daemon = True
        timer.start()
        exit_code, trap, instance = 0, None, None
        try:
            started = time.perf_counter()
            instance = linker.instantiate(store, self.module)
            self._instantiated((time.perf_counter() - started) * 1e3)
            instance.exports(store)["_start"](store)
        except wasmtime.ExitTrap as exc:
            exit_code = exc.code
        except wasmtime.Trap as exc:
            trap = exc
        except wasmtime.WasmtimeError as exc:  # e.g. memory limit hit at instantiation
            trap = exc
        finally:
            timer.cancel()
        if instance is not None:
            self._finished(instance, store)
        stdout = stdout_path.read_text(errors="replace") if stdout_path.exists() else ""
        stderr = stderr_path.read_text(errors="replace") if stderr_path.exists() else ""
        failed = _ALLOC_FAILED.search(stderr)
        if failed and (trap is not None or exit_code != 0):
            requested = int(failed[1] or failed[2])
            raise WasmRunError(f"memory limit exceeded: an allocation of {_size(requested)} failed "
                               f"(limit {_size(self.memory_limit)})", exit_code=1)
        if trap is not None:
            raise WasmRunError(_describe_trap(trap, self.time_limit, self.memory_limit), exit_code=1)
        if exit_code != 0:
            lines = [ln for ln in stderr.splitlines() if ln.strip()]
            message = lines[-1] if lines else f"module exited with code {exit_code}"
            raise WasmRunError(message.removeprefix("error: "), exit_code=exit_code)
        return (stdout, stderr) if want_stderr else stdout


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.4g} {unit}"
    return f"{nbytes} bytes"


def _describe_trap(trap: Exception, time_limit: float, memory_limit: int) -> str:
    text = str(trap)
    if getattr(trap, "trap_code", None) == wasmtime.TrapCode.INTERRUPT or "interrupt" in text:
        return f"time limit exceeded ({time_limit:g} s)"
    if "exceeds memory limits" in text:  # a memory or table wasmtime refused to create
        return f"memory limit exceeded ({_size(memory_limit)})"
    # wasmtime's text is "error while executing at wasm backtrace: ... Caused
    # by: wasm trap: <reason>"; the reason is the line worth showing.
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    reason = next((ln for ln in reversed(lines) if "wasm trap:" in ln), lines[-1] if lines else "")
    return f"module trapped: {reason.removeprefix('wasm trap: ') or type(trap).__name__}"


def wasi_store(engine: wasmtime.Engine, io_dir: Path, args: list[str], memory_limit: int, *,
               model_dir: Path | None = None) -> tuple[wasmtime.Store, wasmtime.Linker]:
    """A fresh store and WASI linker for one run: at most `memory_limit` bytes of memory,
    stopped by the engine's next epoch, argv `model.wasm *args`, `io_dir` as /io,
    `model_dir` (if given) read-only as /model, and stdout/stderr written to
    io_dir/.stdout and io_dir/.stderr."""
    store = wasmtime.Store(engine)
    store.set_limits(memory_size=memory_limit)
    store.set_epoch_deadline(1)
    wasi = wasmtime.WasiConfig()
    wasi.argv = ["model.wasm", *args]
    wasi.preopen_dir(str(io_dir), "/io")
    if model_dir is not None:
        wasi.preopen_dir(str(model_dir), MODEL_DIR, False)  # fs_mutable=False: read-only
    wasi.stdout_file = str(io_dir / ".stdout")
    wasi.stderr_file = str(io_dir / ".stderr")
    store.set_wasi(wasi)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    return store, linker
