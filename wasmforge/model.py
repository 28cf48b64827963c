"""The Python API: `wasmforge.load(dist_dir)` -> `Model`, then `model.run({name: array})`.

    import numpy as np, wasmforge
    model = wasmforge.load("dist/lenet-digits")       # hashes checked, module compiled once
    model.inputs                                      # [Tensor(name='input', dtype='float32', shape=(1, 1, 8, 8))]
    scores = model.run({"input": x})["output"]        # {output name: array}

`load` checks `SHA256SUMS` and the manifest before anything is compiled (and
the module's bytes are hashed again as they are compiled), so a tampered
artifact raises `wasmforge.Error` with a one-line message. The compiled module
is kept in a sandbox child process (see `runner.py`) and reused by every
`run`; each run gets a fresh instance: the module is a WASI command whose
`_start` runs once per instance (tried on lenet-digits: the first call ends
in `proc_exit(0)`, a second call on the same instance traps with `unreachable`,
wasi-libc's guard), and an instance stopped by a limit is in no state to be
reused. Instantiating costs ~0.05 ms for lenet-digits.
Every run has the runner's limits: `time_limit` seconds (wall clock, also
while the module waits in a host call), `memory_limit` bytes of linear memory,
capped stdout/stderr.

numpy and the standard library only (the smoke image uses this too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .artifact import Manifest, verify_artifact
from .errors import UserError
from .runner import DEFAULT_MEMORY_LIMIT, DEFAULT_TIME_LIMIT, WasmModel


@dataclass(frozen=True)
class Tensor:
    """One input or output of a model, as its manifest records it."""

    name: str
    dtype: str
    shape: tuple[int, ...]


class Model:
    """A verified artifact, compiled and ready to run. Use `wasmforge.load` to make one."""

    def __init__(self, directory: Path, manifest: Manifest, *, time_limit: float = DEFAULT_TIME_LIMIT,
                 memory_limit: int = DEFAULT_MEMORY_LIMIT):
        """`manifest` must come from `verify_artifact(directory)`."""
        self.directory = Path(directory)
        self.manifest = manifest
        self.name = manifest.name or self.directory.name
        self.inputs = [Tensor(t.name, t.dtype, tuple(t.shape)) for t in manifest.inputs]
        self.outputs = [Tensor(t.name, t.dtype, tuple(t.shape)) for t in manifest.outputs]
        params = manifest.params_file
        record = manifest.files.get(manifest.wasm)
        self._module = WasmModel(self.directory / manifest.wasm,
                                 params_path=self.directory / params if params else None,
                                 time_limit=time_limit, memory_limit=memory_limit,
                                 sha256=record.sha256 if record is not None else None)

    @property
    def wasm(self) -> WasmModel:
        """The underlying module runner (limits, `--info`, imports)."""
        return self._module

    def __repr__(self) -> str:
        return f"<wasmforge.Model {self.name}: {len(self.inputs)} input(s), {len(self.outputs)} output(s)>"

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """`feeds` as the module's inputs in order, C order, little-endian; a wrong name,
        dtype or shape is one clear error."""
        if not isinstance(feeds, Mapping):
            raise UserError(f"run() takes a dict {{input name: array}}, got {type(feeds).__name__}")
        names = [t.name for t in self.inputs]
        unknown = [str(k) for k in feeds if k not in names]
        if unknown:
            raise UserError(f"{self.name} has no input named {', '.join(map(repr, unknown))}; "
                            f"its inputs: {', '.join(names)}")
        missing = [n for n in names if n not in feeds]
        if missing:
            raise UserError(f"missing input {', '.join(map(repr, missing))} of {self.name}")
        arrays = []
        for spec in self.inputs:
            value = feeds[spec.name]
            if not isinstance(value, np.ndarray):
                raise UserError(f"input {spec.name!r} must be a numpy array, got {type(value).__name__}")
            if value.dtype.newbyteorder("=") != np.dtype(spec.dtype):
                raise UserError(f"input {spec.name!r} must be {spec.dtype}, got {value.dtype.name} "
                                f"(convert with .astype(np.{spec.dtype}))")
            if tuple(value.shape) != spec.shape:
                raise UserError(f"input {spec.name!r} must have shape {spec.shape}, got {tuple(value.shape)}")
            arrays.append(np.ascontiguousarray(value, dtype=np.dtype(spec.dtype).newbyteorder("<")))
        return arrays

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{input name: array} -> {output name: array} (onnxruntime's
        `session.run(None, feeds)` gives the same arrays as a list)."""
        result = self._module.run(self.check_feeds(feeds))
        return {spec.name: array for spec, array in zip(self.outputs, result.outputs)}

    def close(self) -> None:
        """End the sandbox process now (it also ends when the model is collected)."""
        self._module.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load(directory, *, time_limit: float = DEFAULT_TIME_LIMIT, memory_limit: int = DEFAULT_MEMORY_LIMIT) -> Model:
    """The artifact in `directory` (e.g. "dist/lenet-digits"), verified against its
    SHA256SUMS and manifest, compiled once. Raises `wasmforge.Error` (one-line message)
    for a missing, incomplete or tampered artifact."""
    path = Path(directory)
    if not path.is_dir():
        raise UserError(f"no artifact directory {directory}")
    if not 0 < float(time_limit) < float("inf"):
        raise UserError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
    if not 0 < int(memory_limit) <= 4 << 30:
        raise UserError(f"memory_limit must be a number of bytes up to 4 GiB, got {memory_limit!r}")
    manifest = verify_artifact(path)
    return Model(path, manifest, time_limit=float(time_limit), memory_limit=int(memory_limit))
