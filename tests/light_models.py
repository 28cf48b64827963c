"""The `light_*` model-zoo topologies shipped inside the pinned onnx wheel, with real weights.

Their weights are `ConstantOfShape` fills (every conv weight the same number),
so their outputs are uniform and say nothing about the numbers. `with_random_weights`
replaces every weight by seeded random values scaled like a trained network's
(He-scaled conv weights, small Gemm weights and biases, positive
BatchNormalization variances and damping scales, so that 50-layer residual
stacks neither explode nor saturate the softmax), keeping the graph otherwise as exported (Caffe2: IR 3, initializers
listed as graph inputs, multi-input Sum).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
NAMES = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
         "squeezenet", "vgg19", "zfnet512")


def light_path(name: str) -> Path:
    return LIGHT_DIR / f"light_{name}.onnx"


def _consumers(graph) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    users: dict[str, list] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            users.setdefault(name, []).append((node, index))
    return users


def _role(name: str, users) -> tuple[str, int] | None:
    """(op type, input index) of the first real consumer, looking through Unsqueeze."""
    for node, index in users.get(name, []):
        if node.op_type == "Unsqueeze":
            return _role(node.output[0], users)
        return node.op_type, index
    return None


def _value(role, shape, rng) -> np.ndarray:
    op, index = role or ("", 0)
    if op == "Conv" and index == 1 or op == "Gemm" and index == 1:
        fan_in = int(np.prod(shape[1:])) if op == "Conv" else int(min(shape))
        scale = np.sqrt(2.0 / max(fan_in, 1)) if op == "Conv" else 1.0 / np.sqrt(max(fan_in, 1))
        return rng.standard_normal(shape) * scale
    if op == "BatchNormalization":
        if index == 1:  # scale: below 1, so residual stacks do not blow up
            return rng.uniform(0.2, 0.6, shape)
        if index == 4:  # variance: positive
            return rng.uniform(0.5, 1.5, shape)
        return rng.standard_normal(shape) * 0.1  # bias, mean
    if op == "Mul":
        return rng.uniform(0.5, 1.5, shape)
    return rng.standard_normal(shape) * 0.05  # biases and anything else


def with_random_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """A copy of `model` whose float weights (ConstantOfShape fills and float
    initializers) are seeded random values of the same shapes."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    rng = np.random.default_rng(seed)
    users = _consumers(graph)
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    replaced = []
    keep = []
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in constants:
            shape = [int(d) for d in constants[node.input[0]]]
            value = _value(_role(node.output[0], users), shape, rng).astype(np.float32)
            replaced.append(numpy_helper.from_array(value, node.output[0]))
        else:
            keep.append(node)
    for init in graph.initializer:
        array = constants[init.name]
        if array.dtype == np.float32 and array.ndim >= 1:
            init.CopyFrom(numpy_helper.from_array(
                _value(_role(init.name, users), list(array.shape), rng).astype(np.float32), init.name))
    del graph.node[:]
    graph.node.extend(keep)
    graph.initializer.extend(replaced)
    # IR 3 style, as exported: every initializer is also a graph input.
    graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in replaced)
    onnx.checker.check_model(model)
    return model
