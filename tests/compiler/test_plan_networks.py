"""Plans of the synthetic networks, run with native kernels against onnxruntime (no Docker)."""

from __future__ import annotations

import numpy as np
import onnx
from tests.compiler.native_checks import assert_matches_onnxruntime
from onnx import TensorProto, helper, numpy_helper

from wasmforge.generators import bert


def scalar_constants() -> onnx.ModelProto:
    """Where(Cast(ids, bool), 0, -10000): two 0-d constants that stay kernel arguments."""
    nodes = [
        helper.make_node("Cast", ["ids"], ["keep"], to=TensorProto.BOOL),
        helper.make_node("Where", ["keep", "zero", "bias"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "scalar_constants",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
         numpy_helper.from_array(np.array(-10000.0, np.float32), "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_scalar_constants_keep_their_zero_dimensions(tmp_path):
    # Regression: plan.py stored 0-d constants with shape [1] (np.ascontiguousarray
    # promotes 0-d arrays), and the kernels refused them (ndim mismatch).
    plan = assert_matches_onnxruntime(scalar_constants(), tmp_path / "scalars.onnx")
    assert [t["shape"] for t in plan["tensors"] if t["kind"] == "param"] == [[], []]


def test_bert_synth_plan_runs_like_onnxruntime(tmp_path):
    plan = assert_matches_onnxruntime(bert.build_model(seed=0), tmp_path / "bert.onnx")
    assert [t["dtype"] for t in plan["tensors"] if t["kind"] == "input"] == ["int64", "int64"]
