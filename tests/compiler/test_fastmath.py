"""fastmath.py: softmax and erf without libm calls, vectorized, and as exact as onnxruntime needs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.compiler.native_checks import plan_and_native
from wasmforge import reference
from wasmforge.compiler import fastmath
from wasmforge.compiler.frontend import graph_inputs
from wasmforge.compiler.graph_lib import lower


def softmax_and_gelu(axis: int = -1) -> onnx.ModelProto:
    """Softmax(x + mask bias) over `axis`, and exact GELU of x."""
    nodes = [helper.make_node("Add", ["x", "bias"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["probs"], axis=axis),
             helper.make_node("Div", ["x", "sqrt2"], ["xs"]),
             helper.make_node("Erf", ["xs"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["e1"]),
             helper.make_node("Mul", ["x", "e1"], ["g"]),
             helper.make_node("Mul", ["g", "half"], ["gelu"])]
    bias = np.zeros([1, 1, 1, 16], np.float32)
    bias[..., 11:] = -10000.0  # masked keys, as BERT's attention mask makes them
    graph = helper.make_graph(
        nodes, "softmax_and_gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 16])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 2, 8, 16]),
         helper.make_tensor_value_info("gelu", TensorProto.FLOAT, [1, 2, 8, 16])],
        [numpy_helper.from_array(bias, "bias"),
         numpy_helper.from_array(np.array(np.sqrt(2.0), np.float32), "sqrt2"),
         numpy_helper.from_array(np.array(1.0, np.float32), "one"),
         numpy_helper.from_array(np.array(0.5, np.float32), "half")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _scripts(model) -> list[str]:
    from tvm import tirx

    warnings: list[str] = []
    mod, _ = lower(model, graph_inputs(model, {}), warnings=warnings)
    assert warnings == []
    return [f.script() for f in mod.functions.values() if isinstance(f, tirx.PrimFunc)]


def _ours(script: str) -> bool:
    return f'T.sblock("{fastmath.SOFTMAX_BLOCKS[3]}")' in script


def test_no_libm_exp_or_erf_and_the_softmax_rows_are_vectorized():
    scripts = _scripts(softmax_and_gelu())
    assert not any("T.exp(" in s or "T.erf(" in s for s in scripts)
    softmax = [s for s in scripts if _ours(s)]
    assert len(softmax) == 1 and softmax[0].count("T.vectorized") == 2


def test_softmax_over_another_axis_keeps_tvms_legalization():
    scripts = _scripts(softmax_and_gelu(axis=2))
    assert not any(_ours(s) for s in scripts) and any("T_softmax_norm" in s for s in scripts)


@pytest.mark.parametrize("axis", [-1, 2])
def test_matches_onnxruntime_over_a_wide_range(tmp_path, axis):
    model = softmax_and_gelu(axis)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    _, _, native, inputs = plan_and_native(model)
    sess = reference.session(path)
    rng = np.random.default_rng(0)
    for scale in (0.1, 3.0, 30.0):  # erf saturates at +-4 / sqrt 2; softmax rows get peaked
        x = (rng.standard_normal([1, 2, 8, 16]) * scale).astype(np.float32)
        x[0, 0, 0, :4] = [0.0, -0.0, 1e-30, -1e-30]
        got, want = native.run([x]), reference.run_reference(sess, [x])
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=2e-6, atol=2e-6)
        assert np.all(got[0][..., 11:] == 0) if axis == -1 else True  # masked keys get exactly 0
