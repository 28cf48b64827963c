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
from onnx import TensorProto, helper, numpy_helper

INPUT_NAME = "data"
INPUT_SHAPE = (1, 3, 224, 224)
# The zoo model's output name, kept so downstream code can treat both models alike.
OUTPUT_NAME = "resnetv17_dense0_fwd"
NUM_CLASSES = 1000

STEM_WIDTH = 64
# (bottleneck width, number of blocks, stride of the first block) per stage.
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
# A bottleneck's output has EXPANSION times its width in channels.
EXPANSION = 4

# Opset 13 is the oldest opset every converter we feed (TVM Relax's ONNX frontend
# included) handles without caveats; IR version 8 is what opset 13 was released with.
# Both are pinned explicitly so the bytes do not depend on the installed onnx version.
OPSET = 13
IR_VERSION = 8
BN_EPSILON = 1e-5

# Weight statistics chosen so activations stay O(1) through all 50 layers in
# inference mode (BatchNormalization uses these fixed statistics, it does not
# re-normalise). The last BN of each residual branch gets a small scale, the usual
# "zero-ish init" of residual branches, otherwise the 16 residual sums compound.
BN_SCALE_RANGE = (0.5, 1.5)
RESIDUAL_BN_SCALE_RANGE = (0.1, 0.3)
BN_SHIFT_STD = 0.05
BN_MEAN_STD = 0.05
BN_VARIANCE_RANGE = (0.5, 1.5)


class _GraphBuilder:
    """Accumulates nodes and seeded initializers in a fixed order (so bytes are stable)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def _constant(self, name: str, values: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(values.astype(np.float32), name))
        return name

    def _uniform(self, bounds: tuple[float, float], size: int) -> np.ndarray:
        return self.rng.uniform(bounds[0], bounds[1], size)

    def conv_bn(self, x: str, prefix: str, in_ch: int, out_ch: int, kernel: int, stride: int,
                scale_range: tuple[float, float] = BN_SCALE_RANGE) -> str:
        """Bias-free convolution followed by inference BatchNormalization."""
        fan_in = in_ch * kernel * kernel
        # He-normal: keeps the variance of a ReLU network's activations constant.
        weight = self.rng.standard_normal((out_ch, in_ch, kernel, kernel)) * np.sqrt(2.0 / fan_in)
        padding = kernel // 2
        conv_out = f"{prefix}.conv"
        self.nodes.append(helper.make_node(
            "Conv", [x, self._constant(f"{prefix}.conv.weight", weight)], [conv_out], name=conv_out,
            kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[padding] * 4,
        ))
        bn_inputs = [
            conv_out,
            self._constant(f"{prefix}.bn.scale", self._uniform(scale_range, out_ch)),
            self._constant(f"{prefix}.bn.bias", self.rng.standard_normal(out_ch) * BN_SHIFT_STD),
            self._constant(f"{prefix}.bn.mean", self.rng.standard_normal(out_ch) * BN_MEAN_STD),
            self._constant(f"{prefix}.bn.var", self._uniform(BN_VARIANCE_RANGE, out_ch)),
        ]
        bn_out = f"{prefix}.bn"
        self.nodes.append(helper.make_node(
            "BatchNormalization", bn_inputs, [bn_out], name=bn_out, epsilon=BN_EPSILON,
        ))
        return bn_out

    def op(self, op_type: str, inputs: list[str], name: str, **attributes) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attributes))
        return name

    def dense(self, x: str, in_features: int, out_features: int, output: str) -> str:
        # Variance 1/fan_in: logits come out O(1) for unit-variance features.
        weight = self.rng.standard_normal((out_features, in_features)) / np.sqrt(in_features)
        bias = self.rng.standard_normal(out_features) * 0.01
        self.nodes.append(helper.make_node(
            "Gemm", [x, self._constant("fc.weight", weight), self._constant("fc.bias", bias)], [output],
            name=output, transB=1,
        ))
        return output


def _bottleneck(graph: _GraphBuilder, x: str, prefix: str, in_ch: int, width: int, stride: int) -> str:
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
    graph = _GraphBuilder(np.random.default_rng(seed))
    x = graph.conv_bn(INPUT_NAME, "stem", INPUT_SHAPE[1], STEM_WIDTH, 7, 2)
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
    graph.dense(x, channels, NUM_CLASSES, OUTPUT_NAME)

    onnx_graph = helper.make_graph(
        graph.nodes,
        "resnet50_v1_synthetic",
        inputs=[helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, list(INPUT_SHAPE))],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [INPUT_SHAPE[0], NUM_CLASSES])],
        initializer=graph.initializers,
    )
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="wasmforge.generators.resnet50",
        doc_string=f"ResNet50-v1 topology with random weights, numpy default_rng(seed={seed}).",
    )
    return model
