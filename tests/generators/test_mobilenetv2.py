"""The synthetic MobileNetV2 1.0: deterministic, valid, runnable and shaped like the paper's network."""

import itertools

from tests.generators import generator_checks as checks
import numpy as np
import onnx

from wasmforge.generators.mobilenetv2 import build_model

# torchvision's mobilenet_v2 has exactly this many trainable parameters (conv weights,
# BN scale/shift, classifier weight and bias).
MOBILENETV2_PARAMETERS = 3_504_872


def attribute(node, name):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


def test_same_seed_same_bytes(model_bytes):
    checks.assert_seed_decides_bytes(build_model, model_bytes)


def test_bytes_match_the_registry_pin(model_bytes):
    checks.assert_registry_pin("mobilenetv2-synth", model_bytes)


def test_checker_passes(model):
    checks.assert_valid(model, opset=13)


def test_operator_counts_are_mobilenetv2(model):
    counts = checks.operator_counts(model)
    # Stem + head: 2 convs. 17 blocks: 3 convs each, except the t=1 block (no expansion).
    convs = 2 + 17 * 3 - 1
    assert counts == {
        "Conv": convs,
        "BatchNormalization": convs,
        "Clip": convs - 17,  # every conv but the 17 linear projections
        "Add": 10,  # blocks with stride 1 and unchanged width
        "GlobalAveragePool": 1,
        "Flatten": 1,
        "Gemm": 1,
    }


def test_depthwise_convs_have_one_group_per_channel(model):
    inits = {init.name: init for init in model.graph.initializer}
    depthwise = [n for n in model.graph.node if n.op_type == "Conv" and (attribute(n, "group") or 1) > 1]
    assert len(depthwise) == 17
    for node in depthwise:
        weight = inits[node.input[1]]
        assert weight.dims[1] == 1 and attribute(node, "group") == weight.dims[0]
        assert list(attribute(node, "kernel_shape")) == [3, 3]
    strided = [n.name for n in depthwise if list(attribute(n, "strides")) == [2, 2]]
    assert strided == [f"features.{b}.depthwise.conv" for b in (2, 4, 7, 14)]


def test_relu6_is_clip_0_6(model):
    inits = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Clip":
            assert (float(inits[node.input[1]]), float(inits[node.input[2]])) == (0.0, 6.0)


def test_every_conv_is_bias_free_and_feeds_a_batchnorm(model):
    checks.assert_every_conv_is_bias_free_and_feeds_a_batchnorm(model)


def test_parameter_count(model):
    sizes = checks.initializer_sizes(model)
    trainable = sum(size for name, size in sizes.items()
                    if not name.endswith((".bn.mean", ".bn.var")) and not name.startswith("relu6."))
    assert trainable == MOBILENETV2_PARAMETERS


def test_stage_shapes(model):
    shapes = checks.inferred_shapes(model)
    assert shapes["features.0.relu6"] == [1, 32, 112, 112]
    assert shapes["features.1.project.bn"] == [1, 16, 112, 112]
    assert shapes["features.3.add"] == [1, 24, 56, 56]
    assert shapes["features.6.add"] == [1, 32, 28, 28]
    assert shapes["features.10.add"] == [1, 64, 14, 14]
    assert shapes["features.13.add"] == [1, 96, 14, 14]
    assert shapes["features.16.add"] == [1, 160, 7, 7]
    assert shapes["features.17.project.bn"] == [1, 320, 7, 7]
    assert shapes["features.18.relu6"] == [1, 1280, 7, 7]
    assert shapes["mobilenetv20_output_flatten0_reshape0"] == [1, 1000]


def test_interface_matches_the_registry_and_the_zoo_model(session):
    checks.assert_interface_matches_registry(session, "mobilenetv2-synth", zoo="mobilenetv2-7")


def test_onnxruntime_outputs_are_sane(session):
    rng = np.random.default_rng(2024)
    outputs = []
    for _ in range(4):
        (logits,) = session.run(None, {"data": checks.image_like_input(rng)})
        assert logits.shape == (1, 1000) and np.isfinite(logits).all()
        assert 0.3 < logits.std() < 10  # O(1), not all equal
        outputs.append(logits)
    # The input matters: logits move between images far beyond float noise, and so does top-1.
    assert min(float(np.abs(a - b).max()) for a, b in itertools.pairwise(outputs)) > 0.05
    assert len({int(out.argmax()) for out in outputs}) > 1
