"""Clip with constant bounds becomes R.maximum / R.minimum; anything else is left alone."""

from __future__ import annotations

import numpy as np
import pytest

from tests.compiler.native_checks import assert_matches_onnxruntime
from wasmforge.compiler import clip_ops
from wasmforge.compiler.frontend import graph_inputs, import_relax


def clip_model(lo_const: bool = True, with_max: bool = True):
    """x -> Clip(lo, hi) -> y; `lo` a constant or a graph input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])]
    inits = [numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
    if lo_const:
        inits.append(numpy_helper.from_array(np.array(-0.5, np.float32), "lo"))
    else:
        inputs.append(helper.make_tensor_value_info("lo", TensorProto.FLOAT, []))
    node = helper.make_node("Clip", ["x", "lo", "hi" if with_max else ""], ["y"])
    graph = helper.make_graph([node], "clip", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _ops(mod) -> list[str]:
    text = mod["main"].script()
    return [op for op in ("R.maximum", "R.minimum", "R.call_tir") if op in text]


@pytest.mark.parametrize("with_max", [True, False])
def test_constant_bounds_become_relax_ops(tmp_path, with_max):
    model = clip_model(with_max=with_max)
    mod = clip_ops.as_relax_ops(import_relax(model, graph_inputs(model, {})))
    assert _ops(mod) == (["R.maximum", "R.minimum"] if with_max else ["R.maximum"])
    assert_matches_onnxruntime(model, tmp_path / "m.onnx")


def test_a_bound_from_a_graph_input_is_left_alone():
    model = clip_model(lo_const=False)
    before = import_relax(model, graph_inputs(model, {}))
    after = clip_ops.as_relax_ops(before)
    assert "R.call_tir" in after["main"].script()  # the lower bound's maximum keeps its kernel
    assert "R.minimum" in after["main"].script()  # the constant upper bound is converted


def test_only_topis_own_primfunc_is_rewritten(monkeypatch):
    """A PrimFunc that merely looks like a maximum (another shape here) is not touched."""
    model = clip_model()
    mod = import_relax(model, graph_inputs(model, {}))
    real = clip_ops._reference
    monkeypatch.setattr(clip_ops, "_reference", lambda kind, shape, dtype: real(kind, [1, 8, 4, 5], dtype))
    assert "R.maximum" not in clip_ops.as_relax_ops(mod)["main"].script()
