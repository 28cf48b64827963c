"""The command line: the Invoke tasks of `invoke` (through the checkout's tasks.py)
and of the `wasmforge` console script, which is the same collection.

Every task is a thin wrapper: parse options, call the package, print results.
Only invoke and the standard library are imported here; each task imports what
it needs when it runs, after the cheap checks of its arguments, so `--help`, a
misspelt model name or a bad option answer in a fraction of a second.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from invoke import Collection, Exit, Program, task

from . import __version__


def user_errors(func):
    """Show a UserError (or a broken artifact) as one `error:` line and exit non-zero."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from .artifact import ArtifactError
        from .errors import UserError, WasmRunError

        try:
            return func(*args, **kwargs)
        except UserError as exc:
            raise Exit(f"error: {exc}", code=exc.exit_code) from None
        except (ArtifactError, WasmRunError) as exc:
            raise Exit(f"error: {exc}", code=getattr(exc, "exit_code", 1) or 1) from None
        except KeyboardInterrupt:
            raise Exit("error: interrupted", code=130) from None

    return wrapper


@task(help={"rebuild": "rebuild the images even if cached", "no_cache": "build without Docker's layer cache"})
@user_errors
def image(c, rebuild=False, no_cache=False):
    """Bootstrap the base image (if needed) and build the builder and smoke images."""
    from rich.console import Console

    from . import images

    console = Console(stderr=True)
    client = images.docker_client()
    for ensure in (images.ensure_builder, images.ensure_smoke):
        built = ensure(client, console, rebuild=rebuild, no_cache=no_cache)
        console.print(f"{sorted(built.tags)[0] if built.tags else built.id}  {built.short_id}")


@task(
    help={
        "model": "a model from models.toml (see `invoke models`); repeat to build several",
        "onnx": "path to your own ONNX file (instead of --model); repeatable",
        "onnx_dir": "build every *.onnx file in this directory (names: the file stems)",
        "name": "name of the artifact (default: the model name or the file's stem; one model only)",
        "input_shape": "fix a dynamic input shape, NAME=1x3x224x224 (repeatable)",
        "freeze": "bake an input into the graph: NAME=NUMBER or NAME=FILE.npy (repeatable)",
        "external_params": "keep the weights out of the .wasm: <name>.params.bin beside it "
                           "(in SHA256SUMS); the module then needs --params PATH",
    },
    iterable=["model", "onnx", "input_shape", "freeze"],
)
@user_errors
def build(c, model=None, onnx=None, onnx_dir=None, name=None, input_shape=None, freeze=None,
          external_params=False):
    """Build dist/<name>/: the .wasm, manifest.json, reference data and SHA256SUMS.

    Several models (--model A --model B, --onnx-dir DIR) build in one builder
    container, the Rust runtime compiled once."""
    _check_build_arguments(model or (), onnx or (), name, input_shape or (), freeze or ())
    from .build import build_batch  # numpy, onnx, onnxruntime, docker, wasmtime: only now

    build_batch(models=model or [], onnx_files=onnx or [], onnx_dir=onnx_dir, name=name,
                input_shapes=input_shape or [], freeze=freeze or [], external_params=external_params)


def _check_build_arguments(models, onnx_files, name, input_shapes, freeze) -> None:
    """What can be refused without the heavy modules: unknown or unsafe names, missing
    files, malformed shapes and values. `build_batch` checks all of it again."""
    from .freeze import parse_freeze
    from .registry import check_model_name, get_model
    from .source import parse_input_shapes

    for model in models:
        get_model(model)
    for path in onnx_files:
        if not Path(path).is_file():
            from .errors import UserError

            raise UserError(f"no such file: {path}")
    if name:
        check_model_name(name)
    parse_input_shapes(input_shapes)
    parse_freeze(freeze)


@task(help={"model": "artifact name under dist/", "input": ".npy input file (repeatable)",
            "output": ".npy file to write (repeatable)",
            "time_limit": "seconds the module may run (default 600)",
            "memory_limit": "linear memory the module may use, e.g. 512M or 2G (default 2G)"},
      iterable=["input", "output"])
@user_errors
def run(c, model, input=None, output=None, time_limit=None, memory_limit=None):
    """Run dist/<model>/<model>.wasm on .npy inputs with wasmtime (after checking its hashes)."""
    from .run import run_artifact

    run_artifact(model, [Path(p) for p in input or ()], [Path(p) for p in output or ()],
                 time_limit=time_limit, memory_limit=memory_limit)


@task(help={"model": "artifact name under dist/",
            "rebuild": "also rebuild into a temporary directory and compare every byte",
            "onnx": "with --rebuild, the ONNX file of an artifact built with --onnx"})
@user_errors
def verify(c, model, rebuild=False, onnx=None):
    """Check dist/<model>/ against SHA256SUMS and its manifest; --rebuild checks reproducibility."""
    from .verify import rebuild_and_compare, verify_hashes

    checked = verify_hashes(model)
    print(f"ok: {len(checked)} files match SHA256SUMS and the manifest")
    if rebuild:
        rebuild_and_compare(model, onnx=onnx)


@task(help={"model": "artifact name under dist/ (built from the registry if missing)",
            "build": "rebuild the artifact first, even if dist/<model>/ exists"})
@user_errors
def smoke(c, model, build=False):
    """Verify dist/<model>/ and run its reference cases in the locked-down smoke container."""
    from .smoke_host import smoke as run_smoke

    run_smoke(model, rebuild=build)


@task(help={"model": "artifact name under dist/", "runs": "timed runs per engine, after one warm-up (default 10)",
            "json": "also write the results as JSON to PATH ('-' for stdout)",
            "onnx": "the ONNX file, for artifacts built with --onnx instead of --model"})
@user_errors
def bench(c, model, runs=10, json=None, onnx=None):
    """Time dist/<model>/ under wasmtime against onnxruntime (1 thread, all cores) and native TVM."""
    from .bench import bench as run_bench

    run_bench(model, runs=int(runs), json_path=json, onnx=onnx)


@task(
    help={
        "onnx": "path to an ONNX file",
        "model": "a model from models.toml (instead of --onnx; fetched or generated if needed)",
        "input_shape": "fix a dynamic input shape, NAME=1x3x224x224 (repeatable)",
        "list_ops": "list the ONNX operators the pinned TVM frontend supports instead",
        "markdown": "with --list-ops: print docs/supported-ops.md",
    },
    iterable=["input_shape"],
)
@user_errors
def check(c, onnx=None, model=None, input_shape=None, list_ops=False, markdown=False):
    """Without compiling: operators vs the TVM frontend, opset, dynamic dims, parameters, .wasm size."""
    from . import check as checking

    if list_ops:
        checking.list_ops(markdown=markdown)
    else:
        checking.check(onnx=onnx, model=model, input_shapes=tuple(input_shape or ()))


@task(help={"model": "a model from models.toml", "onnx": "or your own ONNX file",
            "name": "name of the artifact the database is for (default: model name or file stem)",
            "trials": "records wanted per conv task", "max_tasks": "tune at most this many tasks now (0: all)"})
@user_errors
def tune(c, model=None, onnx=None, name=None, trials=64, max_tasks=0):
    """MetaSchedule-tune the conv kernels into tuning/<name>/wasm32-simd128/ (resumable).

    `invoke build` applies the database when it exists and records its sha256."""
    from .tuning import tune as tune_model

    tune_model(model, onnx, name, trials=int(trials), max_tasks=int(max_tasks))


@task(help={"only": "just this corpus model (repeatable)", "list": "list the corpus, fetch nothing",
            "build": "also build them (dist/corpus-<name>/) and compare with onnxruntime",
            "all": "with --build, also the entries marked expected_failure"},
      iterable=["only"])
@user_errors
def corpus(c, only=None, list=False, build=False, all=False):
    """Fetch the real-model corpus (wasmforge/resources/corpus.toml) from PyPI into .cache/corpus/; --build builds it."""
    from wasmforge.corpus import run as run_corpus

    failed = run_corpus(only or (), list_only=list, do_build=build, include_failing=all)
    if failed:
        raise Exit(f"error: {failed} corpus model(s) failed to build", code=1)


@task(help={"suite": "node, light, pytorch-converted, pytorch-operator, simple or all (default all)",
            "jobs": "builder runs at a time (default 1)", "limit": "a fixed, seeded sample of K cases per suite",
            "seed": "the sample's seed (default 0)", "chunk": "cases per builder run (default 50)",
            "json": "write the results as JSON to PATH ('-' for stdout)",
            "docs": "merge the results into docs/conformance.json and regenerate docs/conformance.md",
            "rerun": "ignore cached results", "keep": "keep the built modules under .cache/conformance/work",
            "min_pass": "fail if a suite's pass rate (percent) is below this",
            "only": "only the cases whose name matches one of these comma-separated patterns "
                    "(fnmatch, e.g. 'test_attention_*'); applied after --limit"})
@user_errors
def conformance(c, suite="all", jobs=1, limit=None, seed=0, chunk=50, json=None, docs=False, rerun=False,
                keep=False, min_pass=None, only=None):
    """ONNX backend test cases as wasm: pass / fail / unsupported / build error per case (resumable)."""
    from wasmforge.conformance.run import conformance as run_conformance

    run_conformance(suite, jobs=int(jobs), limit=int(limit) if limit else None, seed=int(seed),
                    chunk=int(chunk), json_path=json, docs=docs, rerun=rerun, keep=keep,
                    min_pass=float(min_pass) if min_pass is not None else None, only=only)


@task
@user_errors
def models(c):
    """List the models in the registry (models.toml)."""
    from .registry import load_registry

    for spec in load_registry().values():
        print(f"{spec.name:16} {spec.description}")


namespace = Collection(image, build, run, verify, smoke, bench, check, tune, models, corpus, conformance)
program = Program(namespace=namespace, version=__version__, name="wasmforge", binary="wasmforge")


def main() -> None:
    """The `wasmforge` console script: `wasmforge build --model lenet-digits` is `invoke build ...`."""
    program.run()


if __name__ == "__main__":
    sys.exit(main())
