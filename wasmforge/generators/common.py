"""Shared pieces of the seeded CNN/transformer generators (ResNet50, MobileNetV2, SqueezeNet, BERT).

`GraphBuilder` appends nodes and initializers in call order and draws every weight
from one numpy Generator, so a generator that makes the same calls in the same order
produces byte-identical `SerializeToString()` output. Every generator's bytes are
pinned in models.toml: a change here must leave all of them as they are.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# The CNNs stand in for the ONNX Model Zoo's ImageNet classifiers and share their
# interface: one float input `data` [1, 3, 224, 224] and [1, 1000] logits (whose
# name is each zoo model's own).
IMAGE_INPUT_NAME = "data"
IMAGE_INPUT_SHAPE = (1, 3, 224, 224)
IMAGENET_CLASSES = 1000
# Opset 13 is the oldest opset every converter we feed (TVM Relax's ONNX frontend
# included) handles without caveats; IR version 8 is what opset 13 was released with.
# Both are pinned explicitly so the bytes do not depend on the installed onnx version.
CNN_OPSET = 13
CNN_IR_VERSION = 8

BN_EPSILON = 1e-5
# Weight statistics chosen so activations stay O(1) through all of ResNet50's 50 layers
# in inference mode (BatchNormalization uses these fixed statistics, it does not
# re-normalise). The last BN of each residual branch gets a small scale, the usual
# "zero-ish init" of residual branches, otherwise the residual sums compound.
BN_SCALE_RANGE = (0.5, 1.5)
RESIDUAL_BN_SCALE_RANGE = (0.1, 0.3)
BN_SHIFT_STD = 0.05
BN_MEAN_STD = 0.05
BN_VARIANCE_RANGE = (0.5, 1.5)


class GraphBuilder:
    """Accumulates nodes and seeded initializers in a fixed order (so bytes are stable)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    # -- initializers ------------------------------------------------------------------
    def constant(self, name: str, values, dtype=np.float32) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(values).astype(dtype), name))
        return name

    def uniform(self, bounds: tuple[float, float], size) -> np.ndarray:
        return self.rng.uniform(bounds[0], bounds[1], size)

    def normal(self, std: float, size) -> np.ndarray:
        return self.rng.standard_normal(size) * std

    # -- nodes -------------------------------------------------------------------------
    def op(self, op_type: str, inputs: list[str], name: str, **attributes) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attributes))
        return name

    def conv(self, x: str, prefix: str, in_ch: int, out_ch: int, kernel: int, stride: int = 1, *,
             group: int = 1, padding: int | None = None, bias: bool = False,
             gain: float = 2.0) -> str:
        """Conv with He-normal weights (variance gain / fan_in); bias, if any, is small."""
        fan_in = in_ch // group * kernel * kernel
        weight = self.rng.standard_normal((out_ch, in_ch // group, kernel, kernel)) * np.sqrt(gain / fan_in)
        inputs = [x, self.constant(f"{prefix}.weight", weight)]
        if bias:
            inputs.append(self.constant(f"{prefix}.bias", self.normal(0.05, out_ch)))
        padding = kernel // 2 if padding is None else padding
        attributes = {"kernel_shape": [kernel, kernel], "strides": [stride, stride], "pads": [padding] * 4}
        if group != 1:
            attributes["group"] = group
        self.nodes.append(helper.make_node("Conv", inputs, [prefix], name=prefix, **attributes))
        return prefix

    def batch_norm(self, x: str, prefix: str, channels: int,
                   scale_range: tuple[float, float] = BN_SCALE_RANGE) -> str:
        inputs = [
            x,
            self.constant(f"{prefix}.scale", self.uniform(scale_range, channels)),
            self.constant(f"{prefix}.bias", self.normal(BN_SHIFT_STD, channels)),
            self.constant(f"{prefix}.mean", self.normal(BN_MEAN_STD, channels)),
            self.constant(f"{prefix}.var", self.uniform(BN_VARIANCE_RANGE, channels)),
        ]
        self.nodes.append(helper.make_node("BatchNormalization", inputs, [prefix], name=prefix,
                                           epsilon=BN_EPSILON))
        return prefix

    def gemm(self, x: str, prefix: str, in_features: int, out_features: int, output: str, *,
             centered: bool = False) -> str:
        """Fully connected layer, weights [out, in] (transB) with variance 1/fan_in: O(1) logits.

        `centered` makes each row sum to zero. Use it after a ReLU: the non-negative
        features then share a large common component that would otherwise add the same
        input-independent vector to the logits of every input.
        """
        weight = self.rng.standard_normal((out_features, in_features)) / np.sqrt(in_features)
        if centered:
            weight -= weight.mean(axis=1, keepdims=True)
        bias = self.normal(0.01, out_features)
        self.nodes.append(helper.make_node(
            "Gemm", [x, self.constant(f"{prefix}.weight", weight), self.constant(f"{prefix}.bias", bias)],
            [output], name=output, transB=1,
        ))
        return output

    # -- model -------------------------------------------------------------------------
    def model(self, *, graph_name: str, inputs: list[onnx.ValueInfoProto],
              outputs: list[onnx.ValueInfoProto], opset: int, ir_version: int, producer: str,
              doc: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, graph_name, inputs=inputs, outputs=outputs,
                                  initializer=self.initializers)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                 ir_version=ir_version, producer_name=producer, doc_string=doc)

    def image_classifier(self, *, output_name: str, graph_name: str, producer: str,
                         doc: str) -> onnx.ModelProto:
        """`model()` of a CNN: the zoo classifiers' interface (IMAGE_INPUT_NAME in), opset 13."""
        return self.model(graph_name=graph_name, inputs=[float_tensor(IMAGE_INPUT_NAME, IMAGE_INPUT_SHAPE)],
                          outputs=[float_tensor(output_name, (IMAGE_INPUT_SHAPE[0], IMAGENET_CLASSES))],
                          opset=CNN_OPSET, ir_version=CNN_IR_VERSION, producer=producer, doc=doc)


def float_tensor(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def int64_tensor(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.INT64, list(shape))
