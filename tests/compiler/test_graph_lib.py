"""ONNX -> plan + params + archive, checked by running the plan with native kernels."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.compiler.native_checks import assert_matches_onnxruntime, plan_and_native
from tests.onnx_models import tiny_cnn, two_outputs, with_unsupported_ops
from wasmforge.compiler import frontend

ROOT = Path(__file__).resolve().parents[2]

LENET = Path(__file__).resolve().parents[2] / "models" / "lenet-digits" / "lenet-digits.onnx"


def test_tiny_cnn_plan_runs_like_onnxruntime(tmp_path):
    plan = assert_matches_onnxruntime(tiny_cnn(), tmp_path / "tiny.onnx")
    assert plan["format"] == 1
    kinds = {t["kind"] for t in plan["tensors"]}
    assert kinds == {"input", "param", "storage", "view"}
    # BN was folded into the conv: no batch_norm kernel is left.
    assert not any("batch_norm" in c["kernel"] for c in plan["calls"])
    assert any(c["kernel"].startswith("fused_conv2d") for c in plan["calls"])


def test_params_are_aligned_and_within_blob():
    plan, params, _, _ = plan_and_native(tiny_cnn())
    assert plan["params_size"] == len(params)
    for t in plan["tensors"]:
        if t["kind"] == "param":
            assert t["offset"] % 64 == 0
            nbytes = int(np.prod(t["shape"])) * np.dtype(t["dtype"]).itemsize
            assert t["offset"] + nbytes <= len(params)


def test_several_outputs(tmp_path):
    plan = assert_matches_onnxruntime(two_outputs(), tmp_path / "two.onnx")
    assert [o["name"] for o in plan["outputs"]] == ["r", "m"]


@pytest.mark.skipif(not LENET.exists(), reason="lenet-digits not committed yet")
def test_lenet_digits_plan_runs_like_onnxruntime(tmp_path):
    assert_matches_onnxruntime(onnx.load(LENET), tmp_path / "lenet.onnx")


def test_unsupported_ops_are_listed_sorted():
    assert frontend.unsupported_ops(with_unsupported_ops()) == ["Celu", "Det"]


def run_main(tmp_path, onnx_path, capsys, *extra):
    """scripts/build_graph_lib.py, the graph step's command line, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_graph_lib.py"), "--onnx", str(onnx_path),
                           "--out", str(tmp_path / "out"), "--name", "m", *extra],
                          capture_output=True, text=True, env=env)
    return done.returncode, done


def test_main_reports_unsupported_ops_in_one_line(tmp_path, capsys):
    path = tmp_path / "bad.onnx"
    onnx.save(with_unsupported_ops(), path)
    code, out = run_main(tmp_path, path, capsys)
    assert code == 2
    # Celu has an ONNX function body, which prepare expands; Det has none.
    assert out.stderr.strip().splitlines() == [
        "error: bad.onnx uses ONNX operators the TVM frontend does not support: Det"]


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all \x00\xff", b"\x08\x07" * 10])
def test_main_refuses_non_onnx_files(tmp_path, capsys, content):
    path = tmp_path / "junk.onnx"
    path.write_bytes(content)
    code, out = run_main(tmp_path, path, capsys)
    assert code == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: junk.onnx")


def test_main_missing_file(tmp_path, capsys):
    code, out = run_main(tmp_path, tmp_path / "nope.onnx", capsys)
    assert code == 2 and "no such file" in out.stderr


def test_dynamic_input_needs_a_shape(tmp_path, capsys):
    model = tiny_cnn()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    path = tmp_path / "dyn.onnx"
    onnx.save(model, path)
    code, out = run_main(tmp_path, path, capsys)
    assert code == 2 and "--input-shape x=Nx1x8x8" in out.stderr
    code, out = run_main(tmp_path, path, capsys, "--input-shape", "x=1x1x8x8")
    assert code == 0, out.stderr


@pytest.mark.skipif(shutil.which("llvm-ar") is None, reason="needs llvm-ar")
def test_main_writes_archive_plan_params(tmp_path, capsys):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_cnn(), path)
    code, out = run_main(tmp_path, path, capsys)
    assert code == 0, out.stderr
    out_dir = tmp_path / "out"
    plan = json.loads((out_dir / "plan.json").read_text())
    assert plan["params_size"] == (out_dir / "params.bin").stat().st_size
    members = subprocess.run(["llvm-ar", "t", str(out_dir / "libgraph_wasm32.a")],
                             capture_output=True, text=True, check=True).stdout.split()
    assert members == ["kernels.o"]


def test_build_graph_describes_the_graph(tmp_path):
    from wasmforge.compiler.graph_lib import build_graph

    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_cnn(), path)
    try:
        info = build_graph(path, tmp_path, "m", {})
    except FileNotFoundError:  # llvm-ar
        pytest.skip("needs llvm-ar")
    assert info["versions"]["tvm"].startswith("0.27")
    assert info["target"]["mtriple"] == "wasm32-unknown-unknown"
    assert [i["name"] for i in info["inputs"]] == ["x"]
    assert info["params_size"] == (tmp_path / "params.bin").stat().st_size


@pytest.mark.parametrize("features, mattr", [("simd128", ["+simd128"]),
                                             ("relaxed-simd", ["+simd128", "+relaxed-simd"])])
def test_features_choose_the_kernels_simd(tmp_path, features, mattr):
    """`invoke build --features`: TVM's mattr, and the kernel object's own feature list."""
    from wasmforge.compiler.graph_lib import build_graph

    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_cnn(), path)
    try:
        info = build_graph(path, tmp_path, "m", {}, features=features)
    except FileNotFoundError:  # llvm-ar
        pytest.skip("needs llvm-ar")
    assert info["target"]["mattr"] == mattr
    # wasm-ld's target_features section of kernels.o names what the code uses.
    archive = (tmp_path / "libgraph_wasm32.a").read_bytes()
    assert b"simd128" in archive and (b"relaxed-simd" in archive) == (features == "relaxed-simd")
