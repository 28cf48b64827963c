"""Run a wasmforge `.wasm` module under wasmtime, with memory, time and output limits.

Only numpy and the standard library are used here (wasmtime itself only in the
child process, `sandbox.py`), because the smoke test image (which has no TVM,
onnx or docker SDK) runs this same module.

The module runs in a child process (`python -m wasmforge.sandbox`) that
compiles it once and instantiates it afresh for every run. Three limits hold
whatever the module does:
- time: the wall clock here kills the child when a run has taken `time_limit`
  seconds, whether the module computes or waits in a WASI host call (the engine
  has no epoch interruption: its check in every loop costs the kernels 3-17%;
  sandbox.py says why); the next run starts a new child;
- memory: the store's cap on linear memory (`memory_limit`);
- output: the module's stdout and stderr are FIFOs read here up to
  `OUTPUT_LIMIT` bytes each; past that the child is killed. Files it writes
  cannot exceed its memory limit (RLIMIT_FSIZE in the child).

The module sees one private, freshly made directory as `/io`: the inputs are
written there as `.npy` files and the outputs read back from it (each output's
header is checked before its data is read). A module built with
`--external-params` (its `--info` says `"params": {"external": true, ...}`)
also sees the directory holding its weights file, read-only, as `/model`, and
is passed `--params /model/<file>`; it checks the file's size and sha256
itself. Nothing else of the host file system, no environment variables and no
network are visible.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import WasmRunError
from .npyio import NpyError, read_npy

DEFAULT_MEMORY_LIMIT = 2 << 30  # bytes of linear memory; ResNet50 needs ~230 MiB
DEFAULT_TIME_LIMIT = 600.0  # seconds per invocation
OUTPUT_LIMIT = 8 << 20  # bytes a module may write to stdout, and again to stderr, per run
LOAD_TIME_LIMIT = 600.0  # seconds to compile a module in the child
WASM_PAGE = 65536
# Where an external-params module's weights sit: `<name>.params.bin` beside
# `<name>.wasm`, seen by the module read-only under MODEL_DIR.
PARAMS_SUFFIX = ".params.bin"
MODEL_DIR = "/model"
PACKAGE_DIR = Path(__file__).resolve().parent
# memory.grow past the store's limit returns -1 (it does not trap), so a
# refused growth shows up as what the module says next: Rust's standard
# library before it aborts, or the runtime's own error for its buffers.
_ALLOC_FAILED = re.compile(r"memory allocation of (\d+) bytes failed|cannot allocate (\d+) bytes")


def new_engine(epoch_interruption: bool = False):
    """The engine configuration of the sandbox (imports wasmtime)."""
    from .sandbox import new_engine as make

    return make(epoch_interruption)


def wasi_store(*args, **kwargs):
    """See `sandbox.wasi_store` (imports wasmtime)."""
    from .sandbox import wasi_store as make

    return make(*args, **kwargs)


@dataclass
class RunResult:
    outputs: list[np.ndarray]
    run_ms: list[float]  # per inference, as timed inside the module
    wall_s: float  # instantiate + I/O + inference, as seen from the host
    profile: dict | None = None  # the module's --profile document, when asked for


class _Child:
    """The sandbox process: one request at a time, killed on a wall clock."""

    def __init__(self):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(PACKAGE_DIR.parent), os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wasmforge.sandbox"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env, cwd=PACKAGE_DIR.parent, close_fds=True)
        for stream in (self.process.stdout, self.process.stderr):
            os.set_blocking(stream.fileno(), False)
        self.log = bytearray()  # the child's own stderr (its last words, if it dies), bounded

    def request(self, request: dict, deadline: float, streams: dict[str, int] | None = None,
                limit: int = OUTPUT_LIMIT) -> tuple[dict | None, dict[str, bytes], str | None]:
        """Send `request`, then read `streams` (name -> FIFO read fd) until the answer has
        come (what is left in them is for `_drain`). Returns (answer, stream bytes, problem):
        answer None and a problem ("timeout", "output:<name>", "died") when the child had to be
        killed or died."""
        streams = dict(streams or {})
        data = {name: bytearray() for name in streams}
        answer_buffer = bytearray()
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):  # the child is gone
            return None, {k: bytes(v) for k, v in data.items()}, "died"
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ, "answer")
        selector.register(self.process.stderr, selectors.EVENT_READ, "log")
        for name, fd in streams.items():
            selector.register(fd, selectors.EVENT_READ, name)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None, {k: bytes(v) for k, v in data.items()}, "timeout"
                for key, _ in selector.select(min(remaining, 1.0)):
                    chunk = _read(key.fileobj if isinstance(key.fileobj, int) else key.fileobj.fileno())
                    if key.data == "answer":
                        if chunk == b"":
                            return None, {k: bytes(v) for k, v in data.items()}, "died"
                        answer_buffer += chunk or b""
                    elif key.data == "log":
                        if chunk == b"":
                            selector.unregister(key.fileobj)
                        elif chunk:
                            self.log = (self.log + chunk)[-4096:]
                    elif chunk == b"":  # a module stream ended (its store was closed)
                        selector.unregister(key.fileobj)
                        del streams[key.data]
                    elif chunk:
                        data[key.data] += chunk
                        if len(data[key.data]) > limit:
                            return None, {k: bytes(v) for k, v in data.items()}, f"output:{key.data}"
                if b"\n" in answer_buffer:
                    line = bytes(answer_buffer).partition(b"\n")[0]
                    return json.loads(line), {k: bytes(v) for k, v in data.items()}, None
        finally:
            selector.close()

    def last_words(self) -> str:
        lines = [ln for ln in self.log.decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1].strip() if lines else "no output"

    def kill(self) -> None:
        _end(self.process)


def _read(fd: int) -> bytes | None:
    """What is there to read (b"" at the end, None if nothing now)."""
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return None


def _end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        try:
            stream.close()
        except (OSError, ValueError):
            pass


def _cleanup(state: dict) -> None:
    child, state["child"], state["closed"] = state.get("child"), None, True
    if child is not None:
        child.kill()
    shutil.rmtree(state["tmp"], ignore_errors=True)


class WasmModel:
    """A compiled module, instantiated once per run in a sandbox child process.

    Call `close()` (or use it as a context manager) to end the child early;
    otherwise it ends when the object is collected or at exit."""

    def __init__(self, wasm_path: Path | None, *, params_path: Path | None = None,
                 memory_limit: int = DEFAULT_MEMORY_LIMIT, time_limit: float = DEFAULT_TIME_LIMIT,
                 output_limit: int = OUTPUT_LIMIT, sha256: str | None = None):
        """`params_path`: the weights of a module built with `--external-params`
        (default: `<name>.params.bin` beside `<name>.wasm`); whether the module
        needs them is asked of the module itself (`--info`). `sha256`: what the
        .wasm's bytes must hash to (checked on the very bytes compiled)."""
        self.wasm_path = Path(wasm_path) if wasm_path is not None else None
        self.params_path = Path(params_path) if params_path is not None else None
        self.memory_limit = memory_limit
        self.time_limit = time_limit
        self.output_limit = output_limit
        self.sha256 = sha256
        self._lock = threading.Lock()
        self._state = {"tmp": tempfile.mkdtemp(prefix="wasmforge-model-"), "child": None}
        self._finalizer = weakref.finalize(self, _cleanup, self._state)
        self._loaded = self._start()
        self.initial_memory = self._loaded["initial_memory"]

    # --- the child --------------------------------------------------------------

    def _load_request(self) -> dict:
        """How the child gets the module: compiled from the .wasm (again by a child started
        after a kill: a precompiled copy would cost as much disk as the module, e.g. 100 MB
        in the smoke container's small /tmp, for a rare event)."""
        return {"op": "load", "wasm": str(self.wasm_path), "sha256": self.sha256}

    def _start(self) -> dict:
        child = _Child()
        self._state["child"] = child
        answer, _, problem = child.request(self._load_request(), time.monotonic() + LOAD_TIME_LIMIT)
        if answer is None or "error" in answer:
            self._stop_child()
            reason = answer["error"] if answer else ("took too long" if problem == "timeout"
                                                     else f"sandbox died: {child.last_words()}")
            raise WasmRunError(f"cannot load {self._module_name()}: {reason}", exit_code=1)
        return answer

    def _stop_child(self) -> None:
        child = self._state.get("child")
        if child is not None:
            child.kill()
            self._state["child"] = None

    def close(self) -> None:
        self._finalizer()

    def sandbox_peak_rss(self) -> int | None:
        """Peak resident memory (VmHWM) of the sandbox process so far, in bytes (Linux)."""
        child = self._state.get("child")
        if child is None:
            return None
        try:
            for line in Path(f"/proc/{child.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return None

    def __enter__(self) -> WasmModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Observation hooks (the benchmark overrides them); running is unaffected.
    def _instantiated(self, milliseconds: float) -> None:
        pass

    def _finished(self, answer: dict) -> None:
        pass

    # --- what the module says about itself -----------------------------------------

    def imports(self) -> list[tuple[str, str]]:
        return [tuple(pair) for pair in self._loaded["imports"]]

    def info(self) -> dict:
        """The module's own description of its inputs and outputs (`--info`)."""
        with tempfile.TemporaryDirectory(prefix="wasmforge-run-") as tmp:
            stdout = self._invoke(Path(tmp), ["--info"])
        try:
            return json.loads(stdout)
        except ValueError:
            raise WasmRunError(f"{self._module_name()} --info printed no JSON", exit_code=1) from None

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

    @property
    def info_outputs(self) -> list[dict]:
        return self._cached_info()["outputs"]

    def _cached_info(self) -> dict:
        if not hasattr(self, "_info"):
            info = self.info()
            if not isinstance(info, dict) or not isinstance(info.get("outputs", []), list):
                raise WasmRunError(f"{self._module_name()} --info is not a wasmforge description",
                                   exit_code=1)
            self._info = info
        return self._info

    # --- running ------------------------------------------------------------------

    def run(self, inputs: list[np.ndarray], repeat: int = 1, profile: bool = False) -> RunResult:
        """Run the module on `inputs` (`repeat` times in one instance); with `profile`,
        it also times every kernel call (`--profile`) and the result carries its JSON."""
        params_args, model_dir = self.params_args()
        with tempfile.TemporaryDirectory(prefix="wasmforge-run-") as tmp:
            io_dir = Path(tmp)
            args = list(params_args)
            for index, array in enumerate(inputs):
                np.save(io_dir / f"input{index}.npy", array, allow_pickle=False)
                args += ["--input", f"/io/input{index}.npy"]
            outputs = self.info_outputs
            for index in range(len(outputs)):
                args += ["--output", f"/io/output{index}.npy"]
            if repeat != 1:
                args += ["--repeat", str(repeat)]
            if profile:
                args += ["--profile", "/io/profile.json"]
            started = time.perf_counter()
            _, stderr = self._invoke(io_dir, args, want_stderr=True, model_dir=model_dir)
            wall = time.perf_counter() - started
            arrays = [self._read_output(io_dir / f"output{i}.npy", spec) for i, spec in enumerate(outputs)]
            document = self._read_profile(io_dir / "profile.json") if profile else None
        run_ms = []
        for line in stderr.splitlines():
            if line.startswith("{") and "run_ms" in line:
                try:
                    run_ms = json.loads(line)["run_ms"]
                except (ValueError, KeyError, TypeError):
                    pass
        return RunResult(arrays, run_ms, wall, document)

    def _read_profile(self, path: Path) -> dict:
        """The module's --profile JSON: size-capped (it is the module's word, like its output)."""
        try:
            size = path.stat().st_size
            if size > self.output_limit:
                raise WasmRunError(f"the module's profile is {_size(size)}, more than the output limit "
                                   f"{_size(self.output_limit)}", exit_code=1)
            document = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise WasmRunError(f"{self._module_name()} wrote no profile: it was built before --profile "
                               "existed (rebuild it)", exit_code=1) from None
        except ValueError as exc:
            raise WasmRunError(f"{self._module_name()} wrote a profile that is not JSON: {exc}",
                               exit_code=1) from None
        if not isinstance(document, dict):
            raise WasmRunError(f"{self._module_name()} wrote a profile that is not a JSON object", exit_code=1)
        return document

    def _read_output(self, path: Path, spec: dict) -> np.ndarray:
        """An output as the module's --info describes it; the header is checked before any data
        is read, so a lying module cannot make the host allocate what it claims."""
        shape = spec.get("shape") if isinstance(spec, dict) else None
        dtype = spec.get("dtype") if isinstance(spec, dict) else None
        try:
            np.dtype(dtype) if isinstance(dtype, str) else None
        except TypeError:
            raise WasmRunError(f"{self._module_name()} --info names an unknown dtype {dtype!r}",
                               exit_code=1) from None
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            shape = None
        try:
            return read_npy(path, shape=tuple(shape) if isinstance(shape, list) else None,
                            dtype=dtype if isinstance(dtype, str) else None,
                            max_bytes=self.memory_limit, label=f"the module's output {path.name}")
        except NpyError as exc:
            raise WasmRunError(str(exc), exit_code=1) from None

    def _invoke(self, io_dir: Path, args: list[str], want_stderr: bool = False,
                model_dir: Path | None = None, instantiate_only: bool = False):
        if self.initial_memory > self.memory_limit:
            raise WasmRunError(f"memory limit exceeded: the module needs {_size(self.initial_memory)} "
                               f"of memory to start (limit {_size(self.memory_limit)})", exit_code=1)
        with self._lock:
            answer, streams = self._run_in_child(io_dir, args, model_dir, instantiate_only)
        stdout = streams["stdout"].decode(errors="replace")
        stderr = streams["stderr"].decode(errors="replace")
        if not instantiate_only:
            if answer.get("instantiate_ms") is not None:
                self._instantiated(answer["instantiate_ms"])
            self._finished(answer)
        failed = _ALLOC_FAILED.search(stderr)
        trap, exit_code = answer.get("trap"), answer.get("exit_code", 0)
        if failed and (trap is not None or exit_code != 0):
            requested = int(failed[1] or failed[2])
            raise WasmRunError(f"memory limit exceeded: an allocation of {_size(requested)} failed "
                               f"(limit {_size(self.memory_limit)})", exit_code=1)
        if trap is not None:
            raise WasmRunError(trap, exit_code=1)
        if exit_code != 0:
            lines = [ln for ln in stderr.splitlines() if ln.strip()]
            message = lines[-1] if lines else f"module exited with code {exit_code}"
            raise WasmRunError(message.removeprefix("error: "), exit_code=exit_code)
        if instantiate_only:
            return answer
        return (stdout, stderr) if want_stderr else stdout

    def _run_in_child(self, io_dir: Path, args: list[str], model_dir: Path | None,
                      instantiate_only: bool) -> tuple[dict, dict[str, bytes]]:
        if self._state.get("closed"):
            raise WasmRunError(f"{self._module_name()} was closed; load it again", exit_code=1)
        if self._state.get("child") is None:
            self._start()
        child = self._state["child"]
        fifo_dir = Path(tempfile.mkdtemp(prefix="streams-", dir=self._state["tmp"]))
        fds = []
        try:
            readers = {}
            for name in ("stdout", "stderr"):
                os.mkfifo(fifo_dir / name, 0o600)
                readers[name] = os.open(fifo_dir / name, os.O_RDONLY | os.O_NONBLOCK)
                # Held open by us until the answer comes: no end-of-file before the child opens it.
                fds += [readers[name], os.open(fifo_dir / name, os.O_WRONLY | os.O_NONBLOCK)]
            request = {"op": "run", "args": args, "io_dir": str(io_dir),
                       "model_dir": str(model_dir) if model_dir else None,
                       "stdout": str(fifo_dir / "stdout"), "stderr": str(fifo_dir / "stderr"),
                       "memory_limit": self.memory_limit,
                       "file_limit": self.memory_limit + (1 << 20), "instantiate_only": instantiate_only}
            deadline = time.monotonic() + self.time_limit
            writers = fds[1::2]
            answer, streams, problem = child.request(request, deadline, readers, self.output_limit)
            if answer is not None:
                for fd in writers:  # the child closed its ends: now the streams may end
                    os.close(fd)
                    fds.remove(fd)
                answer, more, problem = _drain(child, readers, answer, deadline, self.output_limit, streams)
                streams = more
        finally:
            for fd in fds:
                os.close(fd)
            shutil.rmtree(fifo_dir, ignore_errors=True)
        if problem is not None:
            last_words = child.last_words()
            self._stop_child()
            if problem == "timeout":
                raise WasmRunError(f"time limit exceeded ({self.time_limit:g} s)", exit_code=1)
            if problem.startswith("output:"):
                raise WasmRunError(f"output limit exceeded: the module wrote more than "
                                   f"{_size(self.output_limit)} to {problem[7:]}; stopped", exit_code=1)
            raise WasmRunError(f"the sandbox running {self._module_name()} died: {last_words}", exit_code=1)
        if "error" in answer:
            raise WasmRunError(f"cannot run {self._module_name()}: {answer['error']}", exit_code=1)
        return answer, streams


def _drain(child: _Child, readers: dict[str, int], answer: dict, deadline: float, limit: int,
           streams: dict[str, bytes]) -> tuple[dict | None, dict[str, bytes], str | None]:
    """Read what is left in the module's streams after the answer, to their end."""
    data = {name: bytearray(streams.get(name, b"")) for name in readers}
    selector = selectors.DefaultSelector()
    for name, fd in readers.items():
        selector.register(fd, selectors.EVENT_READ, name)
    try:
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, {k: bytes(v) for k, v in data.items()}, "timeout"
            for key, _ in selector.select(min(remaining, 1.0)):
                chunk = _read(key.fileobj)
                if chunk == b"":
                    selector.unregister(key.fileobj)
                elif chunk:
                    data[key.data] += chunk
                    if len(data[key.data]) > limit:
                        return None, {k: bytes(v) for k, v in data.items()}, f"output:{key.data}"
    finally:
        selector.close()
    return answer, {k: bytes(v) for k, v in data.items()}, None


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.4g} {unit}"
    return f"{nbytes} bytes"
