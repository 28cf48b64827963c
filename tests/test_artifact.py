"""SHA256SUMS, manifest checks and atomic publishing of dist/<name>/."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess

import pytest

from tests.manifests import manifest_dict, seal
from wasmforge import artifact
from wasmforge.artifact import Manifest
from wasmforge.paths import DIST


def make_artifact(directory):
    directory.mkdir(parents=True)
    (directory / "m.wasm").write_bytes(b"\0asm\1\0\0\0")
    (directory / "reference" / "case0").mkdir(parents=True)
    (directory / "reference" / "case0" / "input0.npy").write_bytes(b"data")
    seal(directory)
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


FILES = {"m.wasm": {"sha256": "a" * 64, "size": 8}, "m.params.bin": {"sha256": "b" * 64, "size": 4}}


def _params_manifest(params) -> dict:
    manifest = manifest_dict(copy.deepcopy(FILES))
    if params is not None:
        manifest["params"] = params
    return manifest


@pytest.mark.parametrize("params, expected", [
    (None, None),  # no key: embedded (manifests from before --external-params)
    ("embedded", None),
    ({"file": "m.params.bin", "sha256": "b" * 64, "size": 4}, "m.params.bin"),
])
def test_params_file(params, expected):
    assert Manifest.from_dict(_params_manifest(params)).params_file == expected


@pytest.mark.parametrize("params, fragment", [
    ({"file": "other.params.bin", "sha256": "b" * 64, "size": 4}, "does not list"),
    ({"file": "../m.params.bin", "sha256": "b" * 64, "size": 4}, "does not list"),
    ({"sha256": "b" * 64}, "does not list"),
    ("external", "does not list"),
    ({"file": "m.params.bin", "sha256": "c" * 64, "size": 4}, "two different sha256"),
])
def test_bad_params_entries_are_refused(params, fragment):
    with pytest.raises(artifact.ArtifactError, match=fragment):
        Manifest.from_dict(_params_manifest(params))


def test_external_params_file_is_verified_like_every_file(tmp_path):
    directory = tmp_path / "a"
    directory.mkdir()
    (directory / "m.wasm").write_bytes(b"\0asm\1\0\0\0")
    (directory / "m.params.bin").write_bytes(b"weights")
    record = artifact.FileRecord.of(directory / "m.params.bin")
    seal(directory, params={"file": "m.params.bin", **record.to_dict()})
    assert "m.params.bin" in artifact.verify_sums(directory)
    assert artifact.verify_artifact(directory).params_file == "m.params.bin"
    (directory / "m.params.bin").write_bytes(b"weightz")
    with pytest.raises(artifact.ArtifactError, match=r"^m\.params\.bin does not match its sha256 in SHA256SUMS$"):
        artifact.verify_artifact(directory)


# --- Manifest: validation and a byte-identical round trip ---------------------------


@pytest.mark.parametrize("change, fragment", [
    (lambda m: m.pop("reference"), "no valid reference.cases"),
    (lambda m: m["reference"].update(cases=0), "records no reference cases"),
    (lambda m: m["reference"].update(relative_tolerance="1e-3"), "no valid reference.relative_tolerance"),
    (lambda m: m["reference"].update(cases=True), "no valid reference.cases"),
    (lambda m: m.update(wasm="../../bin/sh"), "does not list"),
    (lambda m: m.update(params={"file": "../../etc/passwd", "sha256": "0" * 64, "size": 1}), "does not list"),
    (lambda m: m.pop("name"), "no valid name"),
    (lambda m: m.update(format=2), "format 2"),
    (lambda m: m.update(build_seconds=12.5), "unknown key build_seconds"),
    (lambda m: m["inputs"][0].update(shape=[1, "8"]), "no valid inputs[0].shape"),
    (lambda m: m["source"].pop("registry"), "source.registry or source.file"),
    (lambda m: m["files"]["m.wasm"].update(sha256="x"), "no valid files.m.wasm.sha256"),
    (lambda m: m["files"].update({"../x": {"sha256": "a" * 64, "size": 1}}), "outside the artifact"),
    (lambda m: m.update(frozen={"x": {"value": 1, "sha256": "a" * 64}}), "no valid frozen.x"),
    (lambda m: m.update(features="avx2"), "no valid features"),
    (lambda m: m.update(features="relaxed-simd"), "no valid features"),  # the default is never written
    (lambda m: m.update(preprocessing=["x / 16"]), "no valid preprocessing"),
])
def test_incomplete_or_malformed_manifest_is_refused(change, fragment):
    data = manifest_dict(copy.deepcopy(FILES))
    assert Manifest.from_dict(data).reference.cases == 3
    change(data)
    with pytest.raises(artifact.ArtifactError, match=re.escape(fragment)):
        Manifest.from_dict(data)


def test_a_manifest_that_is_not_json_is_one_error(tmp_path):
    (tmp_path / "manifest.json").write_text("{nope")
    with pytest.raises(artifact.ArtifactError, match="not valid JSON"):
        Manifest.read(tmp_path)
    with pytest.raises(artifact.ArtifactError, match="has no manifest.json"):
        Manifest.read(tmp_path / "missing")


@pytest.mark.parametrize("extra", [
    {},
    {"params": {"file": "m.params.bin", "sha256": "b" * 64, "size": 4}},
    {"frozen": {"mask": {"value": 1}, "scale": {"value": 0.5}, "x": {"sha256": "e" * 64}}},
    {"tuning": {"database": "tuning/m/wasm32-simd128", "sha256": "f" * 64}},
    {"source": {"file": "mine.onnx", "sha256": "d" * 64}},
    {"features": "simd128", "preprocessing": "8x8 digit; input = pixel / 16"},
])
def test_manifest_round_trips_byte_for_byte(tmp_path, extra):
    data = manifest_dict(copy.deepcopy(FILES), **extra)
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    (tmp_path / "manifest.json").write_text(text)
    manifest = Manifest.read(tmp_path)
    assert manifest.to_json() == text
    assert Manifest.from_json(manifest.to_json()) == manifest
    manifest.write(tmp_path)
    assert (tmp_path / "manifest.json").read_text() == text


@pytest.mark.skipif(not (DIST / "lenet-digits" / "manifest.json").is_file(), reason="no dist/lenet-digits built")
def test_a_real_manifest_round_trips_byte_for_byte():
    """The build writes manifests through Manifest; one read back must write the very same bytes."""
    text = (DIST / "lenet-digits" / "manifest.json").read_bytes()
    assert Manifest.from_json(text.decode()).to_json().encode() == text


def test_features_default_to_relaxed_simd_and_match_the_compiler():
    from wasmforge.compiler.request import DEFAULT_FEATURES, FEATURES

    assert set(artifact.KNOWN_FEATURES) == set(FEATURES) and artifact.DEFAULT_FEATURES == DEFAULT_FEATURES
    plain = Manifest.from_dict(manifest_dict(copy.deepcopy(FILES)))
    assert (plain.features, plain.feature_set, plain.preprocessing) == (None, "relaxed-simd", None)
    portable = Manifest.from_dict(manifest_dict(copy.deepcopy(FILES), features="simd128"))
    assert portable.feature_set == "simd128"
