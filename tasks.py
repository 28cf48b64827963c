"""wasmforge: ONNX models -> standalone, hash-verified WebAssembly (WASI) inference modules.

Run `invoke --list` for the tasks and `invoke --help TASK` for their options
(`wasmforge ...`, the installed console script, is the same). The tasks live in
`wasmforge/cli.py`; every one is a thin wrapper around the `wasmforge` package.
"""

from wasmforge.cli import namespace as ns  # noqa: F401 - invoke loads the collection named `ns`

if __name__ == "__main__":
    raise SystemExit("run tasks with `invoke`, e.g. `invoke build --model lenet-digits`")
