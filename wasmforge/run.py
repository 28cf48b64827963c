"""`invoke run` and `invoke verify`: use an artifact from `dist/`, hashes first."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from . import artifact
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


def save_npy_atomically(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_artifact(model: str, inputs: list[Path], outputs: list[Path], dist: Path = DIST) -> None:
    directory = artifact_dir(model, dist)
    manifest = artifact.verify_artifact(directory)
    if len(inputs) != len(manifest["inputs"]):
        raise UserError(f"{model} takes {len(manifest['inputs'])} input(s), got {len(inputs)} --input")
    if len(outputs) != len(manifest["outputs"]):
        raise UserError(f"{model} has {len(manifest['outputs'])} output(s), got {len(outputs)} --output")
    arrays = [load_npy(p) for p in inputs]
    result = WasmModel(directory / manifest["wasm"]).run(arrays)
    for path, array in zip(outputs, result.outputs):
        save_npy_atomically(path, array)
