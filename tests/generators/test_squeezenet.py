"""The synthetic SqueezeNet 1.1: deterministic, valid, runnable and shaped like the reference network."""

from collections import Counter

import numpy as np
import onnx
import onnxruntime
import pytest

from wasmforge.generators.squeezenet import build_model
from wasmforge.hashing import sha256_bytes
from wasmforge.registry import get_model

# torchvision's squeezenet1_1 has exactly this many parameters (conv weights and biases).
SQUEEZENET11_PARAMETERS = 1_235_496


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return build_model(seed=0)


@pytest.fixture(scope="module")
def model_bytes(model) -> bytes:
    return model.SerializeToString()


@pytest.fixture(scope="module")
def session(model_bytes):
    return onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])


def test_same_seed_same_bytes(model_bytes):
    assert build_model(seed=0).SerializeToString() == model_bytes
    assert build_model(seed=1).SerializeToString() != model_bytes


def test_bytes_match_the_registry_pin(model_bytes):
    spec = get_model("squeezenet-synth")
    assert sha256_bytes(model_bytes) == spec.sha256
    assert len(model_bytes) == spec.size


def test_checker_passes(model):
    onnx.checker.check_model(model)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 13)]


def test_operator_counts_are_squeezenet_1_1(model):
    counts = Counter(node.op_type for node in model.graph.node)
    assert counts == {
        "Conv": 1 + 8 * 3 + 1,  # stem, squeeze + two expands per fire module, classifier
        "Relu": 1 + 8 * 3 + 1,
        "Concat": 8,
        "MaxPool": 3,
        "GlobalAveragePool": 1,
        "Flatten": 1,
    }


def test_fire_modules_concatenate_both_expands(model):
    for node in model.graph.node:
        if node.op_type == "Concat":
            fire = node.name.split(".")[0]
            assert list(node.input) == [f"{fire}.expand1x1.relu", f"{fire}.expand3x3.relu"]
            assert onnx.helper.get_attribute_value(node.attribute[0]) == 1


def test_parameter_count(model):
    assert sum(int(np.prod(init.dims)) for init in model.graph.initializer) == SQUEEZENET11_PARAMETERS


def test_stage_shapes(model):
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {
        info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
        for info in list(inferred.graph.value_info) + list(inferred.graph.output)
    }
    # Ceil-mode pooling: 111 -> 55 -> 27 -> 13.
    assert shapes["features.0.relu"] == [1, 64, 111, 111]
    assert shapes["pool1"] == [1, 64, 55, 55]
    assert shapes["fire2.concat"] == [1, 128, 55, 55]
    assert shapes["pool2"] == [1, 128, 27, 27]
    assert shapes["fire4.concat"] == [1, 256, 27, 27]
    assert shapes["pool3"] == [1, 256, 13, 13]
    assert shapes["fire8.concat"] == [1, 512, 13, 13]
    assert shapes["classifier.relu"] == [1, 1000, 13, 13]
    assert shapes["squeezenet0_flatten0_reshape0"] == [1, 1000]


def test_interface_matches_the_registry_and_the_zoo_model(session):
    spec, zoo = get_model("squeezenet-synth"), get_model("squeezenet1.1-7")
    assert (spec.inputs, spec.outputs) == (zoo.inputs, zoo.outputs)
    assert [(i.name, i.shape) for i in session.get_inputs()] == [(t.name, list(t.shape)) for t in spec.inputs]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [(t.name, list(t.shape)) for t in spec.outputs]


def test_onnxruntime_outputs_are_sane(session):
    rng = np.random.default_rng(2024)
    top1 = []
    for _ in range(4):
        contrast = rng.uniform(0.5, 1.5, (1, 3, 1, 1))
        brightness = rng.normal(0.0, 1.0, (1, 3, 1, 1))
        image = (rng.standard_normal((1, 3, 224, 224)) * contrast + brightness).astype(np.float32)
        (scores,) = session.run(None, {"data": image})
        assert scores.shape == (1, 1000) and np.isfinite(scores).all()
        assert scores.min() >= 0  # ReLU before the pooling
        assert 0.3 < scores.std() and scores.max() < 100  # O(1)-ish, nothing blew up
        top1.append(int(scores.argmax()))
    assert len(set(top1)) > 1
