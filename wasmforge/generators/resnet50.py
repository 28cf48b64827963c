"""A ResNet50-v1 with seeded random weights, shaped like the model zoo's resnet50-v1-7.

It stands in for the real model where the zoo download is impossible: the topology,
tensor shapes, operator mix and weight volume (~25.6M parameters, ~100 MB) match
ResNet50 v1 as exported from MXNet Gluon (`resnetv17_*`), so compile time, binary size
and kernel choice behave like the real thing; only the predictions are meaningless.

Faithful to v1 (not v1.5): a downsampling bottleneck puts its stride in the first 1x1
convolution. Every convolution is bias-free and followed by BatchNormalization
(inference form), and the graph input/output names are the zoo model's, so the two
are interchangeable for the rest of the pipeline.
"""

from __future__ import annotations

import numpy as np
import onnx

from wasmforge.generators.common import (
    BN_SCALE_RANGE,
    IMAGE_INPUT_NAME,
    IMAGE_INPUT_SHAPE,
    IMAGENET_CLASSES,
    RESIDUAL_BN_SCALE_RANGE,
    GraphBuilder,
)

# The zoo model's output name, kept so downstream code can treat both models alike.
OUTPUT_NAME = "resnetv17_dense0_fwd"

STEM_WIDTH = 64
# (bottleneck width, number of blocks, stride of the first block) per stage.
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
# A bottleneck's output has EXPANSION times its width in channels.
EXPANSION = 4


class _ResNetBuilder(GraphBuilder):
    def conv_bn(self, x: str, prefix: str, in_ch: int, out_ch: int, kernel: int, stride: int,
                scale_range: tuple[float, float] = BN_SCALE_RANGE) -> str:
        """Bias-free He-normal convolution followed by inference BatchNormalization."""
        y = self.conv(x, f"{prefix}.conv", in_ch, out_ch, kernel, stride)
        return self.batch_norm(y, f"{prefix}.bn", out_ch, scale_range)


def _bottleneck(graph: _ResNetBuilder, x: str, prefix: str, in_ch: int, width: int, stride: int) -> str:
    out_ch = width * EXPANSION
    # v1: the stride lives in the first 1x1 convolution.
    y = graph.op("Relu", [graph.conv_bn(x, f"{prefix}.1", in_ch, width, 1, stride)], f"{prefix}.1.relu")
    y = graph.op("Relu", [graph.conv_bn(y, f"{prefix}.2", width, width, 3, 1)], f"{prefix}.2.relu")
    y = graph.conv_bn(y, f"{prefix}.3", width, out_ch, 1, 1, scale_range=RESIDUAL_BN_SCALE_RANGE)
    if stride != 1 or in_ch != out_ch:
        shortcut = graph.conv_bn(x, f"{prefix}.shortcut", in_ch, out_ch, 1, stride)
    else:
        shortcut = x
    total = graph.op("Add", [y, shortcut], f"{prefix}.add")
    return graph.op("Relu", [total], f"{prefix}.relu")


def build_model(seed: int = 0) -> onnx.ModelProto:
    """ResNet50-v1 (opset 13) with weights drawn from numpy's default_rng(seed).

    The same seed gives byte-identical `SerializeToString()` output (for a given
    numpy version, whose Generator streams are what the models.toml pin records).
    """
    graph = _ResNetBuilder(np.random.default_rng(seed))
    x = graph.conv_bn(IMAGE_INPUT_NAME, "stem", IMAGE_INPUT_SHAPE[1], STEM_WIDTH, 7, 2)
    x = graph.op("Relu", [x], "stem.relu")
    x = graph.op("MaxPool", [x], "stem.pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    channels = STEM_WIDTH
    for stage_index, (width, blocks, first_stride) in enumerate(STAGES, start=1):
        for block_index in range(1, blocks + 1):
            stride = first_stride if block_index == 1 else 1
            x = _bottleneck(graph, x, f"stage{stage_index}.block{block_index}", channels, width, stride)
            channels = width * EXPANSION
    x = graph.op("GlobalAveragePool", [x], "pool")
    x = graph.op("Flatten", [x], "flatten", axis=1)
    graph.gemm(x, "fc", channels, IMAGENET_CLASSES, OUTPUT_NAME)
    return graph.image_classifier(
        output_name=OUTPUT_NAME, graph_name="resnet50_v1_synthetic", producer="wasmforge.generators.resnet50",
        doc=f"ResNet50-v1 topology with random weights, numpy default_rng(seed={seed}).",
    )
