"""Small, valid artifacts for the unit tests: a manifest.json that `Manifest` accepts."""

from __future__ import annotations

from pathlib import Path

from wasmforge import artifact


def manifest_dict(files: dict[str, dict], **overrides) -> dict:
    """A complete manifest (as JSON data) for an artifact named `m` holding `files`."""
    data = {
        "format": 1,
        "name": "m",
        "wasm": "m.wasm",
        "wasmforge": "0.0.0",
        "source": {"registry": "m", "sha256": "d" * 64},
        "inputs": [{"name": "input", "dtype": "float32", "shape": [1, 1, 8, 8]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [1, 10]}],
        "target": {"wasm": "wasm32-wasip1", "tvm": {"kind": "llvm"}},
        "toolchain": {"tvm": "0.27.0"},
        "builder_image": {"recipe": "0" * 12, "base": "wasmforge/base:test"},
        "kernels": 1,
        "kernel_calls": 1,
        "params_size": 0,
        "reference": {"cases": 3, "relative_tolerance": 1e-3, "absolute_floor": 1e-4},
        "files": files,
    }
    data.update(overrides)
    return data


def file_records(directory: Path) -> dict[str, dict]:
    """{name: {sha256, size}} of every file in `directory` so far."""
    return {n: artifact.FileRecord.of(directory / n).to_dict() for n in artifact.artifact_files(directory)}


def seal(directory: Path, **overrides) -> dict:
    """Write manifest.json listing every file present, then SHA256SUMS; returns the manifest data."""
    (directory / artifact.MANIFEST_NAME).unlink(missing_ok=True)
    data = manifest_dict(file_records(directory), **overrides)
    artifact.Manifest.from_dict(data).write(directory)
    artifact.write_sums(directory)
    return data
