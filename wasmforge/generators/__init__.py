"""Deterministic ONNX model generators, named by `source.entry` in models.toml.

A generator is a function `build_model(**args) -> onnx.ModelProto` that returns the
same serialized bytes every time for the same arguments, so its output can be pinned
by sha256 like any downloaded model.
"""
