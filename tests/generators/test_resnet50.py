"""The synthetic ResNet50-v1: deterministic, valid, runnable and shaped like the zoo model."""

from tests.generators import generator_checks as checks
import numpy as np
import onnx

from wasmforge.generators.resnet50 import build_model

# torchvision's resnet50 has exactly this many trainable parameters (conv weights,
# BN scale/shift, classifier), the reference count for a bias-free ResNet50-v1.
RESNET50_PARAMETERS = 25_557_032


def test_same_seed_same_bytes(model_bytes):
    checks.assert_seed_decides_bytes(build_model, model_bytes)


def test_bytes_match_the_registry_pin(model_bytes):
    checks.assert_registry_pin("resnet50-synth", model_bytes)


def test_checker_passes(model):
    checks.assert_valid(model, opset=13)


def test_operator_counts_are_resnet50_v1(model):
    assert checks.operator_counts(model) == {
        "Conv": 1 + 16 * 3 + 4,  # stem, 3 per bottleneck, 4 projection shortcuts
        "BatchNormalization": 53,
        "Relu": 1 + 16 * 3,
        "Add": 16,
        "MaxPool": 1,
        "GlobalAveragePool": 1,
        "Flatten": 1,
        "Gemm": 1,
    }


def test_every_conv_is_bias_free_and_feeds_a_batchnorm(model):
    checks.assert_every_conv_is_bias_free_and_feeds_a_batchnorm(model)


def test_v1_puts_the_stride_in_the_first_1x1_conv(model):
    strided = sorted(
        node.name for node in model.graph.node
        if node.op_type == "Conv" and list(onnx.helper.get_attribute_value(
            next(a for a in node.attribute if a.name == "strides"))) == [2, 2]
    )
    assert strided == sorted(
        ["stem.conv"]
        + [f"stage{s}.block1.1.conv" for s in (2, 3, 4)]
        + [f"stage{s}.block1.shortcut.conv" for s in (2, 3, 4)]
    )


def test_parameter_count(model):
    sizes = checks.initializer_sizes(model)
    trainable = sum(size for name, size in sizes.items() if not name.endswith((".bn.mean", ".bn.var")))
    assert trainable == RESNET50_PARAMETERS
    assert 25_500_000 < sum(sizes.values()) < 25_700_000


def test_stage_shapes(model):
    shapes = checks.inferred_shapes(model)
    assert shapes["stem.pool"] == [1, 64, 56, 56]
    assert shapes["stage1.block3.relu"] == [1, 256, 56, 56]
    assert shapes["stage2.block4.relu"] == [1, 512, 28, 28]
    assert shapes["stage3.block6.relu"] == [1, 1024, 14, 14]
    assert shapes["stage4.block3.relu"] == [1, 2048, 7, 7]
    assert shapes["resnetv17_dense0_fwd"] == [1, 1000]


def test_interface_matches_the_registry(session):
    checks.assert_interface_matches_registry(session, "resnet50-synth")


def test_onnxruntime_outputs_are_sane(session):
    rng = np.random.default_rng(2024)
    outputs = []
    for _ in range(3):
        (logits,) = session.run(None, {"data": checks.image_like_input(rng)})
        assert logits.shape == (1, 1000)
        assert np.isfinite(logits).all()
        assert logits.std() > 0.1  # not all equal
        outputs.append(logits)
    maxima = [float(np.abs(out).max()) for out in outputs]
    top1 = [int(out.argmax()) for out in outputs]
    print(f"resnet50-synth max|output| per input: {maxima}, top-1: {top1}")
    assert all(m < 1e3 for m in maxima)  # activations stayed O(1)-ish, nothing blew up
    assert len(set(top1)) > 1
