"""What every hand-written kernel shares: a conv window's output size and padded input,
steps of input channels, and register tiles whose stores leave no rolled loop (no
stack array, no memset)."""

from __future__ import annotations

import pytest

from wasmforge.compiler import optimize, tiling, wasm_measure

from .convs import conv_bias_relu


@pytest.mark.parametrize(("size", "before", "after", "kernel", "stride", "dilation"), [
    (224, 3, 3, 7, 2, 1), (56, 1, 1, 3, 1, 1), (56, 0, 0, 1, 2, 1), (13, 0, 1, 1, 1, 1),
    (10, 0, 0, 3, 1, 2), (9, 2, 0, 3, 3, 2), (113, 0, 0, 3, 2, 1), (7, 3, 3, 7, 1, 1)])
def test_window_extent_is_the_onnx_conv_output_size(size, before, after, kernel, stride, dilation):
    import onnx
    from onnx import TensorProto, helper

    conv = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[kernel, 1], strides=[stride, 1],
                            dilations=[dilation, 1], pads=[before, 0, after, 0])
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, size, 1]),
              helper.make_tensor_value_info("w", TensorProto.FLOAT, [1, 1, kernel, 1])]
    graph = helper.make_graph([conv], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    inferred = onnx.shape_inference.infer_shapes(helper.make_model(graph), strict_mode=True)
    dims = inferred.graph.output[0].type.tensor_type.shape.dim
    assert tiling.window_extent(size, before, after, kernel, stride, dilation) == dims[2].dim_value


def test_pad_nchwc_pads_the_spatial_axes_only_and_only_when_asked():
    from tvm import te

    data = te.placeholder((1, 2, 5, 6, 8), name="data")
    assert tiling.pad_nchwc(data, [0, 0, 0, 0]) is data
    padded = tiling.pad_nchwc(data, [1, 2, 3, 4])
    assert [int(d) for d in padded.shape] == [1, 2, 9, 12, 8]
    assert padded.op.name == "pad_temp"


@pytest.mark.parametrize(("block", "step"), [(8, 4), (16, 4), (4, 4), (3, 3), (6, 6), (1, 1)])
def test_step_channels_is_four_where_it_divides_the_block(block, step):
    assert tiling.step_channels(block) == step


@pytest.mark.parametrize(("width", "tile"), [(56, 8), (112, 8), (28, 7), (14, 7), (7, 7), (12, 4), (54, 6),
                                             (55, 5), (27, 3)])
def test_conv_tiles_prefer_eight_then_seven_pixels(width, tile):
    assert optimize._ow_tile(width) == tile


def _schedule(func):
    import tvm
    from tvm import s_tir

    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    optimize._schedule(sch, tiling.root_block_names(sch).index(optimize.CONV_BLOCK))
    return sch


def test_the_conv_reduction_steps_through_four_channels_at_a_time():
    from tvm import tirx

    sch = _schedule(conv_bias_relu(16, 8, 8))
    *_, step_loop, channel_step, pixels, lanes = sch.get_loops(sch.get_sblock("conv2d_NCHWc_update"))
    assert int(sch.get(step_loop).extent) == 2 and sch.get(step_loop).kind == tirx.ForKind.SERIAL
    assert int(sch.get(channel_step).extent) == 4 and sch.get(channel_step).kind == tirx.ForKind.UNROLLED
    assert sch.get(lanes).kind == tirx.ForKind.VECTORIZED
    assert int(sch.get(pixels).extent) == 8


def test_a_seven_wide_row_steps_four_channels_too():
    from tvm import tirx

    sch = _schedule(conv_bias_relu(16, 8, 7))
    *_, channel_step, pixels, lanes = sch.get_loops(sch.get_sblock("conv2d_NCHWc_update"))
    assert int(sch.get(channel_step).extent) == 4 and sch.get(channel_step).kind == tirx.ForKind.UNROLLED
    assert int(sch.get(pixels).extent) == 7


def test_the_tile_store_has_no_rolled_loop():
    from tvm import tirx

    sch = _schedule(conv_bias_relu(16, 8, 8))
    store = sch.get_child_blocks(sch.get_sblock("root"))[-1]
    *_, pixels, lanes = sch.get_loops(store)
    assert sch.get(pixels).kind == tirx.ForKind.UNROLLED
    assert sch.get(lanes).kind == tirx.ForKind.VECTORIZED


@pytest.mark.skipif(wasm_measure.wasm_linker() is None,
                    reason="needs wasm-ld (the builder image) or a Rust toolchain's rust-lld")
def test_a_stem_conv_does_not_zero_its_tile_with_memset_calls(tmp_path, monkeypatch):
    """ResNet50's stem (3 input channels, 7x7, stride 2) kept its accumulator tile in a
    stack array and called memset once per tile; only the padding may call it now."""
    calls = []
    served = wasm_measure.WasmKernel._memset

    def counted(self, dst, value, size):
        calls.append(size)
        return served(self, dst, value, size)

    monkeypatch.setattr(wasm_measure.WasmKernel, "_memset", counted)
    func = optimize.hand_schedule(conv_bias_relu(3, 8, 32, kernel=7, stride=2, ic_block=3))
    assert func is not None
    kernel = wasm_measure.WasmKernel(wasm_measure.link_kernel(func, out_dir=tmp_path), wasm_measure.arg_specs(func))
    kernel.call()
    tiles = 16 * 16 // optimize._ow_tile(16)  # one output block, 16x16 pixels
    assert len(calls) < tiles // 4, f"{len(calls)} memset calls for {tiles} tiles"
