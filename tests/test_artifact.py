"""SHA256SUMS, manifest checks and atomic publishing of dist/<name>/."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
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
    # The fallback of file systems that cannot exchange two directories.
    dist = tmp_path / "dist"
    old = make_artifact(dist / "m")
    monkeypatch.setattr(artifact, "_exchange", lambda a, b: False)
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


# --- publish under faults -------------------------------------------------------------
#
# publish's steps are calls of three primitives: the exchange, a rename, a tree
# removal. Each test below strikes at every step (before it, after it, or for a
# removal halfway through) and checks what a user sees in dist/: `m/` present
# and whole (the old or the new artifact, never a mix), and after the next
# build's clean-up nothing else.

PUBLISH_DRIVER = r"""
import os, signal, sys
from pathlib import Path
from wasmforge import artifact

dist, exchange, step, when, sig = Path(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3]), sys.argv[4], sys.argv[5]
calls = []
REMOVE = artifact.shutil.rmtree

def strike():
    if sig == "raise":
        raise OSError(28, "No space left on device")
    os.kill(os.getpid(), getattr(signal, sig))

def wrap(real):
    def primitive(*args, **kwargs):
        calls.append(real)
        hit = len(calls) == step
        if hit and when == "midway" and real is not REMOVE:
            when_here = "before"  # only a removal has a midway
        else:
            when_here = when
        if hit and when_here == "before":
            strike()
        if hit and when_here == "midway":  # a removal that got through part of the tree
            victim = next(p for p in sorted(Path(args[0]).rglob("*")) if p.is_file())
            victim.unlink()
            strike()
        result = real(*args, **kwargs)
        if hit and when == "after":
            strike()
        return result
    return primitive

artifact._exchange = wrap(artifact._exchange if exchange else (lambda a, b: False))
artifact.os.rename = wrap(os.rename)
artifact.shutil.rmtree = wrap(artifact.shutil.rmtree)
artifact.publish(Path(sys.argv[6]), dist / "m")
print(len(calls))
"""


def _old_and_new(tmp_path):
    dist = tmp_path / "dist"
    make_artifact(dist / "m")
    staging = artifact.staging_dir(dist, "m")
    (staging / "m.wasm").write_bytes(b"\0asm\1\0\0\0new")
    (staging / "extra.bin").write_bytes(b"only in the new one")
    seal(staging)
    old_sums = (dist / "m" / artifact.SUMS_NAME).read_bytes()
    new_sums = (staging / artifact.SUMS_NAME).read_bytes()
    return dist, staging, {old_sums: "old", new_sums: "new"}


def _drive(dist, staging, exchange, step, when, sig) -> subprocess.CompletedProcess:
    import sys

    from wasmforge.paths import ROOT

    return subprocess.run([sys.executable, "-c", PUBLISH_DRIVER, str(dist), "1" if exchange else "0",
                           str(step), when, sig, str(staging)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def _which(dist, versions) -> str:
    """'old' or 'new': which whole artifact dist/m is (fails on a mix or a missing one)."""
    artifact.verify_sums(dist / "m")
    return versions[(dist / "m" / artifact.SUMS_NAME).read_bytes()]


def _steps(tmp_path, exchange) -> int:
    dist, staging, _ = _old_and_new(tmp_path / "count")
    done = _drive(dist, staging, exchange, 0, "after", "raise")
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_publish_takes_few_steps(tmp_path, exchange):
    # The exchange: exchange + removal of the old one; the fallback: the
    # exchange refused, two renames, the removal.
    assert _steps(tmp_path, exchange) == (2 if exchange else 4)


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM", "SIGINT", "raise"])
@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_publish_struck_at_every_step_leaves_a_whole_artifact(tmp_path, exchange, sig):
    from rich.console import Console

    from wasmforge import buildlock

    steps = _steps(tmp_path, exchange)
    seen = []
    for step in range(1, steps + 1):
        for when in ("before", "midway", "after"):
            where = tmp_path / f"{step}-{when}"
            dist, staging, versions = _old_and_new(where)
            done = _drive(dist, staging, exchange, step, when, sig)
            assert "Traceback" not in done.stderr or sig in ("raise", "SIGINT"), done.stderr
            # Fallback steps: 1 exchange refused, 2 old aside, 3 new in place, 4 old removed.
            killed_between_renames = (not exchange and sig == "SIGKILL"
                                      and (step, when) in {(2, "after"), (3, "before"), (3, "midway")})
            if killed_between_renames:
                # The one gap of the fallback: SIGKILL cannot be deferred. The next build restores.
                assert not (dist / "m").exists()
            else:
                seen.append(_which(dist, versions))
            buildlock.clean_leftovers(dist, "m", Console(stderr=True))
            assert [p.name for p in dist.iterdir()] == ["m"], (step, when)
            state = _which(dist, versions)
            assert state == ("new" if done.returncode == 0 else state)
    if sig != "SIGINT":  # (Python acts on SIGINT at its next check, which may be past the swap)
        assert set(seen) == {"old", "new"}  # the strikes fell on both sides of the swap


def test_sigint_between_the_two_renames_is_deferred_until_the_new_artifact_is_in_place(tmp_path, monkeypatch):
    dist, staging, versions = _old_and_new(tmp_path)
    real_rename = os.rename
    calls = []

    def rename(src, dst):
        real_rename(src, dst)
        calls.append(src)
        if len(calls) == 1:  # the old one is aside, the new one not yet in place
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(artifact, "_exchange", lambda a, b: False)
    monkeypatch.setattr(artifact.os, "rename", rename)
    saved = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own: KeyboardInterrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            artifact.publish(staging, dist / "m")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, saved)
    monkeypatch.undo()
    assert len(calls) == 2
    assert _which(dist, versions) == "new"


def test_a_reader_never_finds_dist_m_or_a_file_of_it_missing(tmp_path):
    # Path lookups, as a user's `ls dist/m` or `sha256sum -c` make them one by
    # one. (A reader that opened the old directory before the swap sees it
    # emptied as it is removed: that is the previous version going away.)
    import threading

    dist = tmp_path / "dist"
    make_artifact(dist / "m")
    paths = [dist / "m" / name for name in [*artifact.artifact_files(dist / "m"), artifact.SUMS_NAME]]
    stop, missing, looks = threading.Event(), [], [0]

    def reader():
        while not stop.is_set():
            looks[0] += 1
            missing.extend(str(p) for p in paths if not p.is_file())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(200):
            staging = artifact.staging_dir(dist, "m")
            shutil.copytree(dist / "m", staging, dirs_exist_ok=True)
            artifact.publish(staging, dist / "m")
    finally:
        stop.set()
        thread.join()
    assert looks[0] > 50
    assert not missing, missing[:3]
