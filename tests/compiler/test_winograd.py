"""Winograd F(m x m, 3 x 3): the transform matrices, the build-time weight transform,
and small convolutions through the real pipeline against numpy and onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

from tests.compiler.native_checks import assert_matches_onnxruntime
from wasmforge.compiler import optimize, winograd
from wasmforge.compiler.frontend import graph_inputs
from wasmforge.compiler.graph_lib import lower


@pytest.mark.parametrize("m", sorted(winograd.MATRICES))
def test_matrices_compute_a_1d_correlation(m):
    """A^T [(G g) . (B^T d)] = the m outputs of the valid correlation of d with g."""
    bt, g, at = winograd.matrices(m)
    assert bt.shape == (m + 2, m + 2) and g.shape == (m + 2, 3) and at.shape == (m, m + 2)
    rng = np.random.default_rng(m)
    for _ in range(5):
        d, k = rng.standard_normal(m + 2), rng.standard_normal(3)
        expected = [sum(d[i + r] * k[r] for r in range(3)) for i in range(m)]
        np.testing.assert_allclose(at @ ((g @ k) * (bt @ d)), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("m", sorted(winograd.MATRICES))
def test_weight_transform_is_g_w_gt_per_channel_pair(m):
    rng = np.random.default_rng(1)
    w = rng.standard_normal([2, 3, 3, 3, 8, 8]).astype(np.float32)  # OIHW8i8o
    u = winograd.transform_weights(w, m)
    assert u.shape == (m + 2, m + 2, 2, 3, 8, 8) and u.dtype == np.float32
    _, g, _ = winograd.matrices(m)
    k, c, ci, ko = 1, 2, 5, 3
    expected = g @ w[k, c, :, :, ci, ko].astype(np.float64) @ g.T
    np.testing.assert_allclose(u[:, :, k, c, ci, ko], expected, rtol=1e-6, atol=1e-6)
    assert u.tobytes() == winograd.transform_weights(w.copy(), m).tobytes()  # deterministic


def _conv_model(c: int, k: int, hw: int, residual: bool, seed: int = 0, batch: int = 1):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = {"W1": rng.standard_normal([k, c, 3, 3]) * 0.2, "B1": rng.standard_normal([k]) * 0.1,
               "W2": rng.standard_normal([k, k, 3, 3]) * 0.2}
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2"], ["c2"], pads=[1, 1, 1, 1])]
    nodes.append(helper.make_node("Add", ["c2", "r1"], ["y"]) if residual
                 else helper.make_node("Identity", ["c2"], ["y"]))
    graph = helper.make_graph(
        nodes, "winograd", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, c, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, k, hw, hw])],
        [numpy_helper.from_array(v.astype(np.float32), n) for n, v in weights.items()])
    return onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _winograd_funcs(mod) -> dict:
    from tvm import tirx

    return {gv.name_hint: f for gv, f in mod.functions.items()
            if isinstance(f, tirx.PrimFunc) and winograd.GEMM in f.script()}


@pytest.mark.parametrize(("c", "k", "hw", "residual", "batch"),
                         [(16, 8, 16, False, 1), (8, 16, 7, True, 1), (16, 16, 5, True, 1), (8, 8, 15, True, 2),
                          (8, 8, 8, False, 1)])
def test_small_convs_match_onnxruntime(tmp_path, c, k, hw, residual, batch):
    """F(4x4) (16, and 15: a partial last tile) and F(2x2) (7 and 5: partial last tiles;
    7 and 8: register tiles spanning two rows of 4 tiles), bias + relu and residual
    epilogues, a batch of 2."""
    assert winograd.tile_size(hw, hw) == (4 if hw >= 15 else 2)
    model = _conv_model(c, k, hw, residual, batch=batch)
    warnings: list[str] = []
    mod, _ = lower(model, graph_inputs(model, {}), warnings=warnings)
    assert warnings == []
    funcs = _winograd_funcs(mod)
    assert len(funcs) == 2 and all(f.attrs.get("tirx.is_scheduled", False) for f in funcs.values())
    assert_matches_onnxruntime(model, tmp_path / "m.onnx")


def test_other_convs_stay_direct():
    """Stride 2 (blocked_cnn's second conv) and the RGB stem (3 input channels) are not Winograd."""
    from tests.compiler.test_optimize import blocked_cnn

    model = blocked_cnn()
    mod, _ = lower(model, graph_inputs(model, {}))
    assert not _winograd_funcs(mod)


def test_a_winograd_schedule_failure_falls_back_to_direct_convs(monkeypatch, tmp_path):
    def broken(sch, names):
        raise ValueError("injected Winograd schedule failure")

    monkeypatch.setattr(winograd, "_schedule", broken)
    model = _conv_model(8, 8, 6, True)
    warnings: list[str] = []
    mod, _ = lower(model, graph_inputs(model, {}), warnings=warnings)
    assert len(warnings) == 1 and "injected Winograd schedule failure" in warnings[0]
    assert not _winograd_funcs(mod)
    direct = [f for f in mod.functions.values() if hasattr(f, "body") and optimize.CONV_BLOCK in f.script()]
    assert len(direct) == 2 and all(f.attrs.get("tirx.is_scheduled", False) for f in direct)
    assert_matches_onnxruntime(model, tmp_path / "m.onnx")


def test_tile_size_rule():
    assert winograd.tile_size(56, 56) == 4 and winograd.tile_size(28, 28) == 4
    # 4x4 tiles padded no more than 2x2 tiles: SqueezeNet's 55- and 27-wide maps.
    assert winograd.tile_size(55, 55) == 4 and winograd.tile_size(27, 27) == 4
    assert winograd.tile_size(4, 64) == 4
    # 14 and 13 wide: 4x4 tiles waste more (0.73 of F(2x2)'s work, not <= 0.6).
    assert winograd.tile_size(14, 14) == 2 and winograd.tile_size(13, 13) == 2
    # Fewer than 16 tiles of 4x4: 7x7 (4 tiles), 10x10 (9), 4x4 (1).
    assert winograd.tile_size(7, 7) == 2 and winograd.tile_size(10, 10) == 2
    assert winograd.tile_size(4, 4) == 2


def test_gemm_tile_spans_rows_only_where_rows_are_narrow():
    assert winograd._gemm_tile(14, 14) == 7 and winograd._gemm_tile(7, 7) == 7  # along a row
    assert winograd._gemm_tile(20, 20) == 4  # 80-wide maps in F(4x4): unchanged
    assert winograd._gemm_tile(8, 8) == 4  # a row of 8 tiles is not narrow: 4 along it, as before
    assert winograd._gemm_tile(4, 4) == 8  # ResNet50's 7x7 stage in F(2x2): two rows of 4
    assert winograd._gemm_tile(4, 2) == 8 and winograd._gemm_tile(8, 1) == 8
    assert winograd._gemm_tile(5, 4) == 4 and winograd._gemm_tile(2, 2) == 2  # rows do not fill 8


def test_no_winograd_when_the_rule_says_so(monkeypatch):
    monkeypatch.setattr(winograd, "tile_size", lambda oh, ow: 0)
    model = _conv_model(8, 8, 6, True)
    mod, _ = lower(model, graph_inputs(model, {}))
    assert not _winograd_funcs(mod)
    assert any(optimize.CONV_BLOCK in f.script() for f in mod.functions.values() if hasattr(f, "body"))
