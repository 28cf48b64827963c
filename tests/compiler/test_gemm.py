"""gemm.py: constant matmul weights packed at build time, every matmul register-tiled,
and anything the schedule cannot take left to TVM's default (still right)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.compiler.native_checks import assert_matches_onnxruntime
from wasmforge.compiler import gemm, optimize
from wasmforge.compiler.frontend import graph_inputs
from wasmforge.compiler.graph_lib import lower


def test_pack_weights_is_the_panel_layout():
    w = np.arange(6 * 16, dtype=np.float32).reshape(6, 16)
    packed = gemm.pack_weights(w)
    assert packed.shape == (2, 6, 8) and packed.flags.c_contiguous
    for n in range(16):
        np.testing.assert_array_equal(packed[n // 8, :, n % 8], w[:, n])


@pytest.mark.parametrize(("m", "n", "tile"), [(128, 384, (8, 1)), (36, 64, (4, 1)), (1, 1000, (1, 5)), (1, 1024, (1, 4)), (1, 56, (1, 1)),
                                              (1, 16, (1, 2)), (6, 64, (2, 2)), (3, 8, (3, 1))])
def test_tile_choice(m, n, tile):
    assert gemm._tile(m, n) == tile


def dense_and_attention(m: int = 8, k: int = 24, n: int = 16, seed: int = 0) -> onnx.ModelProto:
    """x @ W + b (constant W: packed), Gelu-ish epilogue, then a batch matmul of two
    activations (TVM's own `matmul` block) and a dense whose N is not a multiple of 8."""
    rng = np.random.default_rng(seed)
    weights = {"W": rng.standard_normal([k, n]) / np.sqrt(k), "b": rng.standard_normal([n]) * 0.1,
               "V": rng.standard_normal([n, 5]) / np.sqrt(n), "shape": np.array([1, 2, m, n // 2])}
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]),
             helper.make_node("Add", ["xw", "b"], ["h"]),
             helper.make_node("Erf", ["h"], ["e"]),
             helper.make_node("Mul", ["h", "e"], ["g"]),
             helper.make_node("Reshape", ["g", "shape"], ["heads"]),  # [1, 2, m, n/2]
             helper.make_node("Transpose", ["heads"], ["heads_t"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["heads", "heads_t"], ["scores"]),  # [1, 2, m, m]
             helper.make_node("MatMul", ["g", "V"], ["odd"])]  # N = 5: not packed
    graph = helper.make_graph(
        nodes, "dense_and_attention", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, m, k])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2, m, m]),
         helper.make_tensor_value_info("odd", TensorProto.FLOAT, [1, m, 5])],
        [numpy_helper.from_array(v.astype(np.int64 if key == "shape" else np.float32), key)
         for key, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def gemv(k: int = 64, n: int = 40) -> onnx.ModelProto:
    """A classifier head: Gemm with transB (ResNet50's dense), M = 1."""
    rng = np.random.default_rng(3)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1)], "gemv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [numpy_helper.from_array((rng.standard_normal([n, k]) / 8).astype(np.float32), "W"),
         numpy_helper.from_array((rng.standard_normal([n]) / 10).astype(np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _kernels(model) -> dict[str, str]:
    """{PrimFunc name: TIR script} of the lowered model; no optimiser warning."""
    from tvm import tirx

    warnings: list[str] = []
    mod, _ = lower(model, graph_inputs(model, {}), warnings=warnings)
    assert warnings == []
    return {gv.name_hint: f.script() for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}


def test_constant_weights_are_packed_and_every_tileable_matmul_is_tiled():
    kernels = _kernels(dense_and_attention())
    packed = [s for s in kernels.values() if gemm.PACKED_BLOCK in s]
    assert len(packed) == 1  # x @ W (N = 16); V has N = 5
    assert "T.Buffer((T.int64(2), T.int64(24), T.int64(8))" in packed[0]  # [N/8, K, 8]
    assert "erf" in packed[0]  # the epilogue is fused into the tile
    tiled = [s for s in kernels.values() if "matmul" in s and "T.vectorized" in s]
    assert len(tiled) == 2  # the packed dense and the attention-style batch matmul
    odd = [s for s in kernels.values() if "T.int64(5)" in s and "matmul" in s]
    assert odd and all("T.vectorized" not in s for s in odd)  # N = 5: TVM's default


@pytest.mark.parametrize("model", [dense_and_attention, gemv], ids=["dense_and_attention", "gemv"])
def test_scheduled_matmuls_match_onnxruntime(tmp_path, model):
    assert_matches_onnxruntime(model(), tmp_path / "m.onnx")


def test_a_kernel_the_schedule_cannot_take_keeps_the_default(monkeypatch, tmp_path):
    def fail(*args, **kwargs):
        raise RuntimeError("injected schedule failure")

    monkeypatch.setattr(gemm, "_schedule", fail)  # inside schedule_gemm's guard: per PrimFunc
    kernels = _kernels(dense_and_attention())
    assert all("T.vectorized" not in s for s in kernels.values() if "matmul" in s)
    assert_matches_onnxruntime(dense_and_attention(), tmp_path / "m.onnx")


def test_the_fast_path_hook_calls_the_gemm_schedule(monkeypatch):
    calls = []
    real = gemm.schedule_gemm
    monkeypatch.setattr(gemm, "schedule_gemm", lambda f: calls.append(1) or real(f))
    _kernels(gemv())
    assert calls and optimize.gemm is gemm
