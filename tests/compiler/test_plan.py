"""What the plan says of each call beyond the kernel: its operator kind and the
FLOPs TVM's TIR analysis estimates (docs/plan-format.md)."""

from __future__ import annotations

import pytest

from tests.onnx_models import tiny_cnn
from wasmforge.compiler.frontend import graph_inputs
from wasmforge.compiler.graph_lib import kernel_flops, lower
from wasmforge.compiler.plan import annotate_calls, derive_plan, op_kind


@pytest.mark.parametrize("kernel, kind", [
    ("fused_conv2d_nchwc_add_relu", "conv2d"),
    ("fused_conv2d_nchwc3_add2_add3_relu2", "conv2d"),  # TVM numbers its kernels
    ("fused_conv1d_add", "conv1d"),
    ("fused_conv2d_transpose_add", "conv_transpose"),
    ("fused_matmul1_add3", "matmul"),
    ("fused_add_matmul_relu", "matmul"),  # the anchor wins wherever it is
    ("batch_matmul2", "matmul"),
    ("max_pool2d1", "pool"),
    ("adaptive_avg_pool2d", "pool"),
    ("te_layout_transform1", "layout_transform"),
    ("transpose3", "transpose"),
    ("softmax", "softmax"),
    ("fused_layer_norm1", "layer_norm"),
    ("concatenate1", "concat"),
    ("mean", "reduce"),
    ("fused_mean_subtract", "reduce"),
    ("take", "gather"),
    ("fused_add_relu", "add"),  # element-wise: its first operator
    ("clip2", "clip"),
])
def test_op_kind_from_kernel_names(kernel, kind):
    assert op_kind(kernel) == kind


def test_annotate_calls_adds_op_and_known_flops():
    plan = {"calls": [{"kernel": "fused_conv2d_add", "args": [0]}, {"kernel": "softmax", "args": [1]}]}
    annotate_calls(plan, {"fused_conv2d_add": 123.0, "softmax": None})
    assert plan["calls"] == [{"kernel": "fused_conv2d_add", "args": [0], "op": "conv2d", "flops": 123},
                             {"kernel": "softmax", "args": [1], "op": "softmax"}]


def test_flops_of_a_small_cnn_are_its_multiply_adds_and_epilogues():
    model = tiny_cnn()
    inputs = graph_inputs(model, {})
    mod, _ = lower(model, inputs)
    plan, _ = derive_plan(mod["main"], "m", [i["name"] for i in inputs], [o.name for o in model.graph.output])
    annotate_calls(plan, kernel_flops(mod, {c["kernel"] for c in plan["calls"]}))
    by_op = {}
    for c in plan["calls"]:
        by_op.setdefault(c["op"], []).append(c.get("flops"))
    # Conv 4x1x3x3 on 8x8 (padded), BN folded: 2 * 256 outputs * 9 MACs, + bias add + relu per output.
    assert by_op["conv2d"] == [2 * 256 * 9 + 256 + 256]
    # Gemm 64 -> 10 with bias.
    assert by_op["matmul"] == [2 * 64 * 10 + 10]
    # Max pool 2x2 over 4x8x8: a max per window element.
    assert by_op["pool"] == [4 * 4 * 4 * 4]
    assert all(isinstance(c.get("flops"), int) for c in plan["calls"])
