"""Time TIR kernels as wasm under wasmtime: MetaSchedule's builder and runner for tune.py.

Build (`link_kernel`): one PrimFunc -> a wasm32 object with the build's own
target and TIR pipeline (graph_lib.wasm_target, optimize.TIR_PIPELINE) ->
`wasm-ld` -> interleave.py's rewrite (as in the module) -> a small .wasm exporting
`__tvm_ffi_kernel` and its memory; the kernel's few imports (workspace, error setter, memset/memcpy) come from the host.

Run (`WasmKernel`): instantiate it in the engine the project's modules run in
(sandbox.new_engine: Cranelift `speed`, relaxed SIMD, no epoch interruption:
the check changes which schedule wins, so candidates are timed without it as
the runner runs them; no deadline either: a candidate is TIR with bounded
loops made by MetaSchedule from the build's own workload, not foreign code),
lay the DLTensors and TVMFFIAny arguments out in linear memory (the ABI in
../shared/notes/tvm-wasm-facts.md), fill the inputs with seeded random data and
time calls from the host: `number` calls per repeat, median of repeats.

`builder()` / `WasmRunner` plug that into MetaSchedule; `measure_func` times a
hand-scheduled PrimFunc in the same harness, so the two compare directly.
"""

from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from .interleave import interleave

KERNEL = "kernel"  # the linked module exports __tvm_ffi_kernel
SYMBOL = f"__tvm_ffi_{KERNEL}"
WASM_PAGE = 65536
ALIGN = 64
ANY_SIZE = 16  # TVMFFIAny: int32 type_index, uint32 padding, 8-byte union
DLTENSOR_SIZE = 40  # wasm32: data@0 device@4 ndim@12 dtype@16 shape@20 strides@24 byte_offset@32
DLTENSOR_PTR = 7  # kTVMFFIDLTensorPtr
DL_CODES = {"int": 0, "uint": 1, "float": 2}
STACK_BYTES = 1 << 20


def wasm_linker() -> list[str] | None:
    """The command that links wasm objects: `wasm-ld` (the builder image has LLVM 19's), else
    the `rust-lld` of a host's Rust toolchain in its wasm flavour; None if neither is there."""
    for name in ("wasm-ld", "wasm-ld-19"):
        path = shutil.which(name)
        if path:
            return [path]
    rustc = shutil.which("rustc")
    if rustc:
        done = subprocess.run([rustc, "--print", "sysroot"], capture_output=True, text=True, check=False)
        for lld in sorted(Path(done.stdout.strip() or "/nonexistent").glob("lib/rustlib/*/bin/rust-lld")):
            return [str(lld), "-flavor", "wasm"]
    return None


def _wasm_ld() -> list[str]:
    linker = wasm_linker()
    if linker is None:
        raise RuntimeError("no wasm linker: wasm-ld (in the builder image) or a Rust toolchain's rust-lld")
    return linker


def _libc() -> Path | None:
    """The wasi-libc the Rust wasm32-wasip1 std links (builder image): memset/memcpy as the
    real module has them. Without it (a host with no Rust wasm target) the harness serves
    them from the host: correct, but far slower than in the real module."""
    for root in ("/usr/lib/rustlib", "/usr/local/lib/rustlib"):
        path = Path(root) / "wasm32-wasip1" / "lib" / "self-contained" / "libc.a"
        if path.is_file():
            return path
    return None


def link_kernel(func, target=None, out_dir: Path | None = None) -> Path:
    """Compile one PrimFunc exactly as graph_lib.compile_kernels does and link it into
    `<out_dir>/kernel.wasm` (a fresh temporary directory by default)."""
    import tvm

    from .graph_lib import WASM_TARGET
    from .optimize import TIR_PIPELINE

    target = tvm.target.Target(target or WASM_TARGET)
    func = func.with_attr("global_symbol", KERNEL)
    kernels = tvm.IRModule({KERNEL: func}).with_attr("system_lib_prefix", "")
    library = tvm.tirx.build(kernels, target, pipeline=TIR_PIPELINE)
    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="wasm-measure-"))
    obj, wasm = out_dir / "kernel.o", out_dir / "kernel.wasm"
    library.write_to_file(str(obj))
    libc = _libc()
    linked = subprocess.run([*_wasm_ld(), "--no-entry", f"--export={SYMBOL}", "--allow-undefined",
                             "-z", f"stack-size={STACK_BYTES}", "-O2", str(obj)]
                            + ([str(libc)] if libc else []) + ["-o", str(wasm)],
                            capture_output=True, text=True)
    if linked.returncode:
        raise RuntimeError(f"wasm-ld failed: {linked.stderr.strip()}")
    obj.unlink()
    wasm.write_bytes(interleave(wasm.read_bytes())[0])  # as module.build_wasm does
    return wasm


def _primfunc(mod):
    from tvm import tirx

    funcs = [f for f in mod.functions.values() if isinstance(f, tirx.PrimFunc)]
    if len(funcs) != 1:
        raise ValueError(f"expected one PrimFunc, got {len(funcs)}")
    return funcs[0]


def ms_build(mod, target, _params):
    """MetaSchedule f_build (runs in its builder's worker process): the linked .wasm's path."""
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return str(link_kernel(_primfunc(mod), target))


def ms_export(artifact: str) -> str:
    return artifact  # ms_build already wrote the file


def builder(timeout: float = 60.0):
    """A one-worker LocalBuilder that links each candidate into a .wasm."""
    from tvm.s_tir import meta_schedule as ms

    return ms.builder.LocalBuilder(max_workers=1, timeout_sec=timeout, f_build=ms_build, f_export=ms_export)


def arg_specs(func) -> list[tuple[tuple[int, ...], str]]:
    """(shape, dtype) of each buffer parameter of a PrimFunc, in order."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    return _specs_of(ArgInfo.from_prim_func(func))


def _host_func(store, params, results, fn):
    import wasmtime

    kinds = {"i32": wasmtime.ValType.i32(), "i64": wasmtime.ValType.i64(),
             "f32": wasmtime.ValType.f32(), "f64": wasmtime.ValType.f64()}
    return wasmtime.Func(store, wasmtime.FuncType([kinds[p] for p in params], [kinds[r] for r in results]), fn)


class WasmKernel:
    """One linked kernel instantiated with its arguments laid out in linear memory.

    `inputs[i]` / `output(i)` are numpy views of argument i's data; `call()` runs
    the kernel once (raising with the kernel's own error text on failure);
    `time(number, repeat)` gives seconds per call for each repeat.
    """

    def __init__(self, wasm: bytes | Path, specs: list[tuple[tuple[int, ...], str]], *,
                 seed: int = 0, workspace: int | None = None, engine=None):
        import wasmtime

        from ..sandbox import new_engine

        self.engine = engine or new_engine()
        data = wasm.read_bytes() if isinstance(wasm, Path) else wasm
        module = wasmtime.Module(self.engine, data)
        self.store = wasmtime.Store(self.engine)
        self.store.set_epoch_deadline(1)
        self.memory = None
        self.error = ""
        linker = wasmtime.Linker(self.engine)
        for item in module.imports:
            linker.define(self.store, item.module, item.name, self._import(item))
        instance = linker.instantiate(self.store, module)
        exports = instance.exports(self.store)
        self.memory, self.kernel = exports["memory"], exports[SYMBOL]
        self._layout(specs, seed, workspace)

    # -- imports ---------------------------------------------------------------------------
    def _import(self, item):
        import wasmtime

        if not isinstance(item.type, wasmtime.FuncType):
            raise RuntimeError(f"kernel imports {item.module}.{item.name}, which is not a function")
        name = f"{item.module}.{item.name}"
        params = [str(p) for p in item.type.params]
        results = [str(r) for r in item.type.results]
        known = {
            "env.TVMBackendAllocWorkspace": self._alloc,
            "env.TVMBackendFreeWorkspace": lambda *_: 0,
            "env.TVMFFIErrorSetRaisedFromCStrParts": self._error_parts,
            "env.TVMFFIErrorSetRaisedFromCStr": lambda kind, msg: self._set_error(kind, [msg]),
            "env.TVMFFIEnvModRegisterSystemLibSymbol": lambda *_: 0,
            "env.memset": self._memset,
            "env.memcpy": self._memmove,
            "env.memmove": self._memmove,
        }
        if name in known:
            return _host_func(self.store, params, results, known[name])

        def missing(*_):
            raise RuntimeError(f"the kernel called {name}, which the harness does not provide")

        return _host_func(self.store, params, results, missing)

    def _base(self) -> int:
        return ctypes.addressof(self.memory.data_ptr(self.store).contents)

    def _cstr(self, ptr: int) -> str:
        return ctypes.string_at(self._base() + ptr).decode("utf-8", "replace") if ptr else ""

    def _set_error(self, kind: int, parts: list[int]) -> None:
        self.error = f"{self._cstr(kind)}: " + "".join(self._cstr(p) for p in parts)

    def _error_parts(self, kind: int, parts: int, count: int) -> None:
        raw = ctypes.string_at(self._base() + parts, 4 * count)
        self._set_error(kind, list(struct.unpack(f"<{count}I", raw)))

    def _memset(self, dst: int, value: int, size: int) -> int:
        ctypes.memset(self._base() + dst, value, size)
        return dst

    def _memmove(self, dst: int, src: int, size: int) -> int:
        ctypes.memmove(self._base() + dst, self._base() + src, size)
        return dst

    def _alloc(self, _device_type, _device_id, nbytes, _code, _bits) -> int:
        start = -(-self._heap // ALIGN) * ALIGN
        if start + nbytes > self._heap_end:
            return 0  # the kernel reports the failed allocation
        self._heap = start + nbytes
        return start

    # -- arguments -------------------------------------------------------------------------
    def _layout(self, specs, seed: int, workspace: int | None) -> None:
        rng = np.random.default_rng(seed)
        sizes = [int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize for shape, dtype in specs]
        workspace = workspace if workspace is not None else 2 * sum(sizes) + (16 << 20)
        pages = self.memory.size(self.store)
        cursor = start = pages * WASM_PAGE

        def take(nbytes: int) -> int:
            nonlocal cursor
            cursor = -(-cursor // ALIGN) * ALIGN
            where, cursor = cursor, cursor + nbytes
            return where

        self._result = take(ANY_SIZE)
        self._args = take(ANY_SIZE * len(specs))
        tensors = [take(DLTENSOR_SIZE) for _ in specs]
        shapes = [take(8 * max(len(shape), 1)) for shape, _ in specs]
        datas = [take(size) for size in sizes]
        self._heap = self._heap_start = take(workspace)
        self._heap_end = cursor
        self.memory.grow(self.store, -(-(cursor - start) // WASM_PAGE))
        base = self._base()
        self.arrays = []
        for i, ((shape, dtype), tensor, shape_at, data_at) in enumerate(zip(specs, tensors, shapes, datas)):
            dt = np.dtype(dtype)
            code = DL_CODES["float" if dt.kind == "f" else "uint" if dt.kind == "u" else "int"]
            ctypes.memmove(base + self._args + ANY_SIZE * i, struct.pack("<iIQ", DLTENSOR_PTR, 0, tensor), ANY_SIZE)
            ctypes.memmove(base + tensor, struct.pack("<IiiiBBHII4xQ", data_at, 1, 0, len(shape), code,
                                                     dt.itemsize * 8, 1, shape_at, 0, 0), DLTENSOR_SIZE)
            if shape:
                ctypes.memmove(base + shape_at, struct.pack(f"<{len(shape)}q", *shape), 8 * len(shape))
            array = np.ctypeslib.as_array((ctypes.c_uint8 * sizes[i]).from_address(base + data_at))
            array = array.view(dt).reshape(shape)
            if dt.kind == "f":
                array[...] = rng.standard_normal(shape, dtype=np.float32).astype(dt)
            else:
                array[...] = rng.integers(0, 4, size=shape).astype(dt)
            self.arrays.append(array)
        self.count = len(specs)

    # -- running ---------------------------------------------------------------------------
    def call(self) -> None:
        self._heap = self._heap_start
        code = self.kernel(self.store, 0, self._args, self.count, self._result)
        if code != 0:
            raise RuntimeError(self.error or f"the kernel returned {code}")

    def time(self, number: int, repeat: int) -> list[float]:
        self.call()  # warm-up (and the error check)
        runs = []
        for _ in range(repeat):
            begin = time.perf_counter()
            for _ in range(number):
                self.call()
            runs.append((time.perf_counter() - begin) / number)
        return runs

    def timed(self, min_repeat_ms: float = 100.0, repeat: int = 5) -> list[float]:
        """Seconds per call of each repeat, `number` chosen so that a repeat lasts about
        `min_repeat_ms`."""
        begin = time.perf_counter()
        self.call()
        once = max(time.perf_counter() - begin, 1e-6)
        number = max(1, round(min_repeat_ms / 1000.0 / once))
        return self.time(number, repeat)


def measure_wasm(wasm: Path, specs, *, min_repeat_ms: float = 100.0, repeat: int = 5, engine=None) -> list[float]:
    return WasmKernel(wasm, specs, engine=engine).timed(min_repeat_ms, repeat)


def measure_func(func, target=None, **kwargs) -> float:
    """Seconds per call of a (scheduled) PrimFunc, built and run as wasm: the fastest
    repeat, the one least disturbed by whatever else the machine runs (a kernel's own
    time does not vary: only interference adds to it)."""
    with tempfile.TemporaryDirectory(prefix="wasm-measure-") as tmp:
        wasm = link_kernel(func, target, Path(tmp))
        return float(min(measure_wasm(wasm, arg_specs(func), **kwargs)))


def measure_funcs(funcs, target=None, *, rounds: int = 7, min_repeat_ms: float = 100.0) -> list[float]:
    """Seconds per call of each PrimFunc, timed in turns (one repeat of each per round),
    so that a change of load on a shared machine hits them all alike; the fastest
    round of each, as measure_func does (interference only ever adds time)."""
    from ..sandbox import new_engine

    engine = new_engine()
    with tempfile.TemporaryDirectory(prefix="wasm-measure-") as tmp:
        kernels = []
        for index, func in enumerate(funcs):
            out_dir = Path(tmp) / str(index)
            out_dir.mkdir()
            kernels.append(WasmKernel(link_kernel(func, target, out_dir), arg_specs(func), engine=engine))
        runs: list[list[float]] = [[] for _ in kernels]
        for _ in range(rounds):
            for kernel, times in zip(kernels, runs):
                times.extend(kernel.timed(min_repeat_ms, repeat=1))
        return [float(min(times)) for times in runs]


def _specs_of(args_info) -> list[tuple[tuple[int, ...], str]]:
    return [(tuple(int(d) for d in info.shape), str(info.dtype)) for info in args_info]


def make_runner(min_repeat_ms: float = 50.0, repeat: int = 3):
    """A MetaSchedule runner timing each built candidate under wasmtime, in this process."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class WasmRunner(ms.runner.PyRunner):
        def __init__(self):
            super().__init__()
            from ..sandbox import new_engine

            self.engine = new_engine()

        def run(self, runner_inputs):
            futures = []
            for item in runner_inputs:
                try:
                    secs = measure_wasm(Path(item.artifact_path), _specs_of(item.args_info),
                                        min_repeat_ms=min_repeat_ms, repeat=repeat, engine=self.engine)
                    result = ms.runner.RunnerResult(secs, None)
                except Exception as exc:  # noqa: BLE001 - a bad candidate: MetaSchedule records the error
                    result = ms.runner.RunnerResult(None, f"WasmRunner: {type(exc).__name__}: {exc}")
                futures.append(ms.runner.RunnerFuture(f_done=lambda: True, f_result=lambda r=result: r))
            return futures

    return WasmRunner()
