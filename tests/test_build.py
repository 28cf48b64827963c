"""`invoke build` on bad input: one `error:` line, the right exit code, nothing written.

(Builds in Docker: tests/e2e/test_build.py.)"""

from __future__ import annotations

import errno
import io
import os

import numpy as np
import pytest

from tests.cli import LENET_ONNX, assert_one_line_error, dist_listing, invoke
from wasmforge.errors import UserError
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


# --- a full disk while finishing a build ------------------------------------------------


def _graph_info() -> dict:
    return {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "dtype": "float32"}],
            "outputs": [{"name": "logits", "shape": [1, 10], "dtype": "float32"}],
            "target": {"kind": "llvm", "mtriple": "wasm32-unknown-unknown"},
            "versions": {"tvm": "0.27.0.post1"}, "kernels": 7, "calls": 7, "params_size": 14696}


def _finish_with(tmp_path, dist, monkeypatch, result=None):
    """build._finish on lenet-digits with the builder's part faked: the .wasm is not run."""
    from types import SimpleNamespace

    from rich.console import Console

    from wasmforge import artifact, build
    from wasmforge.compiler.request import JobResult
    from wasmforge.source import resolve_source

    monkeypatch.setattr(build, "check_against_reference", lambda *a, **k: None)
    source = resolve_source(None, str(LENET_ONNX), "m")
    staging = artifact.staging_dir(dist, "m")
    (staging / "m.wasm").write_bytes(b"\0asm\1\0\0\0")
    builder = SimpleNamespace(labels={"io.wasmforge.rustc": "1.85"})
    result = result or JobResult("m", graph=_graph_info())
    build._finish(source, result, staging, dist, builder, Console(file=io.StringIO()), False, None)
    return staging


def _old_artifact(dist):
    from tests.manifests import seal

    old = dist / "m"
    old.mkdir(parents=True)
    (old / "m.wasm").write_bytes(b"\0asm\1\0\0\0old")
    seal(old)
    return {p.relative_to(old): p.read_bytes() for p in old.rglob("*") if p.is_file()}


def _assert_one_disk_line(info, fragment):
    message = str(info.value)
    assert "\n" not in message and info.value.exit_code == 1
    assert message.startswith("no space left on device writing ") and fragment in message, message
    assert message.endswith("; dist/m is unchanged") or message.endswith("/dist/m is unchanged"), message


ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["reference", "manifest", "sums", "publish", "builder"])
def test_a_full_disk_at_each_write_is_one_line_and_loses_nothing(tmp_path, monkeypatch, where):
    import pathlib

    from wasmforge import artifact, build
    from wasmforge.compiler.request import JobResult

    dist = tmp_path / "dist"
    old = _old_artifact(dist)
    result = None
    if where == "reference":
        real_save, saved = np.save, []

        def save(path, *args, **kwargs):
            saved.append(path)
            if len(saved) == 3:
                raise ENOSPC
            real_save(path, *args, **kwargs)

        monkeypatch.setattr(build.np, "save", save)
    elif where in ("manifest", "sums"):
        real_write = pathlib.Path.write_text
        target = "manifest.json" if where == "manifest" else "SHA256SUMS"

        def write_text(self, *args, **kwargs):
            if self.name == target:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
            return real_write(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    elif where == "publish":
        def exchange(first, second):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(first), None, str(second))

        monkeypatch.setattr(artifact, "_exchange", exchange)
    else:  # the builder's own write into the staging directory
        result = JobResult("m", error="internal error: [Errno 28] No space left on device: '/out/0/m.wasm'",
                           exit_code=1, stage="internal")
    with pytest.raises(UserError) as info:
        _finish_with(tmp_path, dist, monkeypatch, result)
    _assert_one_disk_line(info, {"manifest": "manifest.json", "sums": "SHA256SUMS"}.get(where, ".staging-m-"))
    monkeypatch.undo()
    assert [p.name for p in dist.iterdir()] == ["m"]  # the half-written staging directory is gone
    assert {p.relative_to(dist / "m"): p.read_bytes() for p in (dist / "m").rglob("*") if p.is_file()} == old


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 512 KiB tmpfs (root only; skipped elsewhere)."""
    import subprocess

    mount = tmp_path / "fs"
    mount.mkdir()
    if os.getuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
                                          capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_really_full_disk_is_one_line_and_loses_nothing(small_tmpfs, tmp_path, monkeypatch):
    dist = small_tmpfs / "dist"
    old = _old_artifact(dist)
    with open(small_tmpfs / "filler", "wb", buffering=0) as filler:  # fill it, then leave 12 KiB
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError:
            pass
    os.truncate(small_tmpfs / "filler", (small_tmpfs / "filler").stat().st_size - 3 * 4096)
    with pytest.raises(UserError) as info:
        _finish_with(tmp_path, dist, monkeypatch)
    assert str(info.value).startswith(f"no space left on device writing {dist}/.staging-m-"), str(info.value)
    assert str(info.value).endswith(f"; {dist}/m is unchanged")
    assert sorted(p.name for p in dist.iterdir()) == ["m"]
    assert {p.relative_to(dist / "m"): p.read_bytes() for p in (dist / "m").rglob("*") if p.is_file()} == old
