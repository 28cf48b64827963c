"""wasmforge: reproducible ONNX -> standalone WebAssembly (WASI) inference modules."""

__version__ = "0.1.0"
