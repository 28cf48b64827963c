"""The synthetic SqueezeNet 1.1: deterministic, valid, runnable and shaped like the reference network."""

from tests.generators import generator_checks as checks
import numpy as np
import onnx

from wasmforge.generators.squeezenet import build_model

# torchvision's squeezenet1_1 has exactly this many parameters (conv weights and biases).
SQUEEZENET11_PARAMETERS = 1_235_496


def test_same_seed_same_bytes(model_bytes):
    checks.assert_seed_decides_bytes(build_model, model_bytes)


def test_bytes_match_the_registry_pin(model_bytes):
    checks.assert_registry_pin("squeezenet-synth", model_bytes)


def test_checker_passes(model):
    checks.assert_valid(model, opset=13)


def test_operator_counts_are_squeezenet_1_1(model):
    assert checks.operator_counts(model) == {
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
    shapes = checks.inferred_shapes(model)
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
    checks.assert_interface_matches_registry(session, "squeezenet-synth", zoo="squeezenet1.1-7")


def test_onnxruntime_outputs_are_sane(session):
    rng = np.random.default_rng(2024)
    top1 = []
    for _ in range(4):
        (scores,) = session.run(None, {"data": checks.image_like_input(rng)})
        assert scores.shape == (1, 1000) and np.isfinite(scores).all()
        assert scores.min() >= 0  # ReLU before the pooling
        assert 0.3 < scores.std() and scores.max() < 100  # O(1)-ish, nothing blew up
        top1.append(int(scores.argmax()))
    assert len(set(top1)) > 1
