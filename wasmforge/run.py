"""`invoke run`: use an artifact from `dist/` through the Python API, hashes first.

Inputs: one `.npy` per graph input (`-`: stdin), or one `.npz` holding every
input by name; each header is checked against the manifest before its data is
read. Outputs: one `.npy` per graph output (`-`: stdout), or one `.npz` of all
outputs by name. An output is never written into an artifact directory, over
an input, or over an existing file (unless `--overwrite`); it is written to a
temp file in the target directory and renamed into place, with the usual
umask-based mode. Every error names the user's own path.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .errors import UserError, WasmRunError
from .paths import DIST
from .registry import check_model_name

STDIO = "-"
INPUT_LIMIT = 4 << 30  # bytes of input data at most (wasm32 cannot address more)


def artifact_dir(model: str, dist: Path = DIST) -> Path:
    check_model_name(model)
    directory = dist / model
    if not directory.is_dir():
        registered = _registry_names()
        close = _did_you_mean(model, dist, registered)
        if close:
            raise UserError(f"no artifact dist/{model}; did you mean {close}?")
        if model in registered:
            raise UserError(f"no artifact dist/{model}; build it with `invoke build --model {model}`")
        raise UserError(f"no artifact dist/{model}; build it with `invoke build --onnx FILE --name {model}` "
                        "(not a registry model: `invoke models` lists them)")
    return directory


def _registry_names() -> set[str]:
    """The registry's model names, for advice only: empty if the registry cannot be read."""
    try:
        from .registry import load_registry

        return set(load_registry())
    except Exception:  # noqa: BLE001 - a suggestion is optional
        return set()


def _did_you_mean(name: str, dist: Path, registered: set[str]) -> str | None:
    """A near miss among the artifacts and registry models (e.g. lenet-digits for lenet-digit)."""
    known = set(registered)
    if dist.is_dir():
        known |= {p.name for p in dist.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (p / "manifest.json").exists()}
    known.discard(name)  # a registry model not built yet: the advice is to build it
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    return close[0] if close else None


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


# --- inputs -----------------------------------------------------------------------


def load_inputs(paths: Sequence[str], specs) -> list:
    """One .npy per input in order (`-`: stdin), or a single .npz holding every input by name."""
    from .npyio import NpyError, read_npy, read_npy_from, read_npz

    try:
        if len(paths) == 1 and paths[0] != STDIO and paths[0].endswith(".npz"):
            return read_npz(paths[0], specs, label=paths[0], max_bytes=INPUT_LIMIT)
        if len(paths) != len(specs):
            raise UserError(f"the model takes {len(specs)} input(s) ({', '.join(s.name for s in specs)}), "
                            f"got {len(paths)} --input; give one .npy per input or one .npz")
        if paths.count(STDIO) > 1:
            raise UserError("only one --input can be '-' (stdin)")
        if STDIO in paths and sys.stdin.isatty():
            raise UserError("--input - reads .npy data from stdin; redirect a file or a pipe into it")
        arrays = []
        for path, spec in zip(paths, specs):
            what = f"the model's input {spec.name!r}"
            if path == STDIO:
                arrays.append(read_npy_from(sys.stdin.buffer, label="stdin", shape=tuple(spec.shape),
                                            dtype=spec.dtype, max_bytes=INPUT_LIMIT, what=what))
            else:
                arrays.append(read_npy(path, label=path, shape=tuple(spec.shape), dtype=spec.dtype,
                                       max_bytes=INPUT_LIMIT, what=what))
        return arrays
    except NpyError as exc:
        raise UserError(str(exc)) from None


# --- outputs ----------------------------------------------------------------------


def _is_artifact_dir(directory: Path) -> bool:
    return (directory / "SHA256SUMS").exists() or (directory / "manifest.json").exists()


def check_outputs(outputs: Sequence[str], inputs: Sequence[str], *, dist: Path = DIST,
                  overwrite: bool = False) -> None:
    """Refuse, before anything runs, every output that cannot or must not be written."""
    if outputs.count(STDIO) > 1:
        raise UserError("only one --output can be '-' (stdout)")
    if STDIO in outputs and sys.stdout.isatty():
        raise UserError("--output - writes binary .npy data to stdout; redirect it to a file or a pipe")
    seen = {}
    input_paths = [Path(p) for p in inputs if p != STDIO]
    dist_root = dist.resolve()
    for name in outputs:
        if name == STDIO:
            continue
        path = Path(name)
        if path.name in ("", ".", ".."):
            raise UserError(f"--output {name} is not a file name")
        parent = path.parent
        if not parent.is_dir():
            raise UserError(f"cannot write {name}: no such directory {parent} (create it first)")
        target = parent.resolve() / path.name
        if target in seen:
            raise UserError(f"--output {name} is given twice (also as {seen[target]})")
        seen[target] = name
        if target.parent == dist_root or dist_root in target.parents:
            raise UserError(f"refusing to write {name}: it is inside {_shown(dist)}/, which holds artifacts only")
        for ancestor in [target.parent, *target.parent.parents]:
            if _is_artifact_dir(ancestor):
                raise UserError(f"refusing to write {name}: {ancestor} is an artifact directory")
        for source in input_paths:
            if source.exists() and (source.resolve() == target or
                                    (target.exists() and os.path.samefile(source, target))):
                raise UserError(f"refusing to write {name}: it is also an --input")
        if target.is_dir():
            raise UserError(f"cannot write {name}: it is a directory")
        if (target.exists() or target.is_symlink()) and not overwrite:
            raise UserError(f"{name} exists; pass --overwrite to replace it")


def _shown(path: Path) -> str:
    """`path` relative to the current directory when it is below it (as the user sees it)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_file(name: str, write, *, overwrite: bool) -> None:
    """`write(handle)` into a temp file beside `name`, then into place: never a half-written
    file, never an existing one replaced without `overwrite`, mode 0666 & ~umask."""
    path = Path(name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(tmp, 0o666 & ~_umask())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if `path` appeared meanwhile: nothing is replaced
            except FileExistsError:
                raise UserError(f"{name} exists; pass --overwrite to replace it") from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                    raise
                if path.exists():
                    raise UserError(f"{name} exists; pass --overwrite to replace it") from None
                os.replace(tmp, path)
            Path(tmp).unlink(missing_ok=True)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {name}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_outputs(names: Sequence[str], specs, arrays, *, overwrite: bool = False) -> None:
    """One .npy per output in order (`-`: stdout), or a single .npz holding every output by name."""
    from .npyio import write_npy, write_npz

    if len(names) == 1 and names[0] != STDIO and names[0].endswith(".npz"):
        named = [(s.name, a) for s, a in zip(specs, arrays)]
        write_file(names[0], lambda handle: write_npz(handle, named), overwrite=overwrite)
        return
    for name, array in zip(names, arrays):
        if name == STDIO:
            write_npy(sys.stdout.buffer, array)
            sys.stdout.buffer.flush()
        else:
            write_file(name, lambda handle, array=array: write_npy(handle, array), overwrite=overwrite)


def run_artifact(model: str, inputs: Sequence, outputs: Sequence, dist: Path | None = None, *,
                 time_limit: str | None = None, memory_limit: str | None = None,
                 overwrite: bool = False) -> None:
    dist = DIST if dist is None else dist
    inputs, outputs = [str(p) for p in inputs], [str(p) for p in outputs]
    limits = parse_limits(time_limit, memory_limit)
    directory = artifact_dir(model, dist)
    if not outputs:
        raise UserError("give --output (one .npy per output, or one .npz)")
    check_outputs(outputs, inputs, dist=dist, overwrite=overwrite)
    for name in inputs:
        if name != STDIO and not Path(name).is_file():
            raise UserError(f"no such file: {name}" if not Path(name).exists() else f"{name} is not a file")

    from .model import load  # numpy, the runner: only now

    model_ = load(directory, **limits)
    try:
        single_npz = len(outputs) == 1 and outputs[0].endswith(".npz")
        if not single_npz and len(outputs) != len(model_.outputs):
            raise UserError(f"{model} has {len(model_.outputs)} output(s), got {len(outputs)} --output; "
                            "give one .npy per output or one .npz")
        arrays = load_inputs(inputs, model_.inputs)
        try:
            results = model_.run({spec.name: array for spec, array in zip(model_.inputs, arrays)})
        except WasmRunError as exc:  # the module speaks of its sandbox paths: name the user's
            message = str(exc)
            for index, name in enumerate(inputs if len(inputs) == len(model_.inputs) else ()):
                message = message.replace(f"/io/input{index}.npy", "stdin" if name == STDIO else name)
            raise WasmRunError(message, exc.exit_code) from None
        save_outputs(outputs, model_.outputs, [results[s.name] for s in model_.outputs], overwrite=overwrite)
    finally:
        model_.close()
