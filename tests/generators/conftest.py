"""Fixtures of the generator tests, built once per test module from its own `build_model`."""

import onnx
import onnxruntime
import pytest


@pytest.fixture(scope="module")
def model(request) -> onnx.ModelProto:
    """The test module's `build_model(seed=0)`: the model models.toml pins."""
    return request.module.build_model(seed=0)


@pytest.fixture(scope="module")
def model_bytes(model) -> bytes:
    return model.SerializeToString()


@pytest.fixture(scope="module")
def session(model_bytes):
    return onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
