"""`invoke build`: registry models or ONNX files -> `dist/<name>/`.

1. resolve each model to a local, hash-checked, vetted ONNX file (source.py);
2. make sure the builder image exists (bootstrapping the base if needed);
3. one builder container for all of them (`python -m wasmforge.compiler build`
   on one request): kernels, plan, params, cargo build -> one `.wasm` each,
   the Rust runtime compiled once;
4. on the host, per model: reference inputs/outputs from onnxruntime, a check
   of the `.wasm` against them under wasmtime, the manifest and SHA256SUMS;
5. rename each staging directory into place. Any failure before that leaves the
   previous `dist/<name>/` untouched and removes the staging directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from rich.console import Console

from . import __version__, artifact, buildlock, images, reference, tuning
from .compiler.request import DEFAULT_FEATURES, FEATURES, BuildRequest, JobResult, ModelJob
from .container import Mount, StepOutput, run_step
from .errors import UserError
from .freeze import frozen_array
from .hashing import sha256_file
from .paths import DIST, ROOT
from .reference import load_case  # lives there so the smoke image can import it
from .runner import PARAMS_SUFFIX, WasmModel, WasmRunError
from .source import Source, resolve_source, vet
from .terminal import make_console

REFERENCE_CASES = 3
PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass
class Outcome:
    """One model of a build: where it was published, or why not."""

    name: str
    path: Path | None = None
    error: UserError | None = None
    seconds: float = 0.0


def build(model: str | None = None, onnx: str | None = None, name: str | None = None, *,
          input_shapes=(), freeze=(), external_params: bool = False, features: str = DEFAULT_FEATURES,
          dist: Path = DIST, tuning_root: Path = tuning.TUNING, console: Console | None = None) -> Path:
    """Build `dist/<name>/`. With `external_params` the weights are not embedded in
    `<name>.wasm` but written beside it as `<name>.params.bin` (in SHA256SUMS and
    the manifest); the module then takes `--params PATH` and checks the file.
    `features` (a key of compiler.request.FEATURES) are the SIMD features the
    kernels may use; a build without the default is recorded in the manifest."""
    source = resolve_source(model, onnx, name, input_shapes=input_shapes, freeze=freeze)
    (outcome,) = build_many([source], external_params=external_params, features=features, dist=dist,
                            tuning_root=tuning_root, console=console)
    if outcome.error is not None:
        raise outcome.error
    return outcome.path


def build_batch(*, models=(), onnx_files=(), onnx_dir=None, name=None, input_shapes=(), freeze=(),
                external_params: bool = False, features: str = DEFAULT_FEATURES, dist: Path = DIST,
                console: Console | None = None) -> list[Outcome]:
    """`invoke build`: one model, or several in one builder container. Raises the
    model's own error for one model; for several, reports each and fails at the end."""
    requests = [(m, None) for m in models] + [(None, str(f)) for f in onnx_files]
    if onnx_dir is not None:
        directory = Path(onnx_dir)
        if not directory.is_dir():
            raise UserError(f"no such directory: {onnx_dir}")
        found = sorted(directory.glob("*.onnx"))
        if not found:
            raise UserError(f"{onnx_dir} holds no .onnx file")
        requests += [(None, str(f)) for f in found]
    if not requests:
        raise UserError("give --model NAME, --onnx PATH or --onnx-dir DIR")
    if len(requests) == 1:
        model, onnx = requests[0]
        path = build(model, onnx, name, input_shapes=input_shapes, freeze=freeze,
                     external_params=external_params, features=features, dist=dist, console=console)
        return [Outcome(path.name, path)]
    if name:
        raise UserError("--name names one artifact; it cannot be used with several models")
    sources = [resolve_source(m, f, None, input_shapes=input_shapes, freeze=freeze) for m, f in requests]
    outcomes = build_many(sources, external_params=external_params, features=features, dist=dist,
                          console=console)
    failed = [o for o in outcomes if o.error is not None]
    console = console or make_console()
    console.print(f"[bold]{len(outcomes) - len(failed)} of {len(outcomes)} built[/]", highlight=False)
    if failed:
        raise UserError(f"{len(failed)} of {len(outcomes)} models failed: "
                        + ", ".join(o.name for o in failed), 1)
    return outcomes


def build_many(sources: list[Source], *, external_params: bool = False, features: str = DEFAULT_FEATURES,
               dist: Path = DIST, tuning_root: Path = tuning.TUNING,
               console: Console | None = None) -> list[Outcome]:
    """Build every source in one builder container; one `Outcome` per source, in order.

    A model that fails does not stop the others; each artifact is byte-identical
    to the one a build of that model alone makes."""
    console = console or make_console()
    if features not in FEATURES:
        raise UserError(f"unknown --features {features!r}; choose one of: {', '.join(FEATURES)}")
    started_on = datetime.now(timezone.utc)
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise UserError(f"two models would both be built as dist/{dup[0]}/; give them different names")
    sources = [vet(s) for s in sources]
    for source in sources:
        console.print(f"[bold]building {source.name}[/] from {source.onnx.name}", highlight=False)
    client = images.docker_client()
    builder = images.ensure_builder(client, console)
    outcomes: list[Outcome] = []
    with contextlib.ExitStack() as stack:
        # One build of a name at a time (sorted: two batches cannot deadlock);
        # then clear what killed builds left.
        with disk_full_named(dist):
            for name in sorted(names):
                stack.enter_context(buildlock.model_lock(dist, name, console))
        stagings: dict[str, Path] = {}
        try:
            for source in sources:
                buildlock.clean_leftovers(dist, source.name, console, client)
                with disk_full_named(dist):
                    stagings[source.name] = artifact.staging_dir(dist, source.name)
            compiled = compile_sources(sources, stagings, client=client, builder=builder, console=console,
                                       external_params=external_params, tuning_root=tuning_root,
                                       features=features)
            for source, done in zip(sources, compiled):
                t0 = time.monotonic()
                outcome = Outcome(source.name)
                try:
                    outcome.path = _finish(source, done.result, stagings.pop(source.name),
                                           dist, builder, console, external_params, done.database,
                                           features)
                except UserError as exc:
                    outcome.error = exc
                    if len(sources) > 1:  # one model: its error line says it all, once
                        console.print(f"[bold red]failed[/] {source.name}: {exc}", highlight=False)
                outcome.seconds = time.monotonic() - t0
                outcomes.append(outcome)
        finally:
            for staging in stagings.values():
                shutil.rmtree(staging, ignore_errors=True)
    _attest(outcomes, client, builder, started_on, console)
    return outcomes


@dataclass
class Compiled:
    """One source after the builder step: its result and, when it built, its `.wasm`."""

    source: Source
    result: JobResult | None  # None: the builder reported nothing for it
    out_dir: Path
    database: Path | None = None  # the tuning database applied, if any

    @property
    def wasm(self) -> Path | None:
        if self.result is None or self.result.error is not None:
            return None
        path = self.out_dir / f"{self.source.name}.wasm"
        return path if path.is_file() else None


def compile_sources(sources: list[Source], out_dirs: dict[str, Path], *, client, builder,
                    console: Console, external_params: bool = False,
                    tuning_root: Path = tuning.TUNING, step_output: StepOutput | None = None,
                    features: str = DEFAULT_FEATURES) -> list[Compiled]:
    """Only the builder step: one container compiles every (vetted) source into
    `out_dirs[name]`; one `Compiled` per source, in order. No reference check, no
    publishing (`build_many` does those). `step_output`, if given, collects the
    result lines as they come, so a caller still has them if the step fails."""
    jobs, mounts, databases = _jobs(sources, out_dirs, external_params, tuning_root, console, features)
    command = ["python3", "-m", "wasmforge.compiler", "build", BuildRequest(jobs).to_json()]
    step = run_step(client, builder.id, command, mounts, console, title="builder",
                    environment={"PYTHONPATH": "/src"}, output=step_output, models=len(jobs))
    results = {r.name: r for r in step.results}
    return [Compiled(s, results.get(s.name), out_dirs[s.name], databases[s.name]) for s in sources]


def _jobs(sources, stagings, external_params, tuning_root, console, features=DEFAULT_FEATURES):
    """The request's jobs and every mount they need (container paths are fixed)."""
    mounts = [Mount(str(PACKAGE_DIR), "/src/wasmforge"), Mount(str(ROOT / "rust_app"), "/src/rust_app")]
    jobs, databases = [], {}
    for index, source in enumerate(sources):
        base = f"/in/{index}"
        mounts.append(Mount(str(source.onnx), f"{base}/model.onnx"))
        for location in source.external_data:
            mounts.append(Mount(str(source.onnx.parent / location), f"{base}/{location}"))
        frozen = {}
        for k, (input_name, entry) in enumerate(sorted(source.frozen.items())):
            if "npy" in entry:
                mounts.append(Mount(entry["npy"], f"{base}/frozen{k}.npy"))
                entry = {"npy": f"{base}/frozen{k}.npy"}
            frozen[input_name] = entry
        out = f"/out/{index}"
        mounts.append(Mount(str(stagings[source.name]), out, read_only=False))
        database = tuning.find_database(source.name, tuning_root)
        databases[source.name] = database
        tuning_db = None
        if database is not None:
            console.print(f"applying tuning database {database}")
            tuning_db = f"/tuning/{index}"
            mounts.append(Mount(str(database), tuning_db))
        jobs.append(ModelJob(name=source.name, onnx=f"{base}/model.onnx", out=out,
                             input_shapes=source.input_shapes, frozen=frozen,
                             external_params=external_params, tuning_db=tuning_db,
                             features=features, preprocessing=preprocessing_of(source)))
    return jobs, mounts, databases


def _finish(source: Source, result: JobResult | None, staging: Path, dist: Path, builder, console,
            external_params: bool, database: Path | None, features: str = DEFAULT_FEATURES) -> Path:
    """Check one compiled model against onnxruntime and publish it."""
    final = dist / source.name
    try:
        with disk_full_named(staging, final):
            if result is None:
                raise UserError(f"the builder reported nothing for {source.name}", 1)
            if result.error is not None:
                if DISK_FULL_TEXT in result.error:  # the builder writing into the staging directory
                    raise OSError(errno.ENOSPC, DISK_FULL_TEXT)
                raise UserError(result.error, result.exit_code or 1)
            graph_info = result.graph
            frozen = _frozen_values(source)
            cases = write_reference(staging, source.onnx, graph_info, frozen)
            check_against_reference(staging / f"{source.name}.wasm", staging, cases, console,
                                    external_params=external_params)
            write_manifest(staging, source, graph_info, builder, cases, external_params=external_params,
                           tuning_digest=database and tuning.database_digest(database), features=features)
            artifact.write_sums(staging)
            artifact.publish(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    console.print(f"[bold green]built[/] {_shown(final)}", highlight=False)
    return final


def preprocessing_of(source: Source) -> str | None:
    """The registry's input preprocessing of a registry model (None for a file)."""
    from .registry import get_model

    registry_name = source.description.get("registry")
    return get_model(registry_name).preprocessing if registry_name else None


DISK_FULL_TEXT = os.strerror(errno.ENOSPC)  # "No space left on device"


@contextlib.contextmanager
def disk_full_named(where: Path, final: Path | None = None):
    """A full disk (or quota) while writing under `where` becomes one line naming the
    path; the caller's clean-up then removes what was half written, and `final`
    (the previous artifact) is untouched."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        path = Path(exc.filename) if isinstance(exc.filename, str) else where
        kept = f"; {_shown(final)} is unchanged" if final is not None and final.exists() else ""
        raise UserError(f"no space left on device writing {_shown(path)}{kept}", 1) from None


def _shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def _frozen_values(source: Source) -> dict[str, np.ndarray]:
    """The frozen inputs as onnxruntime must see them (the input's declared dtype)."""
    if not source.frozen:
        return {}
    import onnx

    from .compiler.frontend import declared_dim

    model = onnx.load(str(source.onnx), load_external_data=False)
    declared = {v.name: v for v in model.graph.input}
    values = {}
    for name, entry in source.frozen.items():
        if name not in declared:
            raise UserError(f"--freeze {name}: the model has no input named '{name}'")
        tensor_type = declared[name].type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        shape = [declared_dim(d) for d in tensor_type.shape.dim]
        values[name] = frozen_array(entry, dtype, source.input_shapes.get(name, shape))
    return values


def _attest(outcomes: list[Outcome], client, builder, started_on, console) -> None:
    # Outside dist/<name>/ (it names image ids and times, which differ between
    # two otherwise identical builds): dist/<name>.attestations/.
    from . import attest

    for outcome in outcomes:
        if outcome.path is not None:
            attest.write_attestations(outcome.path, client=client, builder_image=builder,
                                      command=attest.command_line(), started=started_on,
                                      finished=datetime.now(timezone.utc))


def write_reference(staging: Path, onnx_path: Path, graph_info: dict,
                    frozen: dict[str, np.ndarray] | None = None) -> int:
    """Seeded inputs and onnxruntime's outputs, kept with the artifact for smoke tests."""
    all_inputs = [reference.seeded_inputs(graph_info["inputs"], seed=case) for case in range(REFERENCE_CASES)]
    # A model TVM took but onnxruntime refuses (e.g. an opset it has no kernel
    # for) is the input's fault: one line and exit code 2, not a traceback.
    try:
        sess = reference.session(onnx_path)
        all_outputs = [reference.run_reference(sess, inputs, frozen) for inputs in all_inputs]
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
                   external_params: bool = False, tuning_digest: str | None = None,
                   features: str = DEFAULT_FEATURES) -> artifact.Manifest:
    tool_versions = {k: v for k, v in images.image_versions(builder).items() if k != "inputs"}
    files = {name: artifact.FileRecord.of(staging / name) for name in artifact.artifact_files(staging)}
    params = None
    if external_params:
        name = params_file_name(source.name)
        params = artifact.ParamsRecord(name, files[name].sha256, files[name].size)
    frozen = None
    if source.frozen:
        # Their values, or the .npy's sha256.
        frozen = {name: artifact.FrozenRecord(value=entry["value"]) if "value" in entry
                  else artifact.FrozenRecord(sha256=sha256_file(Path(entry["npy"])))
                  for name, entry in sorted(source.frozen.items())}
    tuning_record = None
    if tuning_digest:
        tuning_record = artifact.TuningRecord(f"tuning/{source.name}/{tuning.TARGET_NAME}", tuning_digest)
    pins = images.load_pins()
    manifest = artifact.Manifest(
        name=source.name,
        wasm=f"{source.name}.wasm",
        wasmforge=__version__,
        source=artifact.SourceRecord.from_dict(source.description),
        inputs=tuple(artifact.TensorRecord.from_dict(t) for t in graph_info["inputs"]),
        outputs=tuple(artifact.TensorRecord.from_dict(t) for t in graph_info["outputs"]),
        target=artifact.TargetRecord("wasm32-wasip1", graph_info["target"]),
        toolchain={**tool_versions, **graph_info["versions"]},
        # The recipe, not the image id: ids differ between two builds of the
        # same recipe, and the manifest must be reproducible. The exact image
        # id is in the provenance statement beside the artifact.
        builder_image=artifact.BuilderImageRecord(images.recipe_digest("builder", pins), images.base_tag(pins)),
        kernels=graph_info["kernels"],
        kernel_calls=graph_info["calls"],
        params_size=graph_info["params_size"],
        reference=artifact.ReferenceRule(cases, reference.RELATIVE_TOLERANCE, reference.ABSOLUTE_FLOOR),
        files=files,
        params=params,
        frozen=frozen,
        tuning=tuning_record,
        # Only when not the default: a default build's manifest keeps its keys.
        features=None if features == DEFAULT_FEATURES else features,
        preprocessing=preprocessing_of(source),
    )
    manifest.write(staging)
    return manifest
