"""A 1-row matmul (dense layer at batch 1) gets the row-streaming schedule; others do not."""

from __future__ import annotations

import numpy as np
import pytest

from tests.compiler.native_checks import assert_matches_onnxruntime
from wasmforge.compiler import matvec
from wasmforge.compiler.frontend import graph_inputs
from wasmforge.compiler.graph_lib import lower


def dense(rows: int, k: int, n: int, relu: bool = True, seed: int = 0):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["g" if relu else "y"], transB=1)]
    if relu:
        nodes.append(helper.make_node("Relu", ["g"], ["y"]))
    graph = helper.make_graph(
        nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, n])],
        [numpy_helper.from_array((rng.standard_normal([n, k]) / np.sqrt(k)).astype(np.float32), "W"),
         numpy_helper.from_array(rng.standard_normal([n]).astype(np.float32), "B")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _matmul_funcs(model):
    mod, _ = lower(model, graph_inputs(model, {}))
    return [f for gv, f in mod.functions.items() if "matmul" in gv.name_hint]


@pytest.mark.parametrize("n, relu", [(40, True), (1000, False), (12, True)])
def test_one_row_is_scheduled_and_matches(tmp_path, n, relu):
    model = dense(1, 64, n, relu)
    funcs = _matmul_funcs(model)
    assert funcs and all(f.attrs.get("tirx.is_scheduled", False) for f in funcs)
    assert_matches_onnxruntime(model, tmp_path / "m.onnx")


@pytest.mark.parametrize("rows, n", [(2, 40), (1, 10)])  # two rows; a width that is no multiple of 4
def test_other_matmuls_are_not_matvecs(tmp_path, monkeypatch, rows, n):
    taken = []
    real = matvec.schedule
    monkeypatch.setattr(matvec, "schedule", lambda f: taken.append(real(f)) or taken[-1])
    model = dense(rows, 64, n)
    assert _matmul_funcs(model) and not any(taken)  # gemm.py takes it first, or matvec declines
    assert_matches_onnxruntime(model, tmp_path / "m.onnx")


@pytest.mark.parametrize("n, expected", [(1000, 40), (64, 32), (12, 4), (10, None)])
def test_tile(n, expected):
    assert matvec.tile(n) == expected
