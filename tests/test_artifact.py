"""SHA256SUMS, manifest checks and atomic publishing of dist/<name>/."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from wasmforge import artifact


def make_artifact(directory):
    directory.mkdir(parents=True)
    (directory / "m.wasm").write_bytes(b"\0asm\1\0\0\0")
    (directory / "reference" / "case0").mkdir(parents=True)
    (directory / "reference" / "case0" / "input0.npy").write_bytes(b"data")
    files = {n: {"sha256": artifact.sha256_file(directory / n), "size": 1}
             for n in artifact.artifact_files(directory)}
    (directory / "manifest.json").write_text(json.dumps({"wasm": "m.wasm", "files": files}))
    artifact.write_sums(directory)
    return directory


def test_sums_cover_every_file_and_sha256sum_accepts_them(tmp_path):
    directory = make_artifact(tmp_path / "a")
    names = artifact.verify_sums(directory)
    assert names == ["m.wasm", "manifest.json", "reference/case0/input0.npy"]
    if shutil.which("sha256sum"):
        subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=directory, check=True)


@pytest.mark.parametrize("name", ["m.wasm", "manifest.json", "reference/case0/input0.npy"])
def test_a_flipped_byte_is_named(tmp_path, name):
    directory = make_artifact(tmp_path / "a")
    path = directory / name
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(artifact.ArtifactError, match=name):
        artifact.verify_artifact(directory)


def test_extra_and_missing_files_are_refused(tmp_path):
    directory = make_artifact(tmp_path / "a")
    (directory / "intruder.bin").write_bytes(b"x")
    with pytest.raises(artifact.ArtifactError, match="intruder.bin is not listed"):
        artifact.verify_sums(directory)
    (directory / "intruder.bin").unlink()
    (directory / "m.wasm").unlink()
    with pytest.raises(artifact.ArtifactError, match="m.wasm is listed in SHA256SUMS but missing"):
        artifact.verify_sums(directory)


@pytest.mark.parametrize("line", ["nonsense", "abc  file", "0" * 64 + "  ../escape", "0" * 64 + "  /abs"])
def test_malformed_sums_are_refused(tmp_path, line):
    directory = make_artifact(tmp_path / "a")
    (directory / "SHA256SUMS").write_text(line + "\n")
    with pytest.raises(artifact.ArtifactError, match="malformed"):
        artifact.verify_sums(directory)


def test_missing_sums(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(artifact.ArtifactError, match="no SHA256SUMS"):
        artifact.verify_sums(tmp_path / "a")


def test_manifest_mismatch_is_caught_even_when_sums_were_rewritten(tmp_path):
    directory = make_artifact(tmp_path / "a")
    (directory / "m.wasm").write_bytes(b"\0asm\1\0\0\0 tampered")
    artifact.write_sums(directory)  # an attacker who only updates SHA256SUMS
    with pytest.raises(artifact.ArtifactError, match="m.wasm does not match its sha256 in manifest.json"):
        artifact.verify_artifact(directory)


def test_publish_replaces_atomically_and_keeps_nothing_else(tmp_path):
    dist = tmp_path / "dist"
    old = make_artifact(dist / "m")
    staging = artifact.staging_dir(dist, "m")
    (staging / "new.txt").write_text("new")
    artifact.publish(staging, old)
    assert sorted(p.name for p in dist.iterdir()) == ["m"]
    assert [p.name for p in (dist / "m").iterdir()] == ["new.txt"]
    assert oct((dist / "m").stat().st_mode & 0o777) == oct(0o755)


def test_publish_restores_previous_on_failure(tmp_path, monkeypatch):
    dist = tmp_path / "dist"
    old = make_artifact(dist / "m")
    real_rename = artifact.os.rename
    calls = []

    def failing_rename(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise OSError("disk on fire")
        real_rename(src, dst)

    monkeypatch.setattr(artifact.os, "rename", failing_rename)
    with pytest.raises(OSError):
        artifact.publish(artifact.staging_dir(dist, "m"), old)
    monkeypatch.setattr(artifact.os, "rename", real_rename)
    artifact.verify_sums(old)


def _params_manifest(params) -> dict:
    manifest = {"wasm": "m.wasm", "files": {"m.wasm": {"sha256": "a" * 64, "size": 8},
                                            "m.params.bin": {"sha256": "b" * 64, "size": 4}}}
    if params is not None:
        manifest["params"] = params
    return manifest


@pytest.mark.parametrize("params, expected", [
    (None, None),  # no key: embedded (manifests from before --external-params)
    ("embedded", None),
    ({"file": "m.params.bin", "sha256": "b" * 64, "size": 4}, "m.params.bin"),
])
def test_params_file(params, expected):
    assert artifact.params_file(_params_manifest(params)) == expected


@pytest.mark.parametrize("params, fragment", [
    ({"file": "other.params.bin", "sha256": "b" * 64}, "does not list"),
    ({"file": "../m.params.bin", "sha256": "b" * 64}, "does not list"),
    ({"sha256": "b" * 64}, "does not list"),
    ("external", "does not list"),
    ({"file": "m.params.bin", "sha256": "c" * 64}, "two different sha256"),
])
def test_bad_params_entries_are_refused(params, fragment):
    with pytest.raises(artifact.ArtifactError, match=fragment):
        artifact.params_file(_params_manifest(params))


def test_external_params_file_is_verified_like_every_file(tmp_path):
    directory = tmp_path / "a"
    directory.mkdir()
    (directory / "m.wasm").write_bytes(b"\0asm\1\0\0\0")
    (directory / "m.params.bin").write_bytes(b"weights")
    files = {n: {"sha256": artifact.sha256_file(directory / n), "size": (directory / n).stat().st_size}
             for n in artifact.artifact_files(directory)}
    manifest = {"wasm": "m.wasm", "files": files, "params": {"file": "m.params.bin", **files["m.params.bin"]}}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    artifact.write_sums(directory)
    assert "m.params.bin" in artifact.verify_sums(directory)
    assert artifact.params_file(artifact.verify_artifact(directory)) == "m.params.bin"
    (directory / "m.params.bin").write_bytes(b"weightz")
    with pytest.raises(artifact.ArtifactError, match=r"^m\.params\.bin does not match its sha256 in SHA256SUMS$"):
        artifact.verify_artifact(directory)
