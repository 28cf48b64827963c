"""The command line: the Invoke tasks of `invoke` (through the checkout's tasks.py)
and of the `wasmforge` console script, which is the same collection.

Every task is a thin wrapper: parse options, call the package, print results.
Only invoke and the standard library are imported here; each task imports what
it needs when it runs, after the cheap checks of its arguments, so `--help`, a
misspelt model name or a bad option answer in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
import sys
from pathlib import Path

from invoke import Collection, Exit, Program, task

from . import __version__


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: every clean-up that runs for Ctrl-C runs for it too
    (staging directories, containers, the sandbox child, the build lock)."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def user_errors(func):
    """Show a UserError (or a broken artifact) as one `error:` line and exit non-zero;
    SIGTERM cleans up like Ctrl-C."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from .artifact import ArtifactError
        from .errors import UserError, WasmRunError

        try:
            with _sigterm_as_interrupt():
                return func(*args, **kwargs)
        except Terminated:
            raise Exit("error: terminated", code=143) from None
        except UserError as exc:
            raise Exit(f"error: {exc}", code=exc.exit_code) from None
        except (ArtifactError, WasmRunError) as exc:
            raise Exit(f"error: {exc}", code=getattr(exc, "exit_code", 1) or 1) from None
        except KeyboardInterrupt:
            raise Exit("error: interrupted", code=130) from None
        except OSError as exc:
            import errno

            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            where = f" writing {exc.filename}" if exc.filename else ""
            raise Exit(f"error: no space left on device{where}", code=1) from None

    return wrapper


def _number(value, option: str, kind=int, minimum=None, allow_none: bool = False):
    """An option's value as `kind` (int or float), at least `minimum`: else one `error:` line."""
    from .errors import UserError

    if value is None and allow_none:
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number != number or number in (float("inf"), float("-inf")) or \
            (minimum is not None and number < minimum):
        wanted = "an integer" if kind is int else "a number"
        bound = f" >= {minimum}" if minimum is not None else ""
        raise UserError(f"--{option} must be {wanted}{bound}, got {value!r}")
    return number


def _existing_file(path, option: str) -> None:
    from .errors import UserError

    if path is not None and not Path(path).is_file():
        raise UserError(f"--{option}: no such file: {path}")


def _required(value, option: str, what: str) -> None:
    """A required option given as a flag, not a positional argument: invoke would take the
    token after a task with a required positional (even `--help`) as its value."""
    from .errors import UserError

    if not value:
        raise UserError(f"give --{option} {what}", 2)


def _json_target(path, option: str = "json") -> None:
    """`-` or a file in an existing directory."""
    from .errors import UserError

    if path is not None and path != "-":
        target = Path(path)
        if not target.parent.is_dir():
            raise UserError(f"--{option}: cannot write {path}: no such directory {target.parent}")
        if target.is_dir():
            raise UserError(f"--{option}: {path} is a directory")


@task(help={"rebuild": "rebuild the images even if cached", "no_cache": "build without Docker's layer cache"})
@user_errors
def image(c, rebuild=False, no_cache=False):
    """Bootstrap the base image (if needed) and build the builder and smoke images."""
    from . import images
    from .terminal import make_console

    console = make_console()
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
        "signing_key": "Ed25519 private key (PEM) to sign the provenance with "
                       "(default: $WASMFORGE_SIGNING_KEY; see `invoke keygen`)",
        "features": "relaxed-simd (default, fastest: wasmtime, Chromium, Node 22+) or simd128 "
                    "(portable: also Node 20, Firefox, Safari)",
    },
    iterable=["model", "onnx", "input_shape", "freeze"],
)
@user_errors
def build(c, model=None, onnx=None, onnx_dir=None, name=None, input_shape=None, freeze=None,
          external_params=False, signing_key=None, features="relaxed-simd"):
    """Build dist/<name>/: the .wasm, manifest.json, reference data and SHA256SUMS.

    Several models (--model A --model B, --onnx-dir DIR) build in one builder
    container, the Rust runtime compiled once."""
    _check_build_arguments(model or (), onnx or (), name, input_shape or (), freeze or (), features)
    key = _signing_key(signing_key, "provenance of this build will be unsigned")
    from .build import build_batch  # numpy, onnx, onnxruntime, docker, wasmtime: only now
    from .signing import using

    with using(key):
        build_batch(models=model or [], onnx_files=onnx or [], onnx_dir=onnx_dir, name=name,
                    input_shapes=input_shape or [], freeze=freeze or [], external_params=external_params,
                    features=features)


def _signing_key(option, unsigned_note):
    """The private key of --signing-key or $WASMFORGE_SIGNING_KEY (loaded, so a bad key
    fails before any work), or None after a one-line warning."""
    from .signing import KEY_ENV, load_private_key, signing_key_source

    source = signing_key_source(option)
    if source is None:
        print(f"warning: no --signing-key or ${KEY_ENV}: the {unsigned_note} "
              "(`invoke keygen` makes a key pair)", file=sys.stderr)
        return None
    return load_private_key(source)


def _check_build_arguments(models, onnx_files, name, input_shapes, freeze, features="relaxed-simd") -> None:
    """What can be refused without the heavy modules: unknown or unsafe names, missing
    files, malformed shapes and values. `build_batch` checks all of it again."""
    from .compiler.request import FEATURES
    from .errors import UserError
    from .freeze import parse_freeze

    if features not in FEATURES:
        raise UserError(f"unknown --features {features!r}; choose one of: {', '.join(FEATURES)}")
    from .registry import check_model_name, get_model
    from .source import parse_input_shapes

    for model in models:
        get_model(model)
    for path in onnx_files:
        if not Path(path).is_file():
            raise UserError(f"no such file: {path}")
    if name:
        check_model_name(name)
    parse_input_shapes(input_shapes)
    parse_freeze(freeze)


@task(positional=[], help={"model": "artifact name under dist/",
            "input": ".npy input file, '-' for stdin (repeatable; or one .npz of every input by name)",
            "output": ".npy file to write, '-' for stdout (repeatable; or one .npz of every output)",
            "overwrite": "replace an existing output file",
            "time_limit": "seconds the module may run, wall clock (default 600)",
            "memory_limit": "linear memory the module may use, e.g. 512M or 2G (default 2G)"},
      iterable=["input", "output"])
@user_errors
def run(c, model, input=None, output=None, overwrite=False, time_limit=None, memory_limit=None):
    """Run dist/<model>/<model>.wasm on .npy inputs with wasmtime (after checking its hashes)."""
    _required(model, "model", "NAME (an artifact under dist/)")
    from .run import run_artifact

    run_artifact(model, list(input or ()), list(output or ()), time_limit=time_limit,
                 memory_limit=memory_limit, overwrite=overwrite)


@task(positional=[], help={"model": "artifact name under dist/",
            "rebuild": "also rebuild into a temporary directory and compare every byte",
            "onnx": "with --rebuild, the ONNX file of an artifact built with --onnx",
            "provenance": "also check dist/<model>.attestations/: subjects vs every file, source commit, "
                          "and the signature with --public-key",
            "public_key": "Ed25519 public key (PEM) the provenance must be signed with (implies --provenance)"})
@user_errors
def verify(c, model, rebuild=False, onnx=None, provenance=False, public_key=None):
    """Check dist/<model>/ against SHA256SUMS and its manifest; --provenance checks the
    signed provenance; --rebuild checks reproducibility."""
    _required(model, "model", "NAME (an artifact under dist/)")
    _existing_file(onnx, "onnx")
    from .verify import rebuild_and_compare, verify_hashes, verify_provenance

    # With --provenance the signature is checked before anything parses the statement.
    lines = verify_provenance(model, public_key=public_key) if provenance or public_key else []
    checked = verify_hashes(model)
    print(f"ok: {len(checked)} files match SHA256SUMS and the manifest")
    for line in lines:
        print(line)
    if rebuild:
        rebuild_and_compare(model, onnx=onnx)


@task(help={"out": "where to write the private key (default ~/.config/wasmforge/signing-key.pem); "
                   "the public key goes to OUT.pub"})
@user_errors
def keygen(c, out=None):
    """Make an Ed25519 key pair for signing provenance (`invoke build --signing-key`)."""
    from .signing import KEY_ENV, generate_keypair

    if out is None:
        path = Path.home() / ".config" / "wasmforge" / "signing-key.pem"
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    else:
        path = Path(out)
    public, keyid = generate_keypair(path)
    print(f"private key: {path} (mode 0600; keep it out of the checkout, dist/ and images; "
          f"or put its PEM text in ${KEY_ENV})")
    print(f"public key:  {public} (keyid {keyid}): give it to `invoke verify --public-key`")


@task(help={"model": "artifact name under dist/ (repeatable)",
            "signing_key": "Ed25519 private key (PEM); default $WASMFORGE_SIGNING_KEY"},
      iterable=["model"])
@user_errors
def sign(c, model=None, signing_key=None):
    """Sign the provenance of built artifacts (checked against their files first)."""
    from .errors import UserError
    from .paths import DIST
    from .provenance import sign as sign_provenance
    from .run import artifact_dir
    from .signing import KEY_ENV, load_private_key, signing_key_source

    if not model:
        raise UserError("give at least one --model NAME")
    directories = [artifact_dir(m, DIST) for m in model]
    source = signing_key_source(signing_key)
    if source is None:
        raise UserError(f"no key: pass --signing-key PATH or set ${KEY_ENV}")
    key = load_private_key(source)
    for directory in directories:
        keyid = sign_provenance(directory, key)
        print(f"signed: {directory.name}.attestations/ (keyid {keyid[:16]}...)")


@task(positional=[], help={"model": "artifact name under dist/ (built from the registry if missing)",
            "build": "rebuild the artifact first, even if dist/<model>/ exists"})
@user_errors
def smoke(c, model, build=False):
    """Verify dist/<model>/ and run its reference cases in the locked-down smoke container."""
    _required(model, "model", "NAME (an artifact under dist/, or a registry model)")
    from .smoke_host import smoke as run_smoke

    run_smoke(model, rebuild=build)


@task(positional=[], help={"model": "artifact name under dist/ (repeat for several: each is benched, then a summary table)",
            "runs": "timed runs per engine, after one warm-up (default 10)",
            "json": "also write the results as JSON to PATH ('-' for stdout)",
            "onnx": "the ONNX file, for artifacts built with --onnx instead of --model",
            "rounds": "alternate the engines in this many rounds, the runs split over them (default 3)",
            "tract": "also measure the tract wasm peer (built once per machine, ~20 min; default on)"},
      iterable=["model"])
@user_errors
def bench(c, model, runs=None, json=None, onnx=None, rounds=None, tract=True):
    """Time dist/<model>/ under wasmtime against tract (wasm), onnxruntime (1 thread, all cores) and native TVM."""
    runs = _number(10 if runs is None else runs, "runs", int, 1)  # a None default: invoke would int() it
    rounds = _number(3 if rounds is None else rounds, "rounds", int, 1)
    from .errors import UserError

    _required(model, "model", "NAME (an artifact under dist/; repeat it for several)")
    if onnx and len(model) > 1:
        raise UserError("--onnx names the ONNX file of one artifact: bench one --model with it", 2)
    _json_target(json)
    _existing_file(onnx, "onnx")
    if len(model) == 1:
        from .bench import bench as run_bench

        run_bench(model[0], runs=runs, json_path=json, onnx=onnx, rounds=rounds, tract=tract)
        return
    from .bench_summary import bench_models

    bench_models(model, json_path=json, runs=runs, rounds=rounds, tract=tract)


@task(positional=[], help={"model": "artifact name under dist/",
            "runs": "inferences in one instance, every kernel call timed in each (default 5; medians reported)",
            "json": "also write the profile as JSON to PATH ('-' for stdout)",
            "top": "kernel calls to list, slowest first (default 15)"})
@user_errors
def profile(c, model, runs=None, json=None, top=None):
    """Where the time goes: time every kernel call of dist/<model>/ (--profile), with GFLOP/s and % of the wasm SIMD peak."""
    _required(model, "model", "NAME (an artifact under dist/)")
    from .profile import DEFAULT_RUNS, DEFAULT_TOP

    runs = _number(DEFAULT_RUNS if runs is None else runs, "runs", int, 1)
    top = _number(DEFAULT_TOP if top is None else top, "top", int, 1)
    _json_target(json)
    from .profile import profile as run_profile

    run_profile(model, runs=runs, json_path=json, top=top)


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
    _existing_file(onnx, "onnx")
    from . import check as checking

    if list_ops:
        checking.list_ops(markdown=markdown)
    else:
        checking.check(onnx=onnx, model=model, input_shapes=tuple(input_shape or ()))


@task(help={"model": "a model from models.toml", "onnx": "or your own ONNX file",
            "name": "name of the artifact the database is for (default: model name or file stem)",
            "trials": "with --space generic: records wanted per conv task (default 64)",
            "space": "hand (default: every variant of the hand schedules, each timed) or generic "
                     "(MetaSchedule's LLVM search space, --trials records per task)",
            "max_tasks": "tune at most this many tasks now (default 0: all)",
            "only": "tune just this task (repeatable; names as the tuner lists them)",
            "measure": "wasm (default: each candidate timed as wasm under wasmtime) or native (SSE proxy)",
            "min_gain": "keep a task's record only if it takes this fraction less time than the hand "
                        "schedule (default 0.05)"},
      iterable=["only"])
@user_errors
def tune(c, model=None, onnx=None, name=None, trials=None, max_tasks=None, only=None, measure="wasm",
         min_gain=None, space="hand"):
    """Tune the conv kernels, timed as wasm, into tuning/<name>/wasm32-simd128/ (resumable).

    `invoke build` applies the database when it exists and records its sha256."""
    trials = _number(64 if trials is None else trials, "trials", int, 1)
    max_tasks = _number(0 if max_tasks is None else max_tasks, "max-tasks", int, 0)
    _existing_file(onnx, "onnx")
    if model:
        from .registry import get_model

        get_model(model)
    from .tuning import tune as tune_model

    min_gain = _number(0.05 if min_gain is None else min_gain, "min-gain", float, 0)
    tune_model(model, onnx, name, trials=trials, max_tasks=max_tasks, only=tuple(only or ()),
               measure=measure, min_gain=min_gain, space=space)


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
def conformance(c, suite="all", jobs=None, limit=None, seed=None, chunk=None, json=None, docs=False, rerun=False,
                keep=False, min_pass=None, only=None):
    """ONNX backend test cases as wasm: pass / fail / unsupported / build error per case (resumable)."""
    jobs = _number(1 if jobs is None else jobs, "jobs", int, 1)
    chunk = _number(50 if chunk is None else chunk, "chunk", int, 1)
    seed = _number(0 if seed is None else seed, "seed", int, 0)
    limit = _number(limit, "limit", int, 1, allow_none=True)
    min_pass = _number(min_pass, "min-pass", float, 0, allow_none=True)
    _json_target(json)
    from wasmforge.conformance.run import conformance as run_conformance

    run_conformance(suite, jobs=jobs, limit=limit, seed=seed, chunk=chunk, json_path=json, docs=docs,
                    rerun=rerun, keep=keep, min_pass=min_pass, only=only)


@task(positional=[], help={"first": "one runner's dist/ directory", "second": "the other runner's dist/ directory",
            "model": "the models both must have built (repeatable; default: every artifact found)"},
      iterable=["model"])
@user_errors
def compare_builds(c, first, second, model=None):
    """Release gate: two independent builds' SHA256SUMS must be identical for every model."""
    _required(first, "first", "DIR (one runner's dist/)")
    _required(second, "second", "DIR (the other runner's dist/)")
    from .release import compare_builds as compare

    for name in compare(Path(first), Path(second), model or None):
        print(f"identical: {name}")


@task
@user_errors
def models(c):
    """List the models in the registry (models.toml)."""
    from .registry import load_registry

    for spec in load_registry().values():
        print(f"{spec.name:16} {spec.description}")
        print(f"{'':16} preprocessing: {spec.preprocessing}")


namespace = Collection(image, build, run, verify, smoke, bench, profile, check, tune, models, corpus, conformance,
                       keygen, sign, compare_builds)
program = Program(namespace=namespace, version=__version__, name="wasmforge", binary="wasmforge")


def main() -> None:
    """The `wasmforge` console script: `wasmforge build --model lenet-digits` is `invoke build ...`."""
    program.run()


if __name__ == "__main__":
    sys.exit(main())
