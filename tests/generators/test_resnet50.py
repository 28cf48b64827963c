"""The synthetic ResNet50-v1: deterministic, valid, runnable and shaped like the zoo model."""

from collections import Counter

import numpy as np
import onnx
import onnxruntime
import pytest

from wasmforge.generators.resnet50 import build_model
from wasmforge.hashing import sha256_bytes
from wasmforge.registry import get_model

# torchvision's resnet50 has exactly this many trainable parameters (conv weights,
# BN scale/shift, classifier), the reference count for a bias-free ResNet50-v1.
RESNET50_PARAMETERS = 25_557_032


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
    spec = get_model("resnet50-synth")
    assert sha256_bytes(model_bytes) == spec.sha256
    assert len(model_bytes) == spec.size


def test_checker_passes(model):
    onnx.checker.check_model(model)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 13)]


def test_operator_counts_are_resnet50_v1(model):
    counts = Counter(node.op_type for node in model.graph.node)
    assert counts == {
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
    consumers = {name: node for node in model.graph.node for name in node.input}
    for node in model.graph.node:
        if node.op_type == "Conv":
            assert len(node.input) == 2, node.name
            assert consumers[node.output[0]].op_type == "BatchNormalization"


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
    sizes = {init.name: int(np.prod(init.dims)) for init in model.graph.initializer}
    trainable = sum(size for name, size in sizes.items() if not name.endswith((".bn.mean", ".bn.var")))
    assert trainable == RESNET50_PARAMETERS
    assert 25_500_000 < sum(sizes.values()) < 25_700_000


def test_stage_shapes(model):
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {
        info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
        for info in list(inferred.graph.value_info) + list(inferred.graph.output)
    }
    assert shapes["stem.pool"] == [1, 64, 56, 56]
    assert shapes["stage1.block3.relu"] == [1, 256, 56, 56]
    assert shapes["stage2.block4.relu"] == [1, 512, 28, 28]
    assert shapes["stage3.block6.relu"] == [1, 1024, 14, 14]
    assert shapes["stage4.block3.relu"] == [1, 2048, 7, 7]
    assert shapes["resnetv17_dense0_fwd"] == [1, 1000]


def test_interface_matches_the_registry(session):
    spec = get_model("resnet50-synth")
    assert [(i.name, i.shape) for i in session.get_inputs()] == [(t.name, list(t.shape)) for t in spec.inputs]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [(t.name, list(t.shape)) for t in spec.outputs]


def test_onnxruntime_outputs_are_sane(session):
    # Image-like random inputs: per-channel brightness/contrast differ between samples as
    # they do between photos. (I.i.d. N(0,1) noise would not do: after global average
    # pooling every noise image has nearly the same features, for any random CNN.)
    rng = np.random.default_rng(2024)
    outputs = []
    for _ in range(3):
        contrast = rng.uniform(0.5, 1.5, (1, 3, 1, 1))
        brightness = rng.normal(0.0, 1.0, (1, 3, 1, 1))
        image = (rng.standard_normal((1, 3, 224, 224)) * contrast + brightness).astype(np.float32)
        (logits,) = session.run(None, {"data": image})
        assert logits.shape == (1, 1000)
        assert np.isfinite(logits).all()
        assert logits.std() > 0.1  # not all equal
        outputs.append(logits)
    maxima = [float(np.abs(out).max()) for out in outputs]
    top1 = [int(out.argmax()) for out in outputs]
    print(f"resnet50-synth max|output| per input: {maxima}, top-1: {top1}")
    assert all(m < 1e3 for m in maxima)  # activations stayed O(1)-ish, nothing blew up
    assert len(set(top1)) > 1
