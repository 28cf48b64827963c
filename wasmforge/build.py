"""`invoke build`: a registry model or an ONNX file -> `dist/<name>/`.

1. resolve the model to a local, hash-checked ONNX file (host);
2. make sure the builder image exists (bootstrapping the base if needed);
3. in the builder container: kernels, plan, params, cargo build -> `.wasm`;
4. on the host: reference inputs/outputs from onnxruntime, a check of the
   `.wasm` against them under wasmtime, the manifest and SHA256SUMS;
5. rename the staging directory into place. Any failure before that leaves the
   previous `dist/<name>/` untouched and removes the staging directory.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from rich.console import Console

from . import __version__, artifact, attest, buildlock, images, reference, tuning
from .container import Mount, StepRun, run_step
from .errors import UserError
from .fetch import model_path
from .hashing import sha256_file
from .paths import DIST, ROOT
from .reference import load_case  # lives there so the smoke image can import it
from .registry import check_model_name, get_model
from .runner import PARAMS_SUFFIX, WasmModel, WasmRunError

REFERENCE_CASES = 3


@dataclass
class Source:
    """The model to build, resolved to a local ONNX file."""

    name: str
    onnx: Path
    description: dict  # what the manifest records about where it came from
    # NAME=1x3x224x224 specs: the registry's static shapes fix dynamic dims
    # (e.g. the zoo's batch N) of registry models.
    input_shapes: tuple[str, ...] = ()


def resolve_source(model: str | None, onnx: str | None, name: str | None) -> Source:
    if bool(model) == bool(onnx):
        raise UserError("give exactly one of --model NAME or --onnx PATH")
    if model:
        spec = get_model(model)
        if name:
            check_model_name(name)
        path = model_path(spec)
        shapes = tuple(f"{t.name}={'x'.join(map(str, t.shape))}" for t in spec.inputs)
        return Source(name or spec.name, path, {"registry": spec.name, "sha256": spec.sha256},
                      shapes)
    path = Path(onnx)
    if not path.is_file():
        raise UserError(f"no such file: {onnx}")
    final_name = name or path.stem
    check_model_name(final_name)
    return Source(final_name, path.resolve(), {"file": path.name, "sha256": sha256_file(path)})


def check_onnx(path: Path) -> None:
    """Fail fast, before any container starts, on broken or hostile ONNX files."""
    from .onnx_guard import inspect_onnx

    inspect_onnx(path)


def build(model: str | None = None, onnx: str | None = None, name: str | None = None, *,
          input_shapes: tuple[str, ...] = (), external_params: bool = False, dist: Path = DIST,
          tuning_root: Path = tuning.TUNING, console: Console | None = None) -> Path:
    """Build `dist/<name>/`. With `external_params` the weights are not embedded in
    `<name>.wasm` but written beside it as `<name>.params.bin` (in SHA256SUMS and
    the manifest); the module then takes `--params PATH` and checks the file."""
    console = console or Console(stderr=True)
    started = time.monotonic()
    started_on = datetime.now(timezone.utc)
    source = resolve_source(model, onnx, name)
    check_onnx(source.onnx)
    console.print(f"[bold]building {source.name}[/] from {source.onnx.name}")

    client = images.docker_client()
    builder = images.ensure_builder(client, console)

    # One build of a name at a time; then clear what killed builds left.
    with buildlock.model_lock(dist, source.name, console):
        buildlock.clean_leftovers(dist, source.name, console, client)
        staging = artifact.staging_dir(dist, source.name)
        try:
            command = ["python3", "/src/scripts/build_module.py", "--onnx", "/in/model.onnx",
                       "--name", source.name, "--out", "/out"]
            for spec in input_shapes or source.input_shapes:
                command += ["--input-shape", spec]
            if external_params:
                command.append("--external-params")
            mounts = [Mount(str(ROOT), "/src"), Mount(str(source.onnx), "/in/model.onnx"),
                      Mount(str(staging), "/out", read_only=False)]
            database = tuning.find_database(source.name, tuning_root)
            if database is not None:
                console.print(f"applying tuning database {database}")
                mounts.append(Mount(str(database), "/tuning"))
                command += ["--tuning-db", "/tuning"]
            run_step(
                client,
                StepRun(image=builder.id, command=command, mounts=mounts),
                console,
                title="builder",
            )
            graph_info = json.loads((staging / "graph-info.json").read_text())
            (staging / "graph-info.json").unlink()
            cases = write_reference(staging, source.onnx, graph_info)
            check_against_reference(staging / f"{source.name}.wasm", staging, cases, console,
                                    external_params=external_params)
            write_manifest(staging, source, graph_info, builder, cases, external_params=external_params,
                           tuning_digest=database and tuning.database_digest(database))
            artifact.write_sums(staging)
            final = dist / source.name
            artifact.publish(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        # Outside dist/<name>/ (it names image ids and times, which differ between
        # two otherwise identical builds): dist/<name>.attestations/.
        attest.write_attestations(final, client=client, builder_image=builder,
                                  command=attest.command_line(), started=started_on,
                                  finished=datetime.now(timezone.utc))
    console.print(f"[bold green]built[/] {final.relative_to(ROOT) if final.is_relative_to(ROOT) else final}"
                  f" in {time.monotonic() - started:.1f} s")
    return final


def write_reference(staging: Path, onnx_path: Path, graph_info: dict) -> int:
    """Seeded inputs and onnxruntime's outputs, kept with the artifact for smoke tests."""
    all_inputs = [reference.seeded_inputs(graph_info["inputs"], seed=case) for case in range(REFERENCE_CASES)]
    # A model TVM took but onnxruntime refuses (e.g. an opset it has no kernel
    # for) is the input's fault: one line and exit code 2, not a traceback.
    try:
        sess = reference.session(onnx_path)
        all_outputs = [reference.run_reference(sess, inputs) for inputs in all_inputs]
    except Exception as exc:  # onnxruntime raises its own error classes
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"onnxruntime cannot run {onnx_path.name}: {first}") from None
    ref_dir = staging / "reference"
    for case, (inputs, outputs) in enumerate(zip(all_inputs, all_outputs)):
        case_dir = ref_dir / f"case{case}"
        case_dir.mkdir(parents=True)
        for index, array in enumerate(inputs):
            np.save(case_dir / f"input{index}.npy", array, allow_pickle=False)
        for index, array in enumerate(outputs):
            np.save(case_dir / f"output{index}.npy", array, allow_pickle=False)
    return REFERENCE_CASES


def check_against_reference(wasm: Path, directory: Path, cases: int, console: Console, *,
                            external_params: bool = False) -> None:
    """The build fails if the module disagrees with onnxruntime."""
    params = params_file_name(wasm.stem) if external_params else None
    if params is not None and not (directory / params).is_file():
        raise UserError(f"the builder wrote no {params}", 1)
    module = WasmModel(wasm, params_path=directory / params if params else None)
    foreign = sorted({m for m, _ in module.imports()} - {"wasi_snapshot_preview1"})
    if foreign:
        raise UserError(f"{wasm.name} imports from {', '.join(foreign)}; only WASI is allowed", 1)
    try:
        external = module.external_params
    except WasmRunError as exc:
        raise UserError(f"{wasm.name} --info failed: {exc}", 1) from None
    if external != external_params:
        raise UserError(f"{wasm.name} {'reads' if external else 'embeds'} its weights, "
                        f"but the build asked for {'external' if external_params else 'embedded'} weights", 1)
    for case in range(cases):
        inputs, expected = load_case(directory, case)
        try:
            result = module.run(inputs)
        except WasmRunError as exc:
            raise UserError(f"{wasm.name} failed on reference case {case}: {exc}", 1) from None
        comparison = reference.compare(result.outputs, expected)
        if not comparison.ok:
            raise UserError(
                f"{wasm.name} disagrees with onnxruntime on case {case}: max abs diff "
                f"{comparison.max_abs_diff:.3g} (tolerance {comparison.tolerance:.3g}), "
                f"same top-1: {comparison.same_top1}", 1)
        console.print(f"[bold cyan]verify[/] case {case}: max abs diff {comparison.max_abs_diff:.2e}"
                      f" (max |ref| {comparison.max_abs_ref:.3g}), top-1 equal")


def params_file_name(name: str) -> str:
    """The weights file of an --external-params artifact, beside `<name>.wasm`."""
    return f"{name}{PARAMS_SUFFIX}"


def write_manifest(staging: Path, source: Source, graph_info: dict, builder, cases: int, *,
                   external_params: bool = False, tuning_digest: str | None = None) -> None:
    tool_versions = {k: v for k, v in images.image_versions(builder).items() if k != "inputs"}
    files = {
        name: {"sha256": sha256_file(staging / name), "size": (staging / name).stat().st_size}
        for name in artifact.artifact_files(staging)
    }
    manifest = {
        "format": 1,
        "name": source.name,
        "wasm": f"{source.name}.wasm",
        "wasmforge": __version__,
        "source": source.description,
        "inputs": graph_info["inputs"],
        "outputs": graph_info["outputs"],
        "target": {"wasm": "wasm32-wasip1", "tvm": graph_info["target"]},
        "toolchain": {**tool_versions, **graph_info["versions"]},
        # The recipe, not the image id: ids differ between two builds of the
        # same recipe, and the manifest must be reproducible. The exact image
        # id is in the provenance statement beside the artifact.
        "builder_image": {"recipe": images.recipe_digest("builder", images.load_pins()),
                          "base": images.base_tag(images.load_pins())},
        "kernels": graph_info["kernels"],
        "kernel_calls": graph_info["calls"],
        "params_size": graph_info["params_size"],
        "reference": {"cases": cases, "relative_tolerance": reference.RELATIVE_TOLERANCE,
                      "absolute_floor": reference.ABSOLUTE_FLOOR},
        "files": files,
    }
    if external_params:
        # Only then: an embedded build's manifest stays byte-identical to the
        # ones made before external weights existed (no key means embedded).
        params = params_file_name(source.name)
        manifest["params"] = {"file": params, **files[params]}
    if tuning_digest:
        # Likewise only when a database was applied.
        manifest["tuning"] = {"database": f"tuning/{source.name}/{tuning.TARGET_NAME}",
                              "sha256": tuning_digest}
    (staging / artifact.MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
