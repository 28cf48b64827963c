"""`invoke run` and `invoke verify`: use an artifact from `dist/`, hashes first."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import artifact
from .artifact import TensorRecord
from .errors import UserError
from .paths import DIST
from .registry import check_model_name
from .runner import WasmModel


def artifact_dir(model: str, dist: Path = DIST) -> Path:
    check_model_name(model)
    directory = dist / model
    if not directory.is_dir():
        raise UserError(f"no artifact dist/{model}; build it with `invoke build --model {model}`")
    return directory


def load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise UserError(f"{path} is not a readable .npy file ({exc})") from None


def save_atomically(path: Path, write) -> None:
    """`write(handle)` into a temp file beside `path`, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_inputs(paths: list[Path], specs: Sequence[TensorRecord]) -> list[np.ndarray]:
    """One .npy per input in order, or a single .npz holding every input by name."""
    if len(paths) == 1 and paths[0].suffix == ".npz":
        archive = load_npz(paths[0])
        missing = [s.name for s in specs if s.name not in archive]
        if missing:
            raise UserError(f"{paths[0]} has no array named {', '.join(missing)}")
        return [archive[s.name] for s in specs]
    if len(paths) != len(specs):
        raise UserError(f"the model takes {len(specs)} input(s) ({', '.join(s.name for s in specs)}), "
                        f"got {len(paths)} --input; give one .npy per input or one .npz")
    return [load_npy(p) for p in paths]


def load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except Exception as exc:
        raise UserError(f"{path} is not a readable .npz file ({exc})") from None


def save_outputs(paths: list[Path], specs: Sequence[TensorRecord], arrays: list[np.ndarray]) -> None:
    """One .npy per output in order, or a single .npz holding every output by name."""
    if len(paths) == 1 and paths[0].suffix == ".npz":
        save_atomically(paths[0], lambda handle: np.savez(
            handle, **{s.name: a for s, a in zip(specs, arrays)}))
        return
    for path, array in zip(paths, arrays):
        save_atomically(path, lambda handle, array=array: np.save(handle, array, allow_pickle=False))


def parse_limits(time_limit: str | None, memory_limit: str | None) -> dict:
    """`--time-limit 30` (seconds) and `--memory-limit 512M` as WasmModel keyword arguments."""
    limits = {}
    if time_limit is not None:
        try:
            seconds = float(time_limit)
        except ValueError:
            seconds = float("nan")
        if not 0 < seconds < float("inf"):  # also false for nan
            raise UserError(f"--time-limit must be a positive number of seconds, got {time_limit!r}")
        limits["time_limit"] = seconds
    if memory_limit is not None:
        match = re.fullmatch(r"(\d+)([KMG]?)(I?B)?", str(memory_limit).strip().upper())
        size = int(match[1]) << {"": 0, "K": 10, "M": 20, "G": 30}[match[2]] if match else 0
        # wasm32 addresses at most 4 GiB: a larger limit would be no limit.
        if not 0 < size <= 4 << 30:
            raise UserError(f"--memory-limit must be a size up to 4G such as 512M, got {memory_limit!r}")
        limits["memory_limit"] = size
    return limits


def run_artifact(model: str, inputs: list[Path], outputs: list[Path], dist: Path = DIST, *,
                 time_limit: str | None = None, memory_limit: str | None = None) -> None:
    limits = parse_limits(time_limit, memory_limit)
    directory = artifact_dir(model, dist)
    manifest = artifact.verify_artifact(directory)
    out_specs = manifest.outputs
    single_npz = len(outputs) == 1 and outputs[0].suffix == ".npz"
    if not single_npz and len(outputs) != len(out_specs):
        raise UserError(f"{model} has {len(out_specs)} output(s), got {len(outputs)} --output; "
                        "give one .npy per output or one .npz")
    arrays = load_inputs(inputs, manifest.inputs)
    params = manifest.params_file
    result = WasmModel(directory / manifest.wasm, params_path=directory / params if params else None,
                       **limits).run(arrays)
    save_outputs(outputs, out_specs, result.outputs)
