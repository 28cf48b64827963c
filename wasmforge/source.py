"""What to build: a registry model or the user's ONNX file, resolved and vetted.

`resolve_source` turns `--model NAME` / `--onnx PATH` (+ `--name`,
`--input-shape`, `--freeze`) into a `Source`: a local, hash-checked ONNX file,
the files beside it that it references (external data), its static input shapes
and frozen inputs as data. `vet` runs the ONNX guard on it before any container
starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .hashing import sha256_file
from .registry import check_model_name, get_model


@dataclass(frozen=True)
class Source:
    """The model to build, resolved to a local ONNX file."""

    name: str
    onnx: Path
    description: dict  # what the manifest records about where it came from
    # Static shapes: the registry's fix dynamic dims (e.g. the zoo's batch N);
    # --input-shape overrides them.
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    # Inputs baked into the graph: name -> {"value": number} or {"npy": local path}.
    frozen: dict[str, dict] = field(default_factory=dict)
    # External-data files the model references, relative to its directory (vetted).
    external_data: tuple[str, ...] = ()


def parse_input_shapes(specs) -> dict[str, list[int]]:
    from .compiler.request import parse_shapes

    try:
        return parse_shapes(specs)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def resolve_source(model: str | None, onnx: str | None, name: str | None, *,
                   input_shapes=(), freeze=()) -> Source:
    if bool(model) == bool(onnx):
        raise UserError("give exactly one of --model NAME or --onnx PATH")
    overrides = parse_input_shapes(input_shapes)
    if model:
        from .fetch import model_path

        spec = get_model(model)
        if name:
            check_model_name(name)
        path = model_path(spec)
        shapes = {t.name: list(t.shape) for t in spec.inputs}
        source = Source(name or spec.name, path, {"registry": spec.name, "sha256": spec.sha256},
                        {**shapes, **overrides})
    else:
        path = Path(onnx)
        if not path.is_file():
            raise UserError(f"no such file: {onnx}")
        final_name = name or path.stem
        check_model_name(final_name)
        source = Source(final_name, path.resolve(), {"file": path.name, "sha256": sha256_file(path)},
                        overrides)
    if freeze:
        from .freeze import parse_freeze

        source = Source(**{**source.__dict__, "frozen": parse_freeze(freeze)})
    return source


def vet(source: Source) -> Source:
    """Fail fast, before any container starts, on broken or hostile ONNX files;
    returns the source with the external-data files it references."""
    from .onnx_guard import external_data_files, inspect_onnx

    model = inspect_onnx(source.onnx)
    return Source(**{**source.__dict__, "external_data": tuple(external_data_files(model))})
