"""wasmforge: reproducible ONNX -> standalone WebAssembly (WASI) inference modules.

    import wasmforge
    model = wasmforge.load("dist/lenet-digits")   # -> wasmforge.Model (see wasmforge.model)
    outputs = model.run({"input": x})             # {output name: numpy array}

Importing the package is cheap: numpy and the runner load on the first `load`.
"""

from .errors import WasmforgeError as Error

__version__ = "0.1.0"
__all__ = ["Error", "Model", "load", "__version__"]


def load(directory, **limits):
    """`wasmforge.model.load`: a verified, compiled artifact (`time_limit=`, `memory_limit=`)."""
    from .model import load as load_model

    return load_model(directory, **limits)


def __getattr__(name):
    if name in ("Model", "Tensor"):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'wasmforge' has no attribute {name!r}")
