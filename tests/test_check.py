"""`invoke check`: operator support, dynamic dimensions and sizes, without compiling."""

from __future__ import annotations

import onnx
import pytest

from tests.cli import assert_one_line_error, invoke
from tests.onnx_models import tiny_cnn, two_outputs, with_unsupported_ops
from wasmforge import artifact, check
from wasmforge.errors import UserError
from wasmforge.fetch import model_cache_dir, model_path
from wasmforge.paths import DIST, ROOT
from wasmforge.registry import FileSource, GeneratorSource, load_registry

pytest.importorskip("tvm")  # check reads the pinned TVM frontend, as the build does

REGISTRY = load_registry()

# What each offline registry model must report: default-domain opset, operator counts,
# parameters (initializer elements, BN statistics included).
EXPECTED = {
    "lenet-digits": {"opset": 13, "params": 3_658},
    "resnet50-synth": {"opset": 13, "params": 25_610_152,
                       "ops": {"Conv": 53, "BatchNormalization": 53, "Relu": 49, "Add": 16, "MaxPool": 1,
                               "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1}},
    "mobilenetv2-synth": {"opset": 13, "params": 3_538_986,
                          "ops": {"Conv": 52, "BatchNormalization": 52, "Clip": 35, "Add": 10,
                                  "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1}},
    "squeezenet-synth": {"opset": 13, "params": 1_235_496,
                         "ops": {"Conv": 26, "Relu": 26, "Concat": 8, "MaxPool": 3, "GlobalAveragePool": 1,
                                 "Flatten": 1}},
    "bert-synth": {"opset": 17, "params": 168_378,
                   "ops": {"Add": 22, "Cast": 1, "Div": 4, "Erf": 2, "Gather": 3, "LayerNormalization": 5,
                           "MatMul": 16, "Mul": 4, "Reshape": 8, "Softmax": 2, "Transpose": 8, "Unsqueeze": 1,
                           "Where": 1}},
    "minilm-synth": {"opset": 17, "params": 22_565_702,
                     "ops": {"Add": 62, "Cast": 1, "Div": 12, "Erf": 6, "Gather": 3, "LayerNormalization": 13,
                             "MatMul": 48, "Mul": 12, "Reshape": 24, "Softmax": 6, "Transpose": 24,
                             "Unsqueeze": 1, "Where": 1}},
}


def offline(name: str) -> bool:
    spec = REGISTRY[name]
    if isinstance(spec.source, (FileSource, GeneratorSource)):
        return True
    return (model_cache_dir() / f"{spec.sha256}.onnx").is_file()


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_offline_registry_model_checks_out(name):
    if not offline(name):
        pytest.skip(f"{name} is downloaded by URL and not in the cache")
    spec = REGISTRY[name]
    report = check.analyse(model_path(spec), registry_shapes=check.registry_input_shapes(name), label=name)
    assert report.ok, report.problems
    assert report.unsupported == []
    assert all(use.supported and use.rule.startswith("v") for use in report.ops)
    assert [(i.name, i.dtype, i.shape) for i in report.inputs] == [(t.name, t.dtype, list(t.shape))
                                                                    for t in spec.inputs]
    assert [(name_, dtype, shape) for name_, dtype, _, shape in report.outputs] == [
        (t.name, t.dtype, list(t.shape)) for t in spec.outputs]
    expected = EXPECTED.get(name)
    if expected:
        assert report.opset == expected["opset"]
        assert report.param_count == expected["params"]
        if "ops" in expected:
            assert {use.op: use.count for use in report.ops} == expected["ops"]
    # float32 weights: 4 bytes per parameter, give or take the int64 constants (shapes,
    # and the encoders' position / token-type ids: 2 x 128 of them in minilm-synth).
    assert abs(report.param_bytes - 4 * report.param_count) <= 8 * 512
    # Where the artifact was built, the size estimate is close to the real .wasm.
    built = DIST / name
    if (built / "manifest.json").is_file():
        manifest = artifact.load_manifest(built)
        real = manifest.files[f"{name}.wasm"].size
        assert abs(report.wasm_estimate - real) <= 0.15 * real, (report.wasm_estimate, real)
        assert abs(report.kernel_estimate - manifest.kernels) <= max(3, manifest.kernels // 4)


def test_unsupported_operators_are_reported(tmp_path):
    path = tmp_path / "unsupported.onnx"
    onnx.save(with_unsupported_ops(), path)
    report = check.analyse(path)
    # Celu has no TVM converter but an ONNX function body, which the build expands:
    # check gives the build's verdict, not the frontend's table.
    assert report.unsupported == ["Det"]
    assert {use.op: (use.count, use.supported, use.rule) for use in report.ops} == {
        "Celu": (1, True, "rewritten"), "Det": (1, False, "")}
    assert report.problems == ["operators the TVM frontend does not support: Det"]


def test_unsupported_operators_exit_2_naming_them(tmp_path):
    path = tmp_path / "unsupported.onnx"
    onnx.save(with_unsupported_ops(), path)
    code, out, err = invoke("check", "--onnx", str(path))
    assert_one_line_error(code, err, 2, "does not support: Det")
    assert "unsupported" in out and "Celu" in out and "Det" in out


def test_foreign_domain_operators_are_unsupported(tmp_path):
    model = two_outputs()
    model.graph.node[0].domain = "com.microsoft"
    model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    path = tmp_path / "contrib.onnx"
    onnx.save(model, path)
    report = check.analyse(path)
    assert report.unsupported == ["com.microsoft.Relu"]
    assert report.opsets == {"": 13, "com.microsoft": 1}


@pytest.fixture
def dynamic_model(tmp_path):
    model = tiny_cnn()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    path = tmp_path / "dyn.onnx"
    onnx.save(model, path)
    return path


def test_dynamic_dimension_needs_an_input_shape(dynamic_model):
    report = check.analyse(dynamic_model)
    (x,) = report.inputs
    assert (x.declared, x.shape) == (["N", 1, 8, 8], None)
    assert report.problems == ["input 'x' has dynamic dimensions ['N']; fix them with --input-shape x=Nx1x8x8"]

    fixed = check.analyse(dynamic_model, ("x=1x1x8x8",))
    assert fixed.ok, fixed.problems
    assert (fixed.inputs[0].shape, fixed.inputs[0].fixed_by) == ([1, 1, 8, 8], "--input-shape")
    assert fixed.outputs == [("y", "float32", ["N", 10], [1, 10])]


def test_minus_one_dimension_is_dynamic_not_an_error(tmp_path):
    """paddle2onnx writes a dynamic dimension as dim_value -1 (onnxruntime reads it so)."""
    model = tiny_cnn()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = -1
    path = tmp_path / "paddle.onnx"
    onnx.save(model, path)
    report = check.analyse(path)
    (x,) = report.inputs
    assert (x.declared, x.shape) == (["?", 1, 8, 8], None)
    assert report.problems == ["input 'x' has dynamic dimensions ['?']; fix them with --input-shape x=Nx1x8x8"]
    fixed = check.analyse(path, ("x=1x1x8x8",))
    assert fixed.ok, fixed.problems


def test_registry_shapes_fix_dynamic_dimensions(dynamic_model):
    report = check.analyse(dynamic_model, registry_shapes={"x": [1, 1, 8, 8]})
    assert report.ok and report.inputs[0].fixed_by == "models.toml"


def test_dynamic_dimension_cli(dynamic_model):
    code, out, err = invoke("check", "--onnx", str(dynamic_model))
    assert_one_line_error(code, err, 2, "--input-shape x=Nx1x8x8")
    assert "dynamic" in out


@pytest.mark.parametrize("spec, fragment", [
    (("y=1x1x8x8",), "--input-shape names no input of the model: y"),
    (("x=1x8x8",), "--input-shape x has 3 dimensions, the model's input has 4"),
])
def test_input_shape_mistakes_are_problems(dynamic_model, spec, fragment):
    report = check.analyse(dynamic_model, spec)
    assert any(fragment in problem for problem in report.problems), report.problems


@pytest.mark.parametrize("spec", ["x", "x=", "x=1xAx8x8", "=1x1", "x=0x1x8x8"])
def test_malformed_input_shape(dynamic_model, spec):
    with pytest.raises(UserError, match="bad --input-shape") as caught:
        check.analyse(dynamic_model, (spec,))
    assert caught.value.exit_code == 2


def test_missing_and_corrupt_files_are_one_line_errors(tmp_path):
    code, _, err = invoke("check", "--onnx", str(tmp_path / "missing.onnx"))
    assert_one_line_error(code, err, 2, "missing.onnx")
    for content in (b"", b"this is not protobuf \xff\xfe"):
        path = tmp_path / "corrupt.onnx"
        path.write_bytes(content)
        with pytest.raises(UserError, match="corrupt.onnx") as caught:
            check.analyse(path)
        assert caught.value.exit_code == 2


def test_needs_exactly_one_source():
    with pytest.raises(UserError, match="exactly one"):
        check.check()
    with pytest.raises(UserError, match="exactly one"):
        check.check(onnx="a.onnx", model="lenet-digits")


def test_model_by_name(capsys):
    report = check.check(model="lenet-digits")
    out = capsys.readouterr().out
    assert report.ok and "lenet-digits" in out and "Conv" in out and ".wasm" in out


def test_supported_ops_come_from_the_frontend():
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    supported = dict(check.supported_ops())
    assert {"Conv", "Clip", "Gather", "LayerNormalization", "Erf", "Softmax"} <= set(supported)
    # TVM's converters, plus the compiler's own for ops TVM lacks.
    assert set(supported) - set(_get_convert_map()) == {"CumProd"}
    assert "Det" not in supported and "Det" in check.unsupported_standard_ops()
    assert "FastGelu" not in supported  # a com.microsoft contrib op: refused by the build
    assert supported["ArgMax"] == [1, 11, 12]


def test_docs_supported_ops_is_the_generated_table():
    committed = (ROOT / "docs" / "supported-ops.md").read_text()
    assert committed == check.supported_ops_markdown(), (
        "docs/supported-ops.md is stale: invoke check --list-ops --markdown > docs/supported-ops.md")
    assert "invoke check --list-ops --markdown" in committed


def test_winograd_weights_count_in_the_size_estimate(tmp_path):
    """A 3x3 stride-1 conv with 8k in/out channels embeds (m+2)^2 values per filter
    (compiler/winograd.py): 16x16 on a 16x16 map is F(4x4) (+27 per filter), the
    stride-2 conv and the 3-channel one add nothing."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weights = {"W1": np.zeros([16, 3, 3, 3], np.float32), "W2": np.zeros([16, 16, 3, 3], np.float32),
               "W3": np.zeros([16, 16, 3, 3], np.float32)}
    nodes = [helper.make_node("Conv", ["x", "W1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["a", "W2"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["b", "W3"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])],
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    report = check.analyse(path)
    assert report.transformed_bytes == 16 * 16 * 4 * (36 - 9)
    assert report.wasm_estimate - report.param_bytes - report.transformed_bytes > 0
