"""TopK as TE compute: the same numbers as onnx's reference, and no runtime call
left in the wasm lowering (TVM's own topk is an extern of tvm.contrib.sort)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper

from tests.compiler.test_op_gaps import check, make, tensor
from wasmforge.compiler import optimize
from wasmforge.compiler.frontend import graph_inputs, import_relax
from wasmforge.compiler.graph_lib import WASM_TARGET


def topk_model(shape, k, axis, largest=1, elem=TensorProto.FLOAT):
    out = list(shape)
    out[axis] = k
    model = make([helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=axis, largest=largest)],
                 [tensor("x", elem, list(shape))],
                 [tensor("values", elem, out), tensor("indices", TensorProto.INT64, out)],
                 [numpy_helper.from_array(np.array([k], np.int64), "k")])
    return model


@pytest.mark.parametrize("shape, k, axis, largest", [((3, 4), 3, 1, 1), ((3, 4), 2, -1, 0), ((5, 2, 3), 2, 0, 1)])
def test_topk_matches_the_reference_with_ties(tmp_path, shape, k, axis, largest):
    model = topk_model(shape, k, axis, largest)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, shape).astype(np.float32)  # many ties: the lower index comes first
    check(model, tmp_path, {"x": x})


def test_the_wasm_lowering_calls_no_runtime_sort():
    model = topk_model((3, 4), 2, 1)
    mod = import_relax(model, graph_inputs(model, {}))
    lowered = optimize.optimize(mod, tvm.target.Target(WASM_TARGET))
    text = lowered.script()
    assert "tvm.contrib.sort" not in text
    assert "topk" in text
