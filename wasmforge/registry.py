"""The model registry: `resources/models.toml` loaded into frozen, validated specs.

Everything else asks this module "what is model X?" and gets a `ModelSpec`; nobody
else parses `models.toml`. Validation is strict (unknown keys are errors) so a typo in
the registry fails loudly here instead of silently dropping a pin.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping
from urllib.parse import urlsplit

from wasmforge.errors import UserError
from wasmforge.paths import REGISTRY_FILE, ROOT

# Model names become file and directory names (cache entries, dist/<name>/), so they
# must be unable to spell a path: no '/', no '..', no control characters.
MODEL_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")
MAX_MODEL_NAME_LENGTH = 64

# The element types the execution plan (docs/plan-format.md) can describe.
TENSOR_DTYPES = frozenset(
    {"float32", "float64", "float16", "int8", "int16", "int32", "int64",
     "uint8", "uint16", "uint32", "uint64", "bool"}
)

_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
# Generators are imported and called, so only our own generator package may be named:
# the registry must not be a way to run arbitrary code.
_GENERATOR_ENTRY_PATTERN = re.compile(r"wasmforge\.generators\.[a-z0-9_]+(\.[a-z0-9_]+)*:[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output with its static shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class UrlSource:
    """Downloaded from `url` (http or https; the sha256 pin is what guarantees integrity)."""

    url: str
    kind = "url"


@dataclass(frozen=True)
class FileSource:
    """Committed to this repository at `path` (POSIX, relative to the repository root)."""

    path: str
    kind = "file"

    def absolute(self) -> Path:
        return ROOT / self.path


@dataclass(frozen=True)
class GeneratorSource:
    """Built by calling `entry` ("module:function") with keyword arguments `args`."""

    entry: str
    # (key, value) pairs rather than a dict so the spec stays hashable.
    args: tuple[tuple[str, Any], ...] = ()
    kind = "generator"

    def kwargs(self) -> dict[str, Any]:
        return dict(self.args)


Source = UrlSource | FileSource | GeneratorSource


@dataclass(frozen=True)
class AccuracySpec:
    """A measured accuracy and the data it was measured on."""

    value: float
    dataset: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    source: Source
    sha256: str
    size: int | None
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocessing: str
    license: str
    provenance: str
    accuracy: AccuracySpec | None = None


# dist/<name>.attestations/ sits beside dist/<name>/: no model may take that name.
RESERVED_SUFFIX = ".attestations"


def check_model_name(name: str) -> str:
    """Return `name` if it is a safe model name, else raise a one-line UserError.

    Use it on any user-supplied name (e.g. `--name`) before it touches the filesystem.
    """
    if (
        not isinstance(name, str)
        or len(name) > MAX_MODEL_NAME_LENGTH
        or not MODEL_NAME_PATTERN.fullmatch(name)
        or ".." in name
        or name.endswith(RESERVED_SUFFIX)
    ):
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
        raise UserError(
            f"invalid model name {shown}: use at most {MAX_MODEL_NAME_LENGTH} of a-z 0-9 . _ -, "
            f"starting with a letter or digit, without '..', not ending in '{RESERVED_SUFFIX}'"
        )
    return name


def load_registry(path: Path | None = None) -> dict[str, ModelSpec]:
    """Parse and validate the registry; returns specs by name, in file order."""
    path = REGISTRY_FILE if path is None else Path(path)
    try:
        with open(path, "rb") as stream:
            document = tomllib.load(stream)
    except FileNotFoundError:
        raise UserError(f"model registry {path} not found", exit_code=1) from None
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path.name}: invalid TOML: {_one_line(str(error))}", exit_code=1) from None

    top = _Table(document, path.name)
    entries = top.take("models", list)
    top.finish()
    registry: dict[str, ModelSpec] = {}
    for position, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise UserError(f"{path.name}: [[models]] entry {position} must be a table", exit_code=1)
        spec = _parse_model(entry, path.name, position)
        if spec.name in registry:
            raise UserError(f"{path.name}: model {spec.name!r} is defined twice", exit_code=1)
        registry[spec.name] = spec
    return registry


def get_model(name: str, registry: Mapping[str, ModelSpec] | None = None) -> ModelSpec:
    """The spec for `name`; an unknown name is a UserError listing the known ones."""
    check_model_name(name)
    registry = load_registry() if registry is None else registry
    try:
        return registry[name]
    except KeyError:
        import difflib

        known = ", ".join(sorted(registry)) or "(none)"
        close = difflib.get_close_matches(name, sorted(registry), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"unknown model {name!r}{hint}; known models: {known}") from None


# --- parsing -------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Table:
    """Takes typed keys out of one TOML table; leftover keys are reported as unknown."""

    def __init__(self, data: dict[str, Any], where: str):
        self._data = dict(data)
        self.where = where

    def fail(self, problem: str) -> UserError:
        # The registry is a repository file, not command-line input: exit code 1.
        return UserError(f"{self.where}: {problem}", exit_code=1)

    def take(self, key: str, kind: type, *, required: bool = True) -> Any:
        if key not in self._data:
            if required:
                raise self.fail(f"missing '{key}'")
            return None
        value = self._data.pop(key)
        # TOML booleans are ints in Python; never accept one where a number is meant.
        if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
            raise self.fail(f"'{key}' must be {_TYPE_WORDS[kind]}")
        return value

    def take_text(self, key: str) -> str:
        value = self.take(key, str).strip()
        if not value:
            raise self.fail(f"'{key}' must not be empty")
        return _one_line(value)

    def finish(self) -> None:
        if self._data:
            raise self.fail(f"unknown key(s): {', '.join(sorted(self._data))}")


_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", list: "an array", dict: "a table"}


def _parse_model(entry: dict[str, Any], file_name: str, position: int) -> ModelSpec:
    table = _Table(entry, f"{file_name}: [[models]] entry {position}")
    name = table.take("name", str)
    try:
        check_model_name(name)
    except UserError as error:
        raise table.fail(str(error)) from None
    # From here on, problems are reported against the model's name.
    table.where = f"{file_name}: model {name!r}"

    sha256 = table.take("sha256", str)
    if not _SHA256_PATTERN.fullmatch(sha256):
        raise table.fail("'sha256' must be 64 lowercase hex digits")
    size = table.take("size", int, required=False)
    if size is not None and size <= 0:
        raise table.fail("'size' must be a positive number of bytes")

    spec = ModelSpec(
        name=name,
        description=table.take_text("description"),
        source=_parse_source(table.take("source", dict), f"{table.where}: source"),
        sha256=sha256,
        size=size,
        inputs=_parse_tensors(table.take("inputs", list), f"{table.where}: inputs"),
        outputs=_parse_tensors(table.take("outputs", list), f"{table.where}: outputs"),
        preprocessing=table.take_text("preprocessing"),
        license=table.take_text("license"),
        provenance=table.take_text("provenance"),
        accuracy=_parse_accuracy(table.take("accuracy", dict, required=False), f"{table.where}: accuracy"),
    )
    table.finish()
    return spec


def _parse_source(data: dict[str, Any], where: str) -> Source:
    table = _Table(data, where)
    kind = table.take("kind", str)
    if kind == "url":
        url = table.take("url", str)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise table.fail(f"'url' must be an http(s) URL, got {url!r}")
        source: Source = UrlSource(url)
    elif kind == "file":
        relative = table.take("path", str)
        posix = PurePosixPath(relative)
        if posix.is_absolute() or ".." in posix.parts or "\\" in relative or not posix.parts:
            raise table.fail(f"'path' must be relative to the repository root without '..', got {relative!r}")
        source = FileSource(posix.as_posix())
    elif kind == "generator":
        entry = table.take("entry", str)
        if not _GENERATOR_ENTRY_PATTERN.fullmatch(entry):
            raise table.fail(f"'entry' must be 'wasmforge.generators.<module>:<function>', got {entry!r}")
        args = table.take("args", dict, required=False) or {}
        for key, value in args.items():
            if not isinstance(value, (str, int, float, bool)):
                raise table.fail(f"args.{key} must be a string, number or boolean")
        source = GeneratorSource(entry, tuple(sorted(args.items())))
    else:
        raise table.fail(f"'kind' must be url, file or generator, got {kind!r}")
    table.finish()
    return source


def _parse_tensors(items: list[Any], where: str) -> tuple[TensorSpec, ...]:
    if not items:
        raise UserError(f"{where}: at least one tensor is required", exit_code=1)
    tensors = []
    for position, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise UserError(f"{where}: entry {position} must be a table", exit_code=1)
        table = _Table(item, f"{where}[{position}]")
        name = table.take("name", str)
        if not name:
            raise table.fail("'name' must not be empty")
        dtype = table.take("dtype", str)
        if dtype not in TENSOR_DTYPES:
            raise table.fail(f"'dtype' must be one of {', '.join(sorted(TENSOR_DTYPES))}, got {dtype!r}")
        shape = table.take("shape", list)
        # wasmforge compiles static graphs, so every dimension is a concrete size.
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise table.fail("'shape' must be a list of non-negative integers")
        table.finish()
        tensors.append(TensorSpec(name, dtype, tuple(shape)))
    names = [tensor.name for tensor in tensors]
    if len(set(names)) != len(names):
        raise UserError(f"{where}: tensor names must be unique", exit_code=1)
    return tuple(tensors)


def _parse_accuracy(data: dict[str, Any] | None, where: str) -> AccuracySpec | None:
    if data is None:
        return None
    table = _Table(data, where)
    value = table.take("value", float)
    if not 0.0 <= value <= 1.0:
        raise table.fail("'value' must be a fraction between 0 and 1")
    accuracy = AccuracySpec(value=value, dataset=table.take_text("dataset"))
    table.finish()
    return accuracy
