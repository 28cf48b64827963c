"""`invoke verify`: check an artifact's hashes, and optionally rebuild it and compare bytes."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from rich.console import Console

from . import artifact, buildlock
from .errors import UserError
from .paths import DIST
from .run import artifact_dir
from .terminal import make_console


def verify_hashes(model: str, dist: Path = DIST) -> list[str]:
    """SHA256SUMS and the manifest's own file list; returns the files checked."""
    directory = artifact_dir(model, dist)
    checked = artifact.verify_sums(directory)
    artifact.verify_artifact(directory)
    return checked


def differing_files(first: Path, second: Path) -> list[str]:
    """Relative names of files that differ, or exist on one side only."""
    names = sorted(set(artifact.artifact_files(first)) | set(artifact.artifact_files(second))
                   | {artifact.SUMS_NAME})
    return [n for n in names if not _same_bytes(first / n, second / n)]


def _same_bytes(a: Path, b: Path) -> bool:
    return a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()


def rebuild_and_compare(model: str, onnx: str | None = None, dist: Path = DIST,
                        console: Console | None = None) -> None:
    """Build the same model again into a temporary directory and compare every byte."""
    from .build import build

    console = console or make_console()
    directory = artifact_dir(model, dist)
    manifest = artifact.verify_artifact(directory)
    registry_name = manifest.source.registry
    if registry_name is None and onnx is None:
        raise UserError(f"{model} was built from a file; pass it again with --onnx PATH to rebuild")
    # The model's lock for the whole comparison: dist/<model> cannot change
    # meanwhile, and a .rebuild- directory whose lock is free is a leftover of
    # a killed verify, which the next build or verify removes (buildlock).
    with buildlock.model_lock(dist, model, console):
        buildlock.clean_leftovers(dist, model, console)
        with tempfile.TemporaryDirectory(prefix=f".rebuild-{model}-", dir=dist) as tmp:
            rebuilt = build(model=None if onnx else registry_name, onnx=onnx, name=model,
                            external_params=manifest.params is not None,
                            dist=Path(tmp), console=console)
            different = differing_files(directory, rebuilt)
            for name in different:
                console.print(f"[bold red]differs:[/] {name}")
                show_diffoscope(directory / name, rebuilt / name, console)
    if different:
        raise UserError(f"rebuild of {model} is not bit-identical: {', '.join(different)}", 1)
    console.print(f"[bold green]rebuild identical[/]: every file of dist/{model} matches")


def show_diffoscope(a: Path, b: Path, console: Console) -> None:
    if shutil.which("diffoscope") is None or not a.is_file() or not b.is_file():
        return
    result = subprocess.run(["diffoscope", "--text", "-", str(a), str(b)],
                            capture_output=True, text=True)
    console.print(result.stdout[:20000], markup=False, highlight=False)
