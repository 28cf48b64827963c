#!/usr/bin/env python3
"""In the builder container: ONNX -> graph library -> `<name>.wasm` in the output directory.

Paths inside the container are fixed (the host mounts the repository at /src
read-only, the model at /in/model.onnx, an empty staging directory at /out,
and /work is scratch), so no host path can leak into an artifact.

Each step prints a `==> name` line, which the host turns into progress with
timings. Exit codes: 0 ok, 2 the model is at fault, 1 anything else.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
SRC = SCRIPTS.parent
WORK = Path("/work")
WASM_TARGET = "wasm32-wasip1"


def step(name: str) -> None:
    print(f"==> {name}", flush=True)


def build_wasm(graph_dir: Path, name: str, out_dir: Path, external_params: bool = False) -> Path:
    """cargo build the `rust_app` workspace with the graph embedded (with
    `external_params`, all of it but the weights: they go to
    `<name>.params.bin` beside the module)."""
    # A copy at a fixed path: cargo writes beside the sources, and the fixed
    # path keeps the build independent of where the repository was checked out.
    crate_dir = WORK / "rust_app"
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
    command = [
        "cargo", "build", "--release", "--locked", "--offline",
        "--target", WASM_TARGET, "-p", "wasmforge-model",
    ]
    subprocess.run(command, cwd=crate_dir, env=env, check=True)
    built = WORK / "target" / WASM_TARGET / "release" / "wasmforge-model.wasm"
    wasm = out_dir / f"{name}.wasm"
    shutil.copyfile(built, wasm)
    if external_params:
        shutil.copyfile(graph_dir / "params.bin", out_dir / f"{name}.params.bin")
    return wasm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--input-shape", action="append", default=[])
    parser.add_argument("--external-params", action="store_true",
                        help="write the weights to <name>.params.bin instead of embedding them")
    parser.add_argument("--tuning-db", help="MetaSchedule database directory to apply")
    args = parser.parse_args()

    graph_dir = WORK / "graph"
    step("graph: ONNX -> Relax -> wasm32 kernels + plan + params")
    graph_args = ["--onnx", str(args.onnx), "--out", str(graph_dir), "--name", args.name]
    for spec in args.input_shape:
        graph_args += ["--input-shape", spec]
    if args.tuning_db:
        graph_args += ["--tuning-db", args.tuning_db]
    sys.path.insert(0, str(SCRIPTS))
    import build_graph_lib

    code = build_graph_lib.main(graph_args)
    if code != 0:
        return code
    step("wasm: cargo build --target wasm32-wasip1")
    try:
        wasm = build_wasm(graph_dir, args.name, args.out, args.external_params)
    except subprocess.CalledProcessError as exc:
        print(f"error: cargo build failed with exit code {exc.returncode}", file=sys.stderr)
        return 1
    for name in ("plan.json", "graph-info.json"):
        shutil.copyfile(graph_dir / name, args.out / name)
    if args.external_params:
        params = args.out / f"{args.name}.params.bin"
        step(f"done: {wasm.name} ({wasm.stat().st_size / 1e6:.1f} MB), "
             f"{params.name} ({params.stat().st_size / 1e6:.1f} MB)")
    else:
        step(f"done: {wasm.name} ({wasm.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
