"""The optimiser's fast path never breaks a build: whatever fails in it falls back
to TVM's default pipeline, with one warning line, and the numbers stay right."""

from __future__ import annotations

import numpy as np
import pytest

from tests.compiler.native_checks import assert_matches_onnxruntime, plan_and_native
from wasmforge import reference
from wasmforge.compiler import optimize
from wasmforge.compiler.frontend import graph_inputs
from wasmforge.compiler.graph_lib import lower


def blocked_cnn(seed: int = 0):
    """Two 3x3 convs with 8 and 16 output channels (blocked by the fast path) -> pooled vector."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = {"W1": rng.standard_normal([8, 3, 3, 3]) * 0.3, "B1": rng.standard_normal([8]) * 0.1,
               "W2": rng.standard_normal([16, 8, 3, 3]) * 0.2, "B2": rng.standard_normal([16]) * 0.1}
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["y"])]
    graph = helper.make_graph(nodes, "blocked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _blocked(mod) -> list:
    """The PrimFuncs that hold the blocked (NCHWc) convolution."""
    from tvm import tirx

    return [f for f in mod.functions.values()
            if isinstance(f, tirx.PrimFunc) and optimize.CONV_BLOCK in f.script()]


def _outputs(model, seed=0):
    _, _, native, inputs = plan_and_native(model)
    return native.run(reference.seeded_inputs(inputs, seed))


def test_fast_path_has_blocked_convs_and_no_warning():
    model = blocked_cnn()
    warnings: list[str] = []
    mod, _ = lower(model, graph_inputs(model, {}), warnings=warnings)
    assert warnings == []
    assert _blocked(mod)


@pytest.mark.parametrize("broken", ["fuse", "schedule_conv", "_apply_database"])
def test_a_failure_in_the_fast_path_falls_back_with_the_same_outputs(monkeypatch, tmp_path, broken):
    model = blocked_cnn()
    fast = _outputs(model)

    def fail(*args, **kwargs):
        raise RuntimeError(f"injected failure in {broken}")

    monkeypatch.setattr(optimize, broken, fail)
    warnings: list[str] = []
    database = "/nonexistent" if broken == "_apply_database" else None
    mod, _ = lower(model, graph_inputs(model, {}), tuning_db=database, warnings=warnings)
    if broken == "schedule_conv":
        # Per PrimFunc: the conv keeps the blocked layout but TVM's default
        # schedule; schedule_conv's own guard is what catches that, not the fallback.
        pass
    else:
        assert len(warnings) == 1 and f"injected failure in {broken}" in warnings[0]
        assert "default pipeline" in warnings[0]
        assert not _blocked(mod)
    slow = _outputs(model)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert_matches_onnxruntime(model, tmp_path / "m.onnx")  # the fallback, against the oracle


def test_schedule_failure_is_contained_per_primfunc(monkeypatch):
    """A PrimFunc the hand schedule raises on keeps TVM's default schedule."""
    def broken_schedule(sch, index):
        raise ValueError("injected schedule failure")

    monkeypatch.setattr(optimize, "_schedule", broken_schedule)
    model = blocked_cnn()
    warnings: list[str] = []
    mod, _ = lower(model, graph_inputs(model, {}), warnings=warnings)
    assert warnings == []  # contained, no global fallback
    funcs = _blocked(mod)
    assert funcs and not any(f.attrs and f.attrs.get("tirx.is_scheduled", False) for f in funcs)


def test_a_layout_failure_around_one_conv_keeps_only_that_conv_nchw(monkeypatch, tmp_path):
    """Per operator: TVM's ConvertLayout failing whenever conv #1 is blocked leaves
    conv #1 in NCHW and blocks the other, instead of giving up on the whole model."""
    real = optimize._convert_layout

    def picky(mod, allowed):
        if allowed is None or 1 in allowed:
            raise RuntimeError("injected layout failure around conv 1")
        return real(mod, allowed)

    monkeypatch.setattr(optimize, "_convert_layout", picky)
    model = blocked_cnn()
    warnings: list[str] = []
    mod, _ = lower(model, graph_inputs(model, {}), warnings=warnings)
    assert warnings == ["1 of 2 convolutions keep the NCHW layout (TVM's layout conversion fails around them)"]
    assert len(_blocked(mod)) == 1
    assert_matches_onnxruntime(model, tmp_path / "m.onnx")


@pytest.mark.parametrize("size, in_channels, stride", [(16, 8, 2), (15, 8, 2), (12, 16, 1), (13, 24, 1)])
def test_1x1_conv_reads_a_packed_copy(tmp_path, size, in_channels, stride):
    """A 1x1 conv copies the input pixels it reads pixel-major ([N, OH, OW, IC/8, 8]) in one
    pass, then reduces over contiguous channels: strided ones (ResNet v1's downsampling,
    even and odd widths) gather every other pixel, stride-1 ones with more than one
    input block only reorder. The numbers stay onnxruntime's."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    weights = {"W": rng.standard_normal([16, in_channels, 1, 1]) * 0.3, "B": rng.standard_normal([16]) * 0.1,
               "W0": rng.standard_normal([in_channels, 3, 3, 3]) * 0.3}
    nodes = [helper.make_node("Conv", ["x", "W0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c0", "W", "B"], ["c1"], strides=[stride, stride]),
             helper.make_node("Relu", ["c1"], ["y"])]
    out = (size - 1) // stride + 1
    graph = helper.make_graph(nodes, "pointwise", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, out, out])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    mod, _ = lower(model, graph_inputs(model, {}))
    packed = [f for f in _blocked(mod) if optimize.PACKED_BLOCK in f.script()]
    assert len(packed) == 1 and packed[0].attrs.get("tirx.is_scheduled", False)
    assert_matches_onnxruntime(model, tmp_path / "m.onnx")
