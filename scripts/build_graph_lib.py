#!/usr/bin/env python3
"""ONNX -> TVM Relax -> `libgraph_wasm32.a`, `plan.json`, `params.bin` in one directory.

The graph-library step of a build on its own (the builder image runs it as part
of `python -m wasmforge.compiler build`); needs the pinned TVM and `llvm-ar`,
and the wasmforge package importable (installed, or PYTHONPATH=<checkout>).
Exit codes: 0 ok, 2 the model is at fault (one `error:` line), 1 anything else.
"""

import argparse
import sys
from pathlib import Path

from wasmforge.compiler.frontend import ModelError
from wasmforge.compiler.graph_lib import build_graph
from wasmforge.compiler.request import parse_shapes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument("--name", required=True, help="model name recorded in the plan")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=1x3x224x224")
    parser.add_argument("--tuning-db", type=Path, help="MetaSchedule database (scripts/tune.py) to apply")
    args = parser.parse_args(argv)
    warnings: list[str] = []
    try:
        shapes = parse_shapes(args.input_shape)
        if not args.onnx.is_file():
            raise ModelError(f"no such file: {args.onnx}")
        args.out.mkdir(parents=True, exist_ok=True)
        info = build_graph(args.onnx, args.out, args.name, shapes, tuning_db=args.tuning_db,
                           warnings=warnings)
    except (ModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"graph: {info['calls']} kernel calls, {info['kernels']} kernels, "
          f"{info['params_size'] / 1e6:.1f} MB of parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
