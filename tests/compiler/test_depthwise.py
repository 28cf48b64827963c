"""Depthwise convs in the blocked layout: scheduled, fused with bias and ReLU6, no layout
transforms between the blocks of a MobileNet-style network, and the numbers of onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

from tests.compiler.native_checks import assert_matches_onnxruntime
from wasmforge.compiler import depthwise
from wasmforge.compiler.frontend import graph_inputs
from wasmforge.compiler.graph_lib import lower


def mobile_blocks(width: int = 16, size: int = 14, seed: int = 0):
    """RGB stem -> [1x1 expand, ReLU6, 3x3 depthwise (stride 1, then 2), ReLU6, 1x1 project
    (+ residual on the stride-1 block)] -> pooled vector: a MobileNetV2 in miniature."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes = {}, []
    inits["lo"], inits["hi"] = np.array(0.0), np.array(6.0)

    def conv(x, name, out_ch, in_ch, k, stride=1, group=1, relu6=True):
        inits[f"{name}.w"] = rng.standard_normal([out_ch, in_ch // group, k, k]) * (1.5 / np.sqrt(in_ch // group * k * k))
        inits[f"{name}.b"] = rng.standard_normal([out_ch]) * 0.1
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [name], group=group,
                                      strides=[stride, stride], pads=[k // 2] * 4))
        if not relu6:
            return name
        nodes.append(helper.make_node("Clip", [name, "lo", "hi"], [f"{name}.r"]))
        return f"{name}.r"

    x = conv("x", "stem", 8, 3, 3)
    for i, stride in enumerate((1, 2)):
        y = conv(x, f"e{i}", width, 8, 1)
        y = conv(y, f"d{i}", width, width, 3, stride, group=width)
        y = conv(y, f"p{i}", 8, width, 1, relu6=False)
        if stride == 1:
            nodes.append(helper.make_node("Add", [x, y], [f"a{i}"]))
            y = f"a{i}"
        x = y
    nodes += [helper.make_node("GlobalAveragePool", [x], ["g"]), helper.make_node("Flatten", ["g"], ["y"])]
    graph = helper.make_graph(
        nodes, "mobile", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _kernels(plan) -> list[str]:
    return [call["kernel"] for call in plan["calls"]]


def test_blocked_depthwise_is_scheduled_fused_and_between_no_transforms(tmp_path):
    model = mobile_blocks()
    plan = assert_matches_onnxruntime(model, tmp_path / "m.onnx")
    kernels = _kernels(plan)
    dw = [k for k in kernels if "depthwise_conv2d_nchwc" in k]
    assert len(dw) == 2
    assert all("maximum" in k and "minimum" in k for k in dw), dw  # bias + ReLU6 fused in
    # Only the network input is transformed (the pooled output has no channel block left).
    assert sum("layout_transform" in k for k in kernels) <= 2, kernels
    assert not any(k.startswith("fused_maximum") for k in kernels), kernels  # no stand-alone Clip
    mod, _ = lower(model, graph_inputs(model, {}))
    scheduled = [f for gv, f in mod.functions.items() if "depthwise_conv2d_nchwc" in gv.name_hint]
    assert scheduled and all(f.attrs.get("tirx.is_scheduled", False) for f in scheduled)


def test_strided_depthwise_reads_its_padding_in_place():
    """Stride 1 pads a copy of each channel block before reading it; stride 2 reads the
    input in place, bounds-tested, with no padded copy (both checked against onnxruntime
    by the tests above)."""
    model = mobile_blocks(size=14)
    mod, _ = lower(model, graph_inputs(model, {}))
    copies = {}
    for gv, f in mod.functions.items():
        if "depthwise_conv2d_nchwc" in gv.name_hint:
            script = f.script()
            strided = "T.int64(7), T.int64(7), T.int64(8))" in script  # 14x14 -> 7x7
            copies[strided] = "pad_temp" in script
    assert copies == {False: True, True: False}


@pytest.mark.parametrize("size", [13, 9])  # odd widths: tiles of 1, a stride-2 output of 7 / 5
def test_odd_sizes_match_onnxruntime(tmp_path, size):
    assert_matches_onnxruntime(mobile_blocks(size=size), tmp_path / "m.onnx")


def test_channels_not_a_multiple_of_the_block_keep_nchw(tmp_path):
    """12 channels: the depthwise conv stays NCHW (TVM's kernel), and the numbers stay right."""
    model = mobile_blocks(width=12)
    plan = assert_matches_onnxruntime(model, tmp_path / "m.onnx")
    assert not any("depthwise_conv2d_nchwc" in k for k in _kernels(plan))


def test_schedule_failure_keeps_the_default_schedule(monkeypatch, tmp_path):
    def broken(sch, names):
        raise ValueError("injected")

    monkeypatch.setattr(depthwise, "_schedule", broken)
    model = mobile_blocks()
    warnings: list[str] = []
    mod, _ = lower(model, graph_inputs(model, {}), warnings=warnings)
    assert warnings == []
    funcs = [f for gv, f in mod.functions.items() if "depthwise_conv2d_nchwc" in gv.name_hint]
    assert funcs and not any(f.attrs.get("tirx.is_scheduled", False) for f in funcs)
    assert_matches_onnxruntime(model, tmp_path / "m.onnx")


@pytest.mark.parametrize("ow, expected", [(112, 8), (56, 8), (28, 7), (14, 7), (7, 7), (12, 4), (13, 1)])
def test_tile(ow, expected):
    assert depthwise.tile(ow) == expected
