"""In the builder container: a `BuildRequest` -> one `<name>.wasm` per job.

Paths inside the container are fixed (the host mounts the package at /src
read-only, each model under /in, each staging directory under /out, and /work
is scratch), so no host path can leak into an artifact. The Rust workspace is
copied once and built with one target directory: the runtime crates compile
for the first model only; later models re-run the model crate's build script,
compile their own small crate and link.

Each step prints a `==> name` line, which the host turns into progress with
timings; each job ends with one result line (see request.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .interleave import interleave
from .request import DEFAULT_FEATURES, FEATURES, STEP_PREFIX, BuildRequest, JobResult, ModelJob

SRC = Path("/src")
WORK = Path("/work")
WASM_TARGET = "wasm32-wasip1"


def step(name: str) -> None:
    print(f"{STEP_PREFIX}{name}", flush=True)


def build_wasm(graph_dir: Path, name: str, out_dir: Path, external_params: bool = False, *,
               features: str = DEFAULT_FEATURES, preprocessing: str | None = None) -> Path:
    """cargo build the `rust_app` workspace with the graph embedded (with
    `external_params`, all of it but the weights: they go to
    `<name>.params.bin` beside the module). `features` and `preprocessing`
    reach the module's --info through model/build.rs; the Rust code itself is
    compiled with rustc's default wasm32-wasip1 features whatever `features`
    says (only the kernels use SIMD)."""
    # A copy at a fixed path: cargo writes beside the sources, and the fixed
    # path keeps the build independent of where the repository was checked out.
    crate_dir = WORK / "rust_app"
    if not crate_dir.is_dir():
        shutil.copytree(SRC / "rust_app", crate_dir, ignore=shutil.ignore_patterns("target"))
    env = dict(os.environ)
    env.update(
        {
            "WASMFORGE_GRAPH_DIR": str(graph_dir),
            "CARGO_TARGET_DIR": str(WORK / "target"),
            "CARGO_HOME": str(WORK / "cargo-home"),
            "CARGO_TARGET_WASM32_WASIP1_LINKER": "wasm-ld",
            # No absolute build paths in the binary.
            "RUSTFLAGS": f"--remap-path-prefix={WORK}=/build",
        }
    )
    if external_params:
        env["WASMFORGE_EXTERNAL_PARAMS"] = "1"
    else:
        env.pop("WASMFORGE_EXTERNAL_PARAMS", None)
    env["WASMFORGE_KERNEL_FEATURES"] = ",".join(f.lstrip("+") for f in FEATURES[features])
    if preprocessing:
        env["WASMFORGE_PREPROCESSING"] = preprocessing
    else:
        env.pop("WASMFORGE_PREPROCESSING", None)
    command = [
        "cargo", "build", "--release", "--locked", "--offline",
        "--target", WASM_TARGET, "-p", "wasmforge-model",
    ]
    subprocess.run(command, cwd=crate_dir, env=env, check=True)
    built = WORK / "target" / WASM_TARGET / "release" / "wasmforge-model.wasm"
    wasm = out_dir / f"{name}.wasm"
    code, stretches = interleave(built.read_bytes())
    print(f"interleaved the multiply-add chains of {stretches} loop bodies", flush=True)
    wasm.write_bytes(code)
    if external_params:
        shutil.copyfile(graph_dir / "params.bin", out_dir / f"{name}.params.bin")
    return wasm


def build_job(job: ModelJob) -> JobResult:
    """Compile one model; every failure becomes the job's result, never an exception."""
    from .frontend import ModelError
    from .graph_lib import build_graph

    out = Path(job.out)
    # The same path for every job: nothing in the module depends on which job it was.
    graph_dir = WORK / "graph"
    shutil.rmtree(graph_dir, ignore_errors=True)
    graph_dir.mkdir(parents=True)
    warnings: list[str] = []
    step(f"graph: {job.name}: ONNX -> Relax -> wasm32 kernels + plan + params")
    try:
        info = build_graph(Path(job.onnx), graph_dir, job.name, job.input_shapes, frozen=job.frozen,
                           tuning_db=Path(job.tuning_db) if job.tuning_db else None, warnings=warnings,
                           features=job.features)
    except ModelError as exc:
        return JobResult(job.name, error=str(exc), exit_code=2, stage=getattr(exc, "stage", "import"),
                         warnings=warnings)
    for warning in warnings:
        print(f"warning: {warning}", flush=True)
    print(f"graph: {info['calls']} kernel calls, {info['kernels']} kernels, "
          f"{info['params_size'] / 1e6:.1f} MB of parameters", flush=True)
    step(f"wasm: {job.name}: cargo build --target {WASM_TARGET}")
    try:
        wasm = build_wasm(graph_dir, job.name, out, job.external_params, features=job.features,
                          preprocessing=job.preprocessing)
    except subprocess.CalledProcessError as exc:
        return JobResult(job.name, error=f"link failed: cargo build exited with code {exc.returncode}",
                         exit_code=1, stage="link", warnings=warnings)
    shutil.copyfile(graph_dir / "plan.json", out / "plan.json")
    sizes = f"{wasm.name} ({wasm.stat().st_size / 1e6:.1f} MB)"
    if job.external_params:
        params = out / f"{job.name}.params.bin"
        sizes += f", {params.name} ({params.stat().st_size / 1e6:.1f} MB)"
    step(f"done: {sizes}")
    return JobResult(job.name, graph=info, warnings=warnings)


def run(request: BuildRequest) -> int:
    """Build every job in order; print one result line per job. Exit 0 unless this crashes."""
    os.environ.setdefault("TVM_LOG_DEBUG", "0")
    for job in request.jobs:
        try:
            result = build_job(job)
        except Exception as exc:  # noqa: BLE001 - an internal failure of this job only
            text = str(exc).strip()
            message = text.splitlines()[-1] if text else type(exc).__name__
            result = JobResult(job.name, error=f"internal error: {message}", exit_code=1, stage="internal")
        print(result.line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit("run `python -m wasmforge.compiler build REQUEST_JSON`")
