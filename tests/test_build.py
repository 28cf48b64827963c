"""`invoke build` on bad input: one `error:` line, the right exit code, nothing written.

(Builds in Docker: tests/e2e/test_build.py.)"""

from __future__ import annotations

import pytest

from tests.cli import LENET_ONNX, assert_one_line_error, dist_listing, invoke
from wasmforge.paths import ROOT


def test_unknown_model_name():
    before = dist_listing()
    code, _, err = invoke("build", "--model", "no-such-model")
    assert_one_line_error(code, err, 2, "no-such-model")
    assert dist_listing() == before


def test_missing_onnx_file(tmp_path):
    before = dist_listing()
    code, _, err = invoke("build", "--onnx", str(tmp_path / "missing.onnx"))
    assert_one_line_error(code, err, 2, "missing.onnx")
    assert dist_listing() == before


@pytest.mark.parametrize("content", [b"this is not protobuf \xff\xfe", b""])
def test_corrupt_onnx_file(tmp_path, content):
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(content)
    before = dist_listing()
    code, _, err = invoke("build", "--onnx", str(path))
    assert_one_line_error(code, err, 2, "corrupt.onnx")
    assert dist_listing() == before


def test_bad_artifact_name(tmp_path):
    code, _, err = invoke("build", "--onnx", str(LENET_ONNX), "--name", "../escape")
    assert code == 2 and "error:" in err
    assert not (ROOT / "escape").exists()


def test_docker_daemon_not_reachable(tmp_path):
    before = dist_listing()
    code, _, err = invoke("build", "--model", "lenet-digits",
                          env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    assert_one_line_error(code, err, 1, "Docker daemon not reachable")
    assert dist_listing() == before
