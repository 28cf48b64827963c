"""Checks every seeded generator's tests make, called with that model's own data.

The `model`, `model_bytes` and `session` fixtures they take are in conftest.py.
"""

from collections import Counter

import numpy as np
import onnx

from wasmforge.hashing import sha256_bytes
from wasmforge.registry import get_model


def assert_seed_decides_bytes(build_model, model_bytes: bytes) -> None:
    """The same seed gives the same bytes, another seed other bytes."""
    assert build_model(seed=0).SerializeToString() == model_bytes
    assert build_model(seed=1).SerializeToString() != model_bytes


def assert_registry_pin(name: str, model_bytes: bytes) -> None:
    """The bytes are the ones models.toml pins under `name`."""
    spec = get_model(name)
    assert sha256_bytes(model_bytes) == spec.sha256
    assert len(model_bytes) == spec.size


def assert_valid(model: onnx.ModelProto, opset: int, *, full_check: bool = False) -> None:
    """onnx.checker passes and the model imports the default domain at `opset`, nothing else."""
    onnx.checker.check_model(model, full_check=full_check)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", opset)]


def assert_interface_matches_registry(session, name: str, *, zoo: str | None = None) -> None:
    """onnxruntime sees the inputs and outputs (names, shapes) models.toml gives `name`,
    which are also those of the `zoo` model it stands in for, if given."""
    spec = get_model(name)
    if zoo is not None:
        twin = get_model(zoo)
        assert (spec.inputs, spec.outputs) == (twin.inputs, twin.outputs)
    assert [(i.name, i.shape) for i in session.get_inputs()] == [(t.name, list(t.shape)) for t in spec.inputs]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [(t.name, list(t.shape)) for t in spec.outputs]


def operator_counts(model: onnx.ModelProto) -> Counter:
    return Counter(node.op_type for node in model.graph.node)


def initializer_sizes(model: onnx.ModelProto) -> dict[str, int]:
    """Elements of each initializer, by name."""
    return {init.name: int(np.prod(init.dims)) for init in model.graph.initializer}


def inferred_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Shape of every intermediate and output tensor, by name, from onnx shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    return {
        info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
        for info in list(inferred.graph.value_info) + list(inferred.graph.output)
    }


def assert_every_conv_is_bias_free_and_feeds_a_batchnorm(model: onnx.ModelProto) -> None:
    consumers = {name: node for node in model.graph.node for name in node.input}
    for node in model.graph.node:
        if node.op_type == "Conv":
            assert len(node.input) == 2, node.name
            assert consumers[node.output[0]].op_type == "BatchNormalization"


def image_like_input(rng: np.random.Generator) -> np.ndarray:
    """A random [1, 3, 224, 224] float32 image whose per-channel brightness and contrast differ
    between calls as they do between photos.

    (I.i.d. N(0,1) noise would not do: after global average pooling every noise image
    has nearly the same features, for any random CNN.)
    """
    contrast = rng.uniform(0.5, 1.5, (1, 3, 1, 1))
    brightness = rng.normal(0.0, 1.0, (1, 3, 1, 1))
    return (rng.standard_normal((1, 3, 224, 224)) * contrast + brightness).astype(np.float32)
