#!/usr/bin/env python3
"""Tune a model's conv kernels with MetaSchedule (see wasmforge/compiler/tune.py).

    python scripts/tune.py --onnx M --out tuning/<model>/wasm32-simd128/ --trials N

Needs the pinned TVM and the wasmforge package importable (installed, or
PYTHONPATH=<checkout>); `invoke tune` runs the same in the builder image.
"""

import sys

from wasmforge.compiler.tune import main

if __name__ == "__main__":
    sys.exit(main())
