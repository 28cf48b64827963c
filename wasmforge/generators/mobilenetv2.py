"""A MobileNetV2 1.0 (224) with seeded random weights, the paper's topology.

Sandler et al. 2018, table 2, as torchvision builds it (3,504,872 parameters): a
3x3/2 stem, 17 inverted residual blocks (1x1 expansion by t, 3x3 depthwise conv with
group = channels, linear 1x1 projection; a residual Add where stride is 1 and the
width is unchanged), a 1x1 conv to 1280, global average pooling and a 1000-way Gemm.
Every conv is bias-free and followed by inference BatchNormalization; activations are
ReLU6, i.e. Clip(0, 6).

The graph input and output names are those of the ONNX Model Zoo's mobilenetv2-7
(`data`, `mobilenetv20_output_flatten0_reshape0`), so the two are interchangeable for
the pipeline. That zoo file is an MXNet Gluon export and differs in three details
that do not change shapes: it uses plain Relu, its first block keeps a 32->32 1x1
expansion although t = 1, and its classifier is a bias-free 1x1 Conv + Reshape.
"""

from __future__ import annotations

import numpy as np
import onnx

from wasmforge.generators.common import (
    IMAGE_INPUT_NAME,
    IMAGE_INPUT_SHAPE,
    IMAGENET_CLASSES,
    RESIDUAL_BN_SCALE_RANGE,
    GraphBuilder,
)

OUTPUT_NAME = "mobilenetv20_output_flatten0_reshape0"

STEM_WIDTH = 32
HEAD_WIDTH = 1280
# (expansion t, output channels c, repeats n, stride of the first repeat s): table 2.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
RELU6_MAX = 6.0


class _MobileNetBuilder(GraphBuilder):
    def __init__(self, rng: np.random.Generator):
        super().__init__(rng)
        # Clip-11+ takes its bounds as inputs; one shared pair of scalars.
        self.clip_min = self.constant("relu6.min", np.array(0.0))
        self.clip_max = self.constant("relu6.max", np.array(RELU6_MAX))

    def conv_bn(self, x: str, prefix: str, in_ch: int, out_ch: int, kernel: int, stride: int = 1, *,
                group: int = 1, relu6: bool = True, residual: bool = False) -> str:
        y = self.conv(x, f"{prefix}.conv", in_ch, out_ch, kernel, stride, group=group,
                      # A linear (un-activated) projection is not halved by a ReLU.
                      gain=2.0 if relu6 else 1.0)
        bn_args = {"scale_range": RESIDUAL_BN_SCALE_RANGE} if residual else {}
        y = self.batch_norm(y, f"{prefix}.bn", out_ch, **bn_args)
        if relu6:
            y = self.op("Clip", [y, self.clip_min, self.clip_max], f"{prefix}.relu6")
        return y


def _inverted_residual(graph: _MobileNetBuilder, x: str, prefix: str, in_ch: int, out_ch: int,
                       stride: int, expansion: int) -> str:
    hidden = in_ch * expansion
    use_residual = stride == 1 and in_ch == out_ch
    y = x
    if expansion != 1:
        y = graph.conv_bn(y, f"{prefix}.expand", in_ch, hidden, 1)
    y = graph.conv_bn(y, f"{prefix}.depthwise", hidden, hidden, 3, stride, group=hidden)
    y = graph.conv_bn(y, f"{prefix}.project", hidden, out_ch, 1, relu6=False, residual=use_residual)
    if use_residual:
        y = graph.op("Add", [x, y], f"{prefix}.add")
    return y


def build_model(seed: int = 0) -> onnx.ModelProto:
    """MobileNetV2 1.0 (opset 13) with weights drawn from numpy's default_rng(seed).

    The same seed gives byte-identical `SerializeToString()` output (for a given numpy
    version, whose Generator streams are what the models.toml pin records).
    """
    graph = _MobileNetBuilder(np.random.default_rng(seed))
    x = graph.conv_bn(IMAGE_INPUT_NAME, "features.0", IMAGE_INPUT_SHAPE[1], STEM_WIDTH, 3, 2)
    channels, block = STEM_WIDTH, 1
    for expansion, out_ch, repeats, first_stride in INVERTED_RESIDUAL_SETTING:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            x = _inverted_residual(graph, x, f"features.{block}", channels, out_ch, stride, expansion)
            channels, block = out_ch, block + 1
    x = graph.conv_bn(x, f"features.{block}", channels, HEAD_WIDTH, 1)
    x = graph.op("GlobalAveragePool", [x], "pool")
    x = graph.op("Flatten", [x], "flatten", axis=1)
    graph.gemm(x, "classifier", HEAD_WIDTH, IMAGENET_CLASSES, OUTPUT_NAME, centered=True)
    return graph.image_classifier(
        output_name=OUTPUT_NAME, graph_name="mobilenetv2_1.0_synthetic", producer="wasmforge.generators.mobilenetv2",
        doc=f"MobileNetV2 1.0 topology with random weights, numpy default_rng(seed={seed}).",
    )
