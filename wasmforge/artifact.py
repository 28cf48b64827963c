"""The artifact directory `dist/<model>/`: its manifest, SHA256SUMS, verification, atomic publishing.

Standard library only: the smoke-test image verifies artifacts with this module.
`Manifest` (below) is manifest.json as a validated dataclass; nothing else
spells its keys.
`SHA256SUMS` lists every other file in the directory (recursively, sorted, in
the `sha256sum` text format), so `sha256sum -c SHA256SUMS` accepts it, and a
file added, removed or changed after the build is detected.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import WasmforgeError
from .hashing import sha256_file

SUMS_NAME = "SHA256SUMS"
MANIFEST_NAME = "manifest.json"


class ArtifactError(WasmforgeError):
    """The artifact is missing, incomplete or does not match its hashes."""


def artifact_files(directory: Path) -> list[str]:
    """Relative paths (with `/`) of every file but SHA256SUMS, sorted."""
    names = []
    for path in directory.rglob("*"):
        if path.is_symlink():
            raise ArtifactError(f"{path.relative_to(directory)} is a symlink; artifacts hold files only")
        if path.is_file() and path.name != SUMS_NAME:
            names.append(path.relative_to(directory).as_posix())
    return sorted(names)


def write_sums(directory: Path) -> None:
    lines = [f"{sha256_file(directory / name)}  {name}\n" for name in artifact_files(directory)]
    (directory / SUMS_NAME).write_text("".join(lines))


def read_sums(directory: Path) -> dict[str, str]:
    sums_path = directory / SUMS_NAME
    if not sums_path.is_file():
        raise ArtifactError(f"{directory} has no {SUMS_NAME}; build it first")
    sums = {}
    for number, line in enumerate(sums_path.read_text().splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or name.startswith("/") or ".." in name.split("/"):
            raise ArtifactError(f"{SUMS_NAME} line {number} is malformed")
        sums[name] = digest
    return sums


def verify_sums(directory: Path) -> list[str]:
    """Check every file against SHA256SUMS; return the names checked.

    Raises ArtifactError naming the first problem: a changed, missing or
    unlisted file.
    """
    sums = read_sums(directory)
    present = artifact_files(directory)
    unlisted = sorted(set(present) - set(sums))
    if unlisted:
        raise ArtifactError(f"{unlisted[0]} is not listed in {SUMS_NAME}")
    for name, expected in sums.items():
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{name} is listed in {SUMS_NAME} but missing")
        if sha256_file(path) != expected:
            raise ArtifactError(f"{name} does not match its sha256 in {SUMS_NAME}")
    return sorted(sums)


def staging_dir(dist: Path, name: str) -> Path:
    """A fresh directory beside the final one, so the last rename stays on one file system."""
    dist.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=dist))
    staging.chmod(0o755)  # mkdtemp makes it private; the artifact is meant to be shared
    return staging


def publish(staging: Path, final: Path) -> None:
    """Put `staging` in the place of `final` so that `final` is present and whole at
    every moment, whatever signal (SIGINT, SIGTERM, SIGKILL) strikes when.

    The first artifact of a name is one rename. A replacement is one atomic
    exchange of the two directories (Linux `renameat2(RENAME_EXCHANGE)`), after
    which `staging` holds the previous artifact and is deleted: a process killed
    before the exchange leaves the old artifact, after it the new one, and in
    both cases a `.staging-` directory that the next build removes.

    Where the file system cannot exchange (not Linux, NFS, ...), the previous
    artifact is renamed aside and the new one into place, with SIGINT, SIGTERM
    and SIGHUP deferred across the two renames; only SIGKILL between them leaves
    no `final` (the next build puts the previous one back: buildlock).
    """
    if not os.path.lexists(final):
        os.rename(staging, final)
        return
    if _exchange(staging, final):
        shutil.rmtree(staging, ignore_errors=True)  # now the previous artifact
        return
    previous = final.with_name(f".previous-{final.name}-{os.getpid()}")
    with signals_deferred():
        try:
            os.rename(final, previous)
            os.rename(staging, final)
        except BaseException:
            if os.path.lexists(previous) and not os.path.lexists(final):
                os.rename(previous, final)
            raise
    shutil.rmtree(previous, ignore_errors=True)


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one atomic step; False where the system or file system cannot."""
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


# Signals that end a process by default or through Python's KeyboardInterrupt.
DEFERRED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP until the block is done, then act on them.

    Python handlers run in the main thread only, so outside it (where no
    handler can be set) this changes nothing.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    numbers = [getattr(signal, n) for n in DEFERRED_SIGNALS if hasattr(signal, n)]
    saved = {n: signal.signal(n, lambda number, _frame: caught.append(number)) for n in numbers}
    try:
        yield
    finally:
        for number, handler in saved.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        for number in dict.fromkeys(caught):
            signal.raise_signal(number)  # now the saved handler (or the default action) runs


# --- manifest.json ----------------------------------------------------------------
#
# `Manifest` is the one place the manifest's keys are spelled: the build writes
# one, and everything that reads an artifact (run, verify, bench, smoke,
# attest) gets one from `load_manifest` / `verify_artifact`, validated. The
# JSON is `json.dumps(..., indent=2, sort_keys=True)` plus a newline, and the
# optional records (`params`, `frozen`, `tuning`) are written only when
# present, so a manifest reads and writes back byte for byte.

FORMAT = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _bad(where: str) -> ArtifactError:
    return ArtifactError(f"{MANIFEST_NAME} has no valid {where}")


def _get(data, key: str, kind, where: str = ""):
    """data[key] if it is a `kind` (bool is never a number here), else ArtifactError naming it."""
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _bad(f"{where}{key}")
    return value


def _sha256(data, key: str, where: str) -> str:
    value = _get(data, key, str, where)
    if not _SHA256.fullmatch(value):
        raise _bad(f"{where}{key}")
    return value


def _check_keys(data: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ArtifactError(f"{MANIFEST_NAME} has an unknown key {where}{unknown[0]}")


_NUMBER = (int, float)


@dataclass(frozen=True)
class TensorRecord:
    """One graph input or output: name, dtype, static shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @classmethod
    def from_dict(cls, data, where: str = "") -> TensorRecord:
        _check_keys(data if isinstance(data, dict) else {}, {"name", "dtype", "shape"}, where)
        shape = _get(data, "shape", list, where)
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise _bad(f"{where}shape")
        return cls(_get(data, "name", str, where), _get(data, "dtype", str, where), tuple(shape))

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class FileRecord:
    """sha256 and size of one file of the artifact."""

    sha256: str
    size: int

    @classmethod
    def of(cls, path: Path) -> FileRecord:
        return cls(sha256_file(path), path.stat().st_size)

    @classmethod
    def from_dict(cls, data, where: str) -> FileRecord:
        _check_keys(data if isinstance(data, dict) else {}, {"sha256", "size"}, where)
        return cls(_sha256(data, "sha256", where), _get(data, "size", int, where))

    def to_dict(self) -> dict:
        return {"sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class SourceRecord:
    """Where the ONNX model came from: a registry name or a file name, and its sha256."""

    sha256: str
    registry: str | None = None
    file: str | None = None

    @classmethod
    def from_dict(cls, data) -> SourceRecord:
        where = "source."
        if not isinstance(data, dict):
            raise _bad("source")
        _check_keys(data, {"sha256", "registry", "file"}, where)
        registry = _get(data, "registry", str, where) if "registry" in data else None
        file = _get(data, "file", str, where) if "file" in data else None
        if (registry is None) == (file is None):
            raise _bad("source.registry or source.file")
        return cls(_sha256(data, "sha256", where), registry, file)

    @property
    def label(self) -> str:
        """The registry name, or else the file name."""
        return self.registry or self.file

    def to_dict(self) -> dict:
        data = {"sha256": self.sha256}
        if self.registry is not None:
            data["registry"] = self.registry
        if self.file is not None:
            data["file"] = self.file
        return data


@dataclass(frozen=True)
class BuilderImageRecord:
    """The builder image's recipe digest and base tag (not its id, which differs between builds)."""

    recipe: str
    base: str

    @classmethod
    def from_dict(cls, data) -> BuilderImageRecord:
        where = "builder_image."
        _check_keys(data if isinstance(data, dict) else {}, {"recipe", "base"}, where)
        return cls(_get(data, "recipe", str, where), _get(data, "base", str, where))

    def to_dict(self) -> dict:
        return {"recipe": self.recipe, "base": self.base}


@dataclass(frozen=True)
class TargetRecord:
    """`wasm`: the Rust target triple; `tvm`: TVM's target, as the compiler reported it."""

    wasm: str
    tvm: dict

    @classmethod
    def from_dict(cls, data) -> TargetRecord:
        where = "target."
        _check_keys(data if isinstance(data, dict) else {}, {"wasm", "tvm"}, where)
        return cls(_get(data, "wasm", str, where), _get(data, "tvm", dict, where))

    def to_dict(self) -> dict:
        return {"wasm": self.wasm, "tvm": self.tvm}


@dataclass(frozen=True)
class ReferenceRule:
    """How many recorded reference cases, and the tolerance every check of them applies."""

    cases: int
    relative_tolerance: float
    absolute_floor: float

    @classmethod
    def from_dict(cls, data) -> ReferenceRule:
        where = "reference."
        _check_keys(data if isinstance(data, dict) else {}, {"cases", "relative_tolerance", "absolute_floor"},
                    where)
        cases = _get(data, "cases", int, where)
        if cases < 1:
            raise ArtifactError(f"{MANIFEST_NAME} records no reference cases")
        return cls(cases, _get(data, "relative_tolerance", _NUMBER, where),
                   _get(data, "absolute_floor", _NUMBER, where))

    def to_dict(self) -> dict:
        return {"cases": self.cases, "relative_tolerance": self.relative_tolerance,
                "absolute_floor": self.absolute_floor}


@dataclass(frozen=True)
class ParamsRecord:
    """The weights file of an `--external-params` artifact (one of `files`, same sha256)."""

    file: str
    sha256: str
    size: int

    @classmethod
    def from_dict(cls, data) -> ParamsRecord:
        where = "params."
        name = data.get("file") if isinstance(data, dict) else None
        if not isinstance(name, str):
            raise ArtifactError(f"{MANIFEST_NAME} names {name!r} as the params file, which it does not list")
        _check_keys(data, {"file", "sha256", "size"}, where)
        return cls(name, _sha256(data, "sha256", where), _get(data, "size", int, where))

    def to_dict(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class FrozenRecord:
    """An input baked into the graph (`--freeze`): its number, or the sha256 of its .npy."""

    value: int | float | None = None
    sha256: str | None = None

    @classmethod
    def from_dict(cls, data, where: str) -> FrozenRecord:
        if not isinstance(data, dict) or len(data) != 1:
            raise _bad(where.rstrip("."))
        _check_keys(data, {"value", "sha256"}, where)
        if "value" in data:
            return cls(value=_get(data, "value", _NUMBER, where))
        return cls(sha256=_sha256(data, "sha256", where))

    def to_dict(self) -> dict:
        return {"value": self.value} if self.sha256 is None else {"sha256": self.sha256}


@dataclass(frozen=True)
class TuningRecord:
    """The MetaSchedule database a build applied (`tuning/<name>/<target>`) and its sha256."""

    database: str
    sha256: str

    @classmethod
    def from_dict(cls, data) -> TuningRecord:
        where = "tuning."
        _check_keys(data if isinstance(data, dict) else {}, {"database", "sha256"}, where)
        return cls(_get(data, "database", str, where), _sha256(data, "sha256", where))

    def to_dict(self) -> dict:
        return {"database": self.database, "sha256": self.sha256}


# `invoke build --features` (compiler/request.py FEATURES, spelled here too:
# this module is standard library only and the smoke image has no compiler).
KNOWN_FEATURES = ("relaxed-simd", "simd128")
DEFAULT_FEATURES = "relaxed-simd"


def _features(data: dict) -> str | None:
    if "features" not in data:
        return None
    value = _get(data, "features", str)
    if value not in KNOWN_FEATURES or value == DEFAULT_FEATURES:
        raise _bad("features")
    return value


@dataclass(frozen=True)
class Manifest:
    """`dist/<name>/manifest.json`: the single description of an artifact."""

    name: str
    wasm: str  # the module's file name, one of `files`
    wasmforge: str  # the version that built it
    source: SourceRecord
    inputs: tuple[TensorRecord, ...]
    outputs: tuple[TensorRecord, ...]
    target: TargetRecord
    toolchain: dict[str, str]
    builder_image: BuilderImageRecord
    kernels: int
    kernel_calls: int
    params_size: int
    reference: ReferenceRule
    files: dict[str, FileRecord]  # every file but manifest.json and SHA256SUMS
    params: ParamsRecord | None = None  # only with --external-params
    frozen: dict[str, FrozenRecord] | None = None  # only with --freeze
    tuning: TuningRecord | None = None  # only when a tuning database was applied
    # The kernels' SIMD features (`invoke build --features`), only when not the
    # default `relaxed-simd`: see `feature_set`.
    features: str | None = None
    # How to turn raw data into the inputs: the registry's text, registry models only.
    preprocessing: str | None = None
    format: int = FORMAT

    def __post_init__(self):
        # The module and the weights file must be files whose hashes are checked.
        if "/" in self.wasm or self.wasm not in self.files:
            raise ArtifactError(f"{MANIFEST_NAME} names {self.wasm!r} as the module, which it does not list")
        if self.params is not None:
            listed = self.files.get(self.params.file)
            if "/" in self.params.file or listed is None:
                raise ArtifactError(f"{MANIFEST_NAME} names {self.params.file!r} as the params file, "
                                    "which it does not list")
            if listed.sha256 != self.params.sha256:
                raise ArtifactError(f"{MANIFEST_NAME} gives two different sha256 for {self.params.file}")

    @property
    def feature_set(self) -> str:
        """The kernels' SIMD features: `relaxed-simd` (the default, not written) or `simd128`."""
        return self.features or DEFAULT_FEATURES

    @property
    def params_file(self) -> str | None:
        """The weights file beside the .wasm (`--external-params`), or None when they are embedded."""
        return self.params.file if self.params is not None else None

    @classmethod
    def from_dict(cls, data) -> Manifest:
        """A validated Manifest, or ArtifactError naming the first missing or malformed field."""
        if not isinstance(data, dict):
            raise ArtifactError(f"{MANIFEST_NAME} is not a JSON object")
        _check_keys(data, {f.name for f in fields(cls)}, "")
        if _get(data, "format", int) != FORMAT:
            raise ArtifactError(f"{MANIFEST_NAME} has format {data['format']}; this wasmforge reads format {FORMAT}")
        toolchain = _get(data, "toolchain", dict)
        if not all(isinstance(v, str) for v in toolchain.values()):
            raise _bad("toolchain")
        files = {}
        for name, entry in _get(data, "files", dict).items():
            if not name or name.startswith("/") or ".." in name.split("/"):
                raise ArtifactError(f"{MANIFEST_NAME} lists a file outside the artifact: {name!r}")
            files[name] = FileRecord.from_dict(entry, f"files.{name}.")
        params = data.get("params", "embedded")  # no key (or "embedded"): weights in the .wasm
        frozen = data.get("frozen")
        if frozen is not None and not isinstance(frozen, dict):
            raise _bad("frozen")
        return cls(
            name=_get(data, "name", str),
            wasm=_get(data, "wasm", str),
            wasmforge=_get(data, "wasmforge", str),
            source=SourceRecord.from_dict(data.get("source")),
            inputs=tuple(TensorRecord.from_dict(t, f"inputs[{i}].") for i, t in enumerate(_get(data, "inputs", list))),
            outputs=tuple(TensorRecord.from_dict(t, f"outputs[{i}].")
                          for i, t in enumerate(_get(data, "outputs", list))),
            target=TargetRecord.from_dict(data.get("target")),
            toolchain=toolchain,
            builder_image=BuilderImageRecord.from_dict(data.get("builder_image")),
            kernels=_get(data, "kernels", int),
            kernel_calls=_get(data, "kernel_calls", int),
            params_size=_get(data, "params_size", int),
            reference=ReferenceRule.from_dict(data.get("reference")),
            files=files,
            params=None if params == "embedded" else ParamsRecord.from_dict(params),
            frozen=None if frozen is None else {name: FrozenRecord.from_dict(entry, f"frozen.{name}.")
                                                for name, entry in frozen.items()},
            tuning=None if data.get("tuning") is None else TuningRecord.from_dict(data["tuning"]),
            features=_features(data),
            preprocessing=_get(data, "preprocessing", str) if "preprocessing" in data else None,
        )

    def to_dict(self) -> dict:
        data = {
            "format": self.format,
            "name": self.name,
            "wasm": self.wasm,
            "wasmforge": self.wasmforge,
            "source": self.source.to_dict(),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "target": self.target.to_dict(),
            "toolchain": dict(self.toolchain),
            "builder_image": self.builder_image.to_dict(),
            "kernels": self.kernels,
            "kernel_calls": self.kernel_calls,
            "params_size": self.params_size,
            "reference": self.reference.to_dict(),
            "files": {name: entry.to_dict() for name, entry in self.files.items()},
        }
        # Optional records only when present: an embedded, unfrozen, untuned
        # build's manifest stays byte-identical to those made before they existed.
        if self.params is not None:
            data["params"] = self.params.to_dict()
        if self.frozen:
            data["frozen"] = {name: entry.to_dict() for name, entry in self.frozen.items()}
        if self.tuning is not None:
            data["tuning"] = self.tuning.to_dict()
        if self.features is not None:
            data["features"] = self.features
        if self.preprocessing is not None:
            data["preprocessing"] = self.preprocessing
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{MANIFEST_NAME} is not valid JSON ({exc.msg})") from None
        return cls.from_dict(data)

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        path.write_text(self.to_json())
        return path

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        try:
            text = (directory / MANIFEST_NAME).read_text()
        except FileNotFoundError:
            raise ArtifactError(f"{directory} has no {MANIFEST_NAME}") from None
        return cls.from_json(text)


def load_manifest(directory: Path) -> Manifest:
    return Manifest.read(directory)


def verify_artifact(directory: Path) -> Manifest:
    """Hashes first, then the manifest's own file list, then (when
    `<directory>.attestations/` exists) the provenance's subjects; returns the manifest."""
    verify_sums(directory)
    manifest = load_manifest(directory)
    for name, entry in manifest.files.items():
        path = directory / name
        if not path.is_file() or sha256_file(path) != entry.sha256:
            raise ArtifactError(f"{name} does not match its sha256 in {MANIFEST_NAME}")
    from .provenance import check_artifact  # imports artifact: not at the top

    check_artifact(directory)
    return manifest
