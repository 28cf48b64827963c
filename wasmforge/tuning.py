"""Tuning databases: `invoke tune` writes them, `invoke build` applies them.

A database is a committed, pinned build input: MetaSchedule measures on this
machine, so its records differ from run to run, and a build must not depend
on a measurement. `tuning/<name>/wasm32-simd128/` holds the two JSON files of
wasmforge/compiler/tune.py; when it exists, `invoke build` mounts it into the builder and
the manifest records its sha256, so tuned builds stay reproducible.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from . import images
from .compiler.tune import DATABASE_FILES  # what the tuner in the builder writes
from .container import Mount, run_step
from .errors import UserError
from .hashing import sha256_bytes, sha256_file
from .paths import TUNING
from .terminal import make_console

PACKAGE_DIR = Path(__file__).resolve().parent
TARGET_NAME = "wasm32-simd128"


def database_dir(name: str, root: Path = TUNING) -> Path:
    return root / name / TARGET_NAME


# Tuning takes longer than a build: four models' worth of the builder's wall clock.
TUNE_WALL_MODELS = 4


def find_database(name: str, root: Path = TUNING) -> Path | None:
    """The model's database directory if it holds a complete database."""
    directory = database_dir(name, root)
    present = [(directory / f).is_file() for f in DATABASE_FILES]
    if any(present) and not all(present):
        raise UserError(f"{directory} has an incomplete tuning database; re-run `invoke tune`", 1)
    return directory if all(present) else None


def database_digest(directory: Path) -> str:
    """One sha256 over the database files (logs and notes beside them do not count)."""
    lines = "".join(f"{sha256_file(directory / f)}  {f}\n" for f in DATABASE_FILES)
    return sha256_bytes(lines.encode())


def tune(model: str | None, onnx: str | None, name: str | None, *, trials: int, max_tasks: int,
         only: tuple[str, ...] = (), measure: str = "wasm", min_gain: float = 0.05, space: str = "hand",
         root: Path = TUNING, console: Console | None = None) -> Path:
    """Run the compiler's tuner in the builder image; resumable: run again to continue."""
    from .source import resolve_source, vet

    console = console or make_console()
    if trials < 1 or max_tasks < 0:
        raise UserError("--trials must be >= 1 and --max-tasks >= 0")
    if measure not in ("wasm", "native"):
        raise UserError(f"--measure must be wasm or native, got {measure!r}")
    if space not in ("hand", "generic"):
        raise UserError(f"--space must be hand or generic, got {space!r}")
    if space == "hand" and measure != "wasm":
        raise UserError("--space hand is measured as wasm only: drop --measure native or use --space generic")
    source = vet(resolve_source(model, onnx, name))
    client = images.docker_client()
    builder = images.ensure_builder(client, console)
    out = database_dir(source.name, root)
    out.mkdir(parents=True, exist_ok=True)
    command = ["python3", "-m", "wasmforge.compiler", "tune", "--onnx", "/in/model.onnx", "--out", "/out",
               "--trials", str(trials), "--max-tasks", str(max_tasks), "--measure", measure,
               "--space", space, "--min-gain", str(min_gain)] + (["--only", ",".join(only)] if only else [])
    mounts = [Mount(str(PACKAGE_DIR), "/src/wasmforge"), Mount(str(source.onnx), "/in/model.onnx"),
              Mount(str(out), "/out", read_only=False)]
    run_step(client, builder.id, command, mounts, console, title="tune", environment={"PYTHONPATH": "/src"},
             models=TUNE_WALL_MODELS)
    if find_database(source.name, root) is None:
        console.print(f"no tuned kernel beat the hand schedules: no database (see {out / 'report.json'})")
    else:
        console.print(f"[bold green]tuning database[/] {out} (sha256 {database_digest(out)[:16]}...)")
    return out
