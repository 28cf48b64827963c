"""`python -m wasmforge.sandbox`: the child process in which `runner.WasmModel` runs a module.

Why a child process: the time limit is the parent's wall clock, which kills
this process when a run has taken `time_limit` seconds, whatever the module is
doing (computing, or blocked inside a WASI host call: `poll_oneoff` asked to
sleep a day, a read that never returns). The engine has no epoch interruption:
its check at every loop head costs the kernels 3-17% (Cranelift keeps every
loop-carried vector in memory across the check's runtime call; measured in
docs/performance-notes.md), and the kill stops everything the check would,
and host calls besides. The compiled module lives here and is reused across
runs; each run gets a fresh store and instance (a WASI command's `_start` runs
once per instance); after a kill the parent starts a new child, which compiles
the module again.

Protocol: one JSON request per line on stdin, one JSON answer per line on
stdout. The module's own stdout and stderr are the FIFOs the parent names in
each request: the parent reads them with a cap, so a module that writes without
end blocks here (and is killed) instead of filling a disk or the parent's memory.

Standard library and wasmtime only (the smoke image runs this too).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import signal
import sys
import threading
import time
from pathlib import Path

import wasmtime

WASM_PAGE = 65536
MODEL_DIR = "/model"


def new_engine(epoch_interruption: bool = False) -> wasmtime.Engine:
    """The one engine configuration for running wasmforge modules (precompiled
    modules only load into an engine configured the same way). The bench also
    measures with `epoch_interruption=True`, to show what an in-process deadline
    would cost (the tract peer pays more for it than this project's kernels)."""
    config = wasmtime.Config()
    config.epoch_interruption = epoch_interruption
    config.cranelift_opt_level = "speed"
    # The kernels use f32x4.relaxed_madd (FMA); wasmtime enables relaxed SIMD by
    # default, said explicitly so a changed default cannot break the modules.
    config.wasm_relaxed_simd = True
    return wasmtime.Engine(config)


def wasi_store(engine: wasmtime.Engine, io_dir: Path, args: list[str], memory_limit: int, *,
               model_dir: Path | None = None, stdout: str | None = None,
               stderr: str | None = None) -> tuple[wasmtime.Store, wasmtime.Linker]:
    """A fresh store and WASI linker for one run: at most `memory_limit` bytes of memory,
    stopped by the engine's next epoch (if it has epoch interruption), argv
    `model.wasm *args`, `io_dir` as /io, `model_dir` (if given) read-only as /model,
    and stdout/stderr written to the paths given (FIFOs, from the parent), by default
    io_dir/.stdout and io_dir/.stderr."""
    store = wasmtime.Store(engine)
    store.set_limits(memory_size=memory_limit)
    store.set_epoch_deadline(1)
    wasi = wasmtime.WasiConfig()
    wasi.argv = ["model.wasm", *args]
    wasi.preopen_dir(str(io_dir), "/io")
    if model_dir is not None:
        wasi.preopen_dir(str(model_dir), MODEL_DIR, False)  # fs_mutable=False: read-only
    wasi.stdout_file = stdout or str(Path(io_dir) / ".stdout")
    wasi.stderr_file = stderr or str(Path(io_dir) / ".stderr")
    store.set_wasi(wasi)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    return store, linker


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.4g} {unit}"
    return f"{nbytes} bytes"


def describe_error(exc: Exception) -> str:
    """One line for a wasmtime error: its first line and, when it has a cause chain
    ("Caused by: 0: ... 1: ..."), the innermost cause, which says what went wrong
    ("failed to compile: wasm[0]::function[40]" alone does not)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    if "Caused by:" in lines:
        causes = lines[lines.index("Caused by:") + 1:]
        if causes:
            return f"{lines[0]}: {re.sub(r'^[0-9]+: ', '', causes[-1])}"
    return lines[0]


def describe_trap(trap: Exception, memory_limit: int) -> str:
    text = str(trap)
    if "exceeds memory limits" in text:  # a memory or table wasmtime refused to create
        return f"memory limit exceeded ({_size(memory_limit)})"
    # wasmtime's text is "error while executing at wasm backtrace: ... Caused
    # by: wasm trap: <reason>"; the reason is the line worth showing.
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    reason = next((ln for ln in reversed(lines) if "wasm trap:" in ln), lines[-1] if lines else "")
    return f"module trapped: {reason.removeprefix('wasm trap: ') or type(trap).__name__}"


class Sandbox:
    def __init__(self):
        self.engine = new_engine()
        self.module: wasmtime.Module | None = None

    def load(self, request: dict) -> dict:
        """Compile `wasm` (checking its bytes against `sha256` when given) or load the
        precompiled `cwasm`."""
        started = time.perf_counter()
        if request.get("cwasm"):
            self.module = wasmtime.Module.deserialize_file(self.engine, request["cwasm"])
        elif request.get("sha256"):
            # Hashed and compiled from the same bytes: the file cannot change in between.
            data = Path(request["wasm"]).read_bytes()
            if hashlib.sha256(data).hexdigest() != request["sha256"]:
                return {"error": f"{Path(request['wasm']).name} changed since its hash was checked"}
            self.module = wasmtime.Module(self.engine, data)
            del data
        else:
            self.module = wasmtime.Module.from_file(self.engine, request["wasm"])
        return {
            "compile_ms": (time.perf_counter() - started) * 1e3,
            "imports": [[imp.module, imp.name or ""] for imp in self.module.imports],
            # What the module's memories ask for before any code runs.
            "initial_memory": sum(item.type.limits.min * WASM_PAGE for item in self.module.exports
                                  if isinstance(item.type, wasmtime.MemoryType)),
        }

    def run(self, request: dict) -> dict:
        memory_limit = request["memory_limit"]
        # A module cannot write a file larger than its memory could hold (its
        # outputs come from there): bounds what it leaves in /io.
        resource.setrlimit(resource.RLIMIT_FSIZE, (request["file_limit"], resource.RLIM_INFINITY))
        model_dir = Path(request["model_dir"]) if request.get("model_dir") else None
        store, linker = wasi_store(self.engine, Path(request["io_dir"]), request["args"], memory_limit,
                                   model_dir=model_dir, stdout=request["stdout"], stderr=request["stderr"])
        answer = {"exit_code": 0, "trap": None, "instantiate_ms": None, "memory_bytes": 0}
        instance = None
        try:  # no deadline here: the parent kills this process at the time limit
            started = time.perf_counter()
            instance = linker.instantiate(store, self.module)
            answer["instantiate_ms"] = (time.perf_counter() - started) * 1e3
            if not request.get("instantiate_only"):
                instance.exports(store)["_start"](store)
        except wasmtime.ExitTrap as exc:
            answer["exit_code"] = exc.code
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:  # the latter: e.g. memory at instantiation
            answer["trap"] = describe_trap(exc, memory_limit)
        if instance is not None:
            for export in instance.exports(store).values():
                if isinstance(export, wasmtime.Memory):  # never shrinks: this is its peak
                    answer["memory_bytes"] = max(answer["memory_bytes"], export.data_len(store))
        del instance, linker
        store.close()  # closes the module's stdout/stderr: the parent sees their end
        return answer


def _exit_with_parent(parent: int) -> None:
    """End this process when the parent is gone (even while a module waits in a host call)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def main() -> int:
    # A write past RLIMIT_FSIZE fails with EFBIG (the module sees an error) instead of killing us.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # Ctrl-C reaches the whole process group: the parent handles it and ends this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    # Nothing else may write into the answer channel (wasmtime's own messages go to stderr).
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sandbox = Sandbox()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = sandbox.load(request) if request["op"] == "load" else sandbox.run(request)
        except (wasmtime.WasmtimeError, OSError) as exc:
            answer = {"error": describe_error(exc)}
        answers.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
