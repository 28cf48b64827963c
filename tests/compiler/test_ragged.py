"""Blocked convs with a prime output width compute a few more columns and crop them."""

from __future__ import annotations

import numpy as np
import pytest

from tests.compiler.native_checks import assert_matches_onnxruntime
from wasmforge.compiler import optimize, ragged
from wasmforge.compiler.frontend import graph_inputs
from wasmforge.compiler.graph_lib import lower


@pytest.mark.parametrize("ow, expected", [(13, 14), (27, 27), (111, 111), (11, 12), (17, 18), (56, 56), (55, 55),
                                          (7, 7), (3, 3), (1, 1), (5, 5)])
def test_padded_width(ow, expected):
    assert ragged.padded_width(ow, optimize._ow_tile) == expected


def conv_13(stride: int = 1, k: int = 3, seed: int = 0):
    """16 -> 24 channels on a 13-wide map (+ bias, relu), then a 1x1 conv without an epilogue."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = {"W1": rng.standard_normal([24, 16, k, k]) * 0.2, "B1": rng.standard_normal([24]),
             "W2": rng.standard_normal([8, 24, 1, 1]) * 0.2}
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c"], pads=[k // 2] * 4, strides=[stride] * 2),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "W2"], ["y"])]
    out = (13 + 2 * (k // 2) - k) // stride + 1
    graph = helper.make_graph(
        nodes, "c13", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 13, 13])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, out, out])],
        [numpy_helper.from_array(v.astype(np.float32), n) for n, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _cropped(model) -> int:
    import tvm

    from wasmforge.compiler.frontend import import_relax
    from wasmforge.compiler.graph_lib import WASM_TARGET

    fused = optimize.fuse(import_relax(model, graph_inputs(model, {})), tvm.target.Target(WASM_TARGET))
    return sum(ragged.CROP_BLOCK in f.script() for f in fused.functions.values() if isinstance(f, tvm.tirx.PrimFunc))


# 13 wide: both convs are computed 14 wide and cropped; stride 2: 7 wide, a good tile already.
@pytest.mark.parametrize("stride, k, crops", [(1, 3, 2), (1, 1, 2), (2, 3, 0)])
def test_cropped_convs_are_scheduled_and_match(tmp_path, monkeypatch, stride, k, crops):
    from wasmforge.compiler import winograd

    # Direct convs only: a 3x3 stride-1 conv would otherwise become a Winograd kernel.
    monkeypatch.setattr(winograd, "legalize", lambda bb, call: None)
    model = conv_13(stride, k)
    assert _cropped(model) == crops
    mod, _ = lower(model, graph_inputs(model, {}))
    convs = [f for gv, f in mod.functions.items() if "conv2d_nchwc" in gv.name_hint]
    assert convs and all(f.attrs.get("tirx.is_scheduled", False) for f in convs)
    assert_matches_onnxruntime(model, tmp_path / "m.onnx")
