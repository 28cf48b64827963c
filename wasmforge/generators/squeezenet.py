"""A SqueezeNet 1.1 with seeded random weights, the reference topology.

Iandola et al. 2016, version 1.1 as in the authors' repository and torchvision
(1,235,496 parameters): a 3x3/2 conv to 64, then fire modules (1x1 squeeze, 1x1 and
3x3 expand, both ReLU'd and concatenated along channels) between 3x3/2 max pools
with ceil mode (224 -> 111 -> 55 -> 27 -> 13), and a classifier that is a 1x1 conv to
1000 channels + ReLU + global average pooling. Convolutions have biases; there is no
BatchNormalization. Dropout is an identity at inference and is left out.

The graph input and output names are those of the ONNX Model Zoo's squeezenet1.1-7
(`data`, `squeezenet0_flatten0_reshape0`) so the two are interchangeable for the
pipeline; that MXNet Gluon export has the same layers (its 13x13 average pool equals
the global one here).
"""

from __future__ import annotations

import numpy as np
import onnx

from wasmforge.generators.common import (
    IMAGE_INPUT_NAME,
    IMAGE_INPUT_SHAPE,
    IMAGENET_CLASSES,
    GraphBuilder,
)

OUTPUT_NAME = "squeezenet0_flatten0_reshape0"

STEM_WIDTH = 64
# Per stage: fire modules as (squeeze, expand 1x1, expand 3x3); a max pool precedes each stage.
STAGES = (
    ((16, 64, 64), (16, 64, 64)),
    ((32, 128, 128), (32, 128, 128)),
    ((48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)),
)


def _max_pool(graph: GraphBuilder, x: str, name: str) -> str:
    return graph.op("MaxPool", [x], name, kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)


def _fire(graph: GraphBuilder, x: str, prefix: str, in_ch: int, squeeze: int, expand1: int,
          expand3: int) -> str:
    s = graph.op("Relu", [graph.conv(x, f"{prefix}.squeeze", in_ch, squeeze, 1, bias=True)],
                 f"{prefix}.squeeze.relu")
    e1 = graph.op("Relu", [graph.conv(s, f"{prefix}.expand1x1", squeeze, expand1, 1, bias=True)],
                  f"{prefix}.expand1x1.relu")
    e3 = graph.op("Relu", [graph.conv(s, f"{prefix}.expand3x3", squeeze, expand3, 3, bias=True)],
                  f"{prefix}.expand3x3.relu")
    return graph.op("Concat", [e1, e3], f"{prefix}.concat", axis=1)


def build_model(seed: int = 0) -> onnx.ModelProto:
    """SqueezeNet 1.1 (opset 13) with weights drawn from numpy's default_rng(seed).

    The same seed gives byte-identical `SerializeToString()` output (for a given numpy
    version, whose Generator streams are what the models.toml pin records).
    """
    graph = GraphBuilder(np.random.default_rng(seed))
    x = graph.conv(IMAGE_INPUT_NAME, "features.0", IMAGE_INPUT_SHAPE[1], STEM_WIDTH, 3, 2, padding=0, bias=True)
    x = graph.op("Relu", [x], "features.0.relu")
    channels, fire = STEM_WIDTH, 1
    for stage, modules in enumerate(STAGES, start=1):
        x = _max_pool(graph, x, f"pool{stage}")
        for squeeze, expand1, expand3 in modules:
            x = _fire(graph, x, f"fire{fire}", channels, squeeze, expand1, expand3)
            channels, fire = expand1 + expand3, fire + 1
    # Classifier: 1x1 conv to the classes (variance 1/fan_in: O(1) logits), ReLU, global pool.
    x = graph.conv(x, "classifier.conv", channels, IMAGENET_CLASSES, 1, bias=True, gain=1.0)
    x = graph.op("Relu", [x], "classifier.relu")
    x = graph.op("GlobalAveragePool", [x], "classifier.pool")
    graph.op("Flatten", [x], OUTPUT_NAME, axis=1)
    return graph.image_classifier(
        output_name=OUTPUT_NAME, graph_name="squeezenet1.1_synthetic", producer="wasmforge.generators.squeezenet",
        doc=f"SqueezeNet 1.1 topology with random weights, numpy default_rng(seed={seed}).",
    )
