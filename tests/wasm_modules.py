"""Tiny WAT modules for the unit tests (wasmtime compiles WAT text; no Docker, no TVM).

- `identity_artifact(dir, ...)`: a sealed artifact whose module behaves like a
  wasmforge module with one input and one output of the same shape: `--info`
  prints the JSON description; otherwise it copies /io/input0.npy to
  /io/output0.npy byte for byte.
- `SLEEPER`: blocks in `poll_oneoff` for a day (no wasm code runs meanwhile).
- `SPEWER`: writes 1 MiB to stdout (or stderr) again and again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import wasmtime

from tests.manifests import seal

IMPORTS = """
    (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
    (import "wasi_snapshot_preview1" "path_open"
      (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
"""


def wat_bytes(text: str) -> str:
    """`text` as a WAT string literal, every byte escaped."""
    return '"' + "".join(f"\\{b:02x}" for b in text.encode()) + '"'


def info_json(input_name: str, output_name: str, shape, dtype: str = "float32") -> str:
    tensor = {"dtype": dtype, "shape": list(shape)}
    return json.dumps({"inputs": [{"name": input_name, **tensor}],
                       "outputs": [{"name": output_name, **tensor}]}) + "\n"


def identity_wat(info: str) -> str:
    return f"""(module {IMPORTS}
    (memory (export "memory") 2)
    (data (i32.const 16) {wat_bytes(info)})
    (data (i32.const 2048) "input0.npy")
    (data (i32.const 2080) "output0.npy")
    (func (export "_start")
      (drop (call $args_sizes_get (i32.const 1000) (i32.const 1004)))
      (if (i32.eq (i32.load (i32.const 1000)) (i32.const 2))
        (then
          (i32.store (i32.const 0) (i32.const 16))
          (i32.store (i32.const 4) (i32.const {len(info.encode())}))
          (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
          (return)))
      ;; /io is the first preopen (fd 3): read input0.npy (at most 64 KiB) ...
      (drop (call $path_open (i32.const 3) (i32.const 0) (i32.const 2048) (i32.const 10) (i32.const 0)
                             (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 1008)))
      (i32.store (i32.const 1100) (i32.const 65536))
      (i32.store (i32.const 1104) (i32.const 65536))
      (drop (call $fd_read (i32.load (i32.const 1008)) (i32.const 1100) (i32.const 1) (i32.const 1012)))
      ;; ... and write the same bytes to output0.npy (created, truncated)
      (drop (call $path_open (i32.const 3) (i32.const 0) (i32.const 2080) (i32.const 11) (i32.const 9)
                             (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 1016)))
      (i32.store (i32.const 1200) (i32.const 65536))
      (i32.store (i32.const 1204) (i32.load (i32.const 1012)))
      (drop (call $fd_write (i32.load (i32.const 1016)) (i32.const 1200) (i32.const 1) (i32.const 1020)))))"""


def profile_writer_wat(info: str, profile: str) -> str:
    """The identity module, which also writes `profile` (any text) to /io/profile.json,
    whatever its arguments: a stand-in for a module run with `--profile /io/profile.json`."""
    identity = identity_wat(info)
    body_end = identity.rindex(")))")
    extra = f"""
      (drop (call $path_open (i32.const 3) (i32.const 0) (i32.const 2112) (i32.const 12) (i32.const 9)
                             (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 1024)))
      (i32.store (i32.const 1300) (i32.const 4096))
      (i32.store (i32.const 1304) (i32.const {len(profile.encode())}))
      (drop (call $fd_write (i32.load (i32.const 1024)) (i32.const 1300) (i32.const 1) (i32.const 1028)))"""
    data = f"""(data (i32.const 2112) "profile.json")
    (data (i32.const 4096) {wat_bytes(profile)})
    (func (export "_start")"""
    return (identity[:body_end] + ")" + extra + "))").replace('(func (export "_start")', data, 1)


def identity_artifact(directory: Path, *, input_name: str = "x", output_name: str = "y",
                      shape=(1, 4), dtype: str = "float32", wat: str | None = None) -> Path:
    """dist-like `directory/m/`, sealed (SHA256SUMS, manifest, one reference case) around
    the identity module (or the module `wat`)."""
    artifact = directory / "m"
    (artifact / "reference" / "case0").mkdir(parents=True)
    wat = wat or identity_wat(info_json(input_name, output_name, shape, dtype))
    (artifact / "m.wasm").write_bytes(wasmtime.wat2wasm(wat))
    x = np.arange(np.prod(shape), dtype=dtype).reshape(shape)
    np.save(artifact / "reference" / "case0" / "input0.npy", x)
    np.save(artifact / "reference" / "case0" / "output0.npy", x)
    tensor = {"dtype": dtype, "shape": list(shape)}
    seal(artifact, inputs=[{"name": input_name, **tensor}], outputs=[{"name": output_name, **tensor}],
         reference={"cases": 1, "relative_tolerance": 1e-3, "absolute_floor": 1e-4})
    return artifact


# One clock subscription (at address 0: userdata, tag 0 = clock, clock id 1 =
# monotonic, timeout in ns, precision, flags) for 86,400 s.
SLEEPER = f"""(module {IMPORTS}
    (memory (export "memory") 1)
    (func (export "_start")
      (i32.store8 (i32.const 8) (i32.const 0))
      (i32.store (i32.const 16) (i32.const 1))
      (i64.store (i32.const 24) (i64.const 86400000000000))
      (drop (call $poll_oneoff (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 200)))))"""


def spewer(fd: int = 1) -> str:
    """Writes the 1 MiB at address 65536 to `fd`, forever."""
    return f"""(module {IMPORTS}
    (memory (export "memory") 17)
    (func (export "_start")
      (i32.store (i32.const 0) (i32.const 65536))
      (i32.store (i32.const 4) (i32.const 1048576))
      (loop $again
        (drop (call $fd_write (i32.const {fd}) (i32.const 0) (i32.const 1) (i32.const 8)))
        (br $again))))"""


def refusing_wat(info: str, message: str) -> str:
    """Describes itself like the identity module, then refuses every run: `message` on
    stderr, exit code 2 (as the real runtime does for a bad input file)."""
    return f"""(module {IMPORTS}
    (memory (export "memory") 1)
    (data (i32.const 16) {wat_bytes(info)})
    (data (i32.const 4096) {wat_bytes(message)})
    (func (export "_start")
      (drop (call $args_sizes_get (i32.const 1000) (i32.const 1004)))
      (i32.store (i32.const 0) (i32.const 16))
      (i32.store (i32.const 4) (i32.const {len(info.encode())}))
      (if (i32.eq (i32.load (i32.const 1000)) (i32.const 2))
        (then (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))) (return)))
      (i32.store (i32.const 0) (i32.const 4096))
      (i32.store (i32.const 4) (i32.const {len(message.encode())}))
      (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
      (call $proc_exit (i32.const 2))))"""


def write_module(path: Path, wat: str) -> Path:
    path.write_bytes(wasmtime.wat2wasm(wat))
    return path
