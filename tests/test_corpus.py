"""The real-model corpus (wasmforge/resources/corpus.toml, wasmforge/corpus.py).

Unit tests: a tiny fake wheel served to pip from a local directory (--no-index
--find-links), no network. tests/e2e/test_corpus.py builds the real models.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from wasmforge import corpus
from wasmforge.errors import UserError

MODEL_BYTES = b"not really onnx, but bytes are bytes\n" * 100
MODEL_SHA256 = hashlib.sha256(MODEL_BYTES).hexdigest()


def make_wheel(directory: Path, package="fakepkg", version="1.0", members=None) -> Path:
    """A minimal valid wheel holding `members` (path -> bytes)."""
    dist = package.replace("-", "_")
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    members = members if members is not None else {f"{dist}/models/tiny.onnx": MODEL_BYTES}
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{dist}/__init__.py", "")
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                          "Tag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_corpus(path: Path, wheel: Path, *, model_sha=MODEL_SHA256, size=len(MODEL_BYTES),
                 member="fakepkg/models/tiny.onnx", extra="") -> Path:
    path.write_text(f"""
[wheel.fake]
package = "fakepkg"
version = "1.0"
file = "{wheel.name}"
sha256 = "{sha(wheel)}"
license = "MIT"

[model.tiny]
wheel = "fake"
path = "{member}"
sha256 = "{model_sha}"
size = {size}
domain = "vision"
input_shapes = ["x=1x3x8x8"]
freeze = ["sr=16000"]
{extra}
""")
    return path


@pytest.fixture
def served(tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    return links, make_wheel(links)


def test_fetch_extracts_and_verifies(tmp_path, served):
    links, wheel = served
    entries = corpus.load_corpus(write_corpus(tmp_path / "c.toml", wheel)).select()
    root = tmp_path / "cache"
    got = corpus.fetch(entries, root=root, find_links=str(links), no_index=True)
    assert got["tiny"] == root / "tiny" / "tiny.onnx"
    assert got["tiny"].read_bytes() == MODEL_BYTES
    assert (root / "wheels" / wheel.name).is_file()
    assert not [p for p in root.rglob("*") if p.name.startswith((".part-", "download-"))]


def test_cached_model_needs_no_pip(tmp_path, served):
    links, wheel = served
    entries = corpus.load_corpus(write_corpus(tmp_path / "c.toml", wheel)).select()
    root = tmp_path / "cache"
    corpus.fetch(entries, root=root, find_links=str(links), no_index=True)
    wheel.unlink()  # nothing to download from any more
    (root / "wheels" / wheel.name).unlink()
    assert corpus.fetch(entries, root=root, no_index=True)["tiny"].read_bytes() == MODEL_BYTES


def test_damaged_model_is_extracted_again_from_the_cached_wheel(tmp_path, served):
    links, wheel = served
    entries = corpus.load_corpus(write_corpus(tmp_path / "c.toml", wheel)).select()
    root = tmp_path / "cache"
    path = corpus.fetch(entries, root=root, find_links=str(links), no_index=True)["tiny"]
    path.write_bytes(b"damaged")
    wheel.unlink()
    assert corpus.fetch(entries, root=root, no_index=True)["tiny"].read_bytes() == MODEL_BYTES


def test_wrong_wheel_hash_is_refused_by_pip(tmp_path, served):
    links, wheel = served
    toml = write_corpus(tmp_path / "c.toml", wheel)
    toml.write_text(toml.read_text().replace(sha(wheel), "0" * 64))
    entries = corpus.load_corpus(toml).select()
    with pytest.raises(corpus.CorpusFetchError, match="cannot fetch fakepkg==1.0") as info:
        corpus.fetch(entries, root=tmp_path / "cache", find_links=str(links), no_index=True)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "cache" / "wheels" / wheel.name).exists()


def test_wrong_model_hash_leaves_nothing(tmp_path, served):
    links, wheel = served
    entries = corpus.load_corpus(write_corpus(tmp_path / "c.toml", wheel, model_sha="1" * 64)).select()
    with pytest.raises(UserError, match="sha256 mismatch for fakepkg/models/tiny.onnx"):
        corpus.fetch(entries, root=tmp_path / "cache", find_links=str(links), no_index=True)
    assert list((tmp_path / "cache" / "tiny").iterdir()) == []


def test_wrong_size_and_missing_member(tmp_path, served):
    links, wheel = served
    entries = corpus.load_corpus(write_corpus(tmp_path / "c.toml", wheel, size=5)).select()
    with pytest.raises(UserError, match="the corpus says 5"):
        corpus.fetch(entries, root=tmp_path / "cache", find_links=str(links), no_index=True)
    entries = corpus.load_corpus(write_corpus(tmp_path / "c.toml", wheel, member="fakepkg/other.onnx")).select()
    with pytest.raises(UserError, match="has no fakepkg/other.onnx"):
        corpus.fetch(entries, root=tmp_path / "cache", find_links=str(links), no_index=True)


def test_unreachable_index_is_one_error_line(tmp_path, served):
    _, wheel = served
    entries = corpus.load_corpus(write_corpus(tmp_path / "c.toml", wheel)).select()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(corpus.CorpusFetchError) as info:
        corpus.fetch(entries, root=tmp_path / "cache", find_links=str(empty), no_index=True)
    message = str(info.value)
    assert message.startswith("cannot fetch fakepkg==1.0 from PyPI: ERROR:")
    assert "\n" not in message


def test_pip_reason_names_the_network_error():
    output = ("Looking in indexes: https://pypi.org/simple\n"
              "WARNING: Retrying (Retry(total=0)) after connection broken by 'NewConnectionError('<x>: "
              "Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')': "
              "/simple/magika/\n"
              "ERROR: Could not find a version that satisfies the requirement magika==1.0.3\n"
              "ERROR: No matching distribution found for magika==1.0.3\n")
    assert corpus._pip_reason(output) == (
        "ERROR: No matching distribution found for magika==1.0.3 (network: Failed to establish a new "
        "connection: [Errno -3] Temporary failure in name resolution)")
    assert corpus._pip_reason("") == "pip failed without output"


def test_entry_fields_and_build_command(tmp_path, served):
    _, wheel = served
    toml = write_corpus(tmp_path / "c.toml", wheel, extra='expected_failure = "If on sr"')
    (entry,) = corpus.load_corpus(toml).select()
    assert entry.input_shapes == ("x=1x3x8x8",) and entry.freeze == ("sr=16000",)
    assert entry.license == "MIT" and entry.expected_failure == "If on sr"
    assert entry.build_command(tmp_path) == (f"invoke build --onnx {tmp_path}/tiny/tiny.onnx --name corpus-tiny "
                                             "--input-shape x=1x3x8x8 --freeze sr=16000")


def test_sources_are_those_of_invoke_build(tmp_path):
    onnx = tmp_path / "tiny.onnx"
    onnx.write_bytes(MODEL_BYTES)
    wheel = corpus.Wheel("w", "p", "1", "p-1-py3-none-any.whl", "0" * 64)
    entry = corpus.Entry("tiny", wheel, "p/tiny.onnx", MODEL_SHA256, len(MODEL_BYTES), "audio",
                         ("x=1x512",), ("sr=16000",))
    (source,) = corpus.sources([entry], {"tiny": onnx})
    assert source.name == "corpus-tiny"
    assert source.input_shapes == {"x": [1, 512]}
    assert source.frozen == {"sr": {"value": 16000.0}}
    assert source.description == {"file": "tiny.onnx", "sha256": MODEL_SHA256}


@pytest.mark.parametrize("change, message", [
    (("domain = \"vision\"", "domain = \"video\""), "domain must be one of"),
    (("wheel = \"fake\"", "wheel = \"nope\""), r"no \[wheel.nope\]"),
    (("path = \"fakepkg/models/tiny.onnx\"", "path = \"../x.onnx\""), "relative .onnx path"),
    (("size = 3700", "size = -1"), "size must be a positive integer"),
    (("sha256 = \"" + MODEL_SHA256, "sha256 = \"XYZ"), "sha256 must be 64 lowercase hex"),
    (("[model.tiny]", "[model.tiny]\ncolour = 1"), "unknown key 'colour'"),
    (("[model.tiny]", "[model.\"bad name!\"]"), "bad name"),
])
def test_bad_corpus_file_is_one_error(tmp_path, served, change, message):
    _, wheel = served
    toml = write_corpus(tmp_path / "c.toml", wheel)
    text = toml.read_text()
    assert change[0] in text
    toml.write_text(text.replace(change[0], change[1], 1))
    with pytest.raises(UserError, match=message):
        corpus.load_corpus(toml)


def test_the_real_corpus_file():
    """wasmforge/resources/corpus.toml: at least 10 models, every domain, each pinned."""
    real = corpus.load_corpus()
    entries = real.select()
    assert len(entries) >= 10
    assert len([e for e in entries if not e.expected_failure]) >= 5
    assert {e.domain for e in entries} == set(corpus.DOMAINS)
    assert all(e.wheel.file.startswith(e.wheel.package.replace("-", "_")) for e in entries)
    with pytest.raises(UserError, match="no corpus model named 'nope'"):
        real.select(["nope"])


def test_two_versions_of_one_package_go_to_separate_pip_calls():
    real = {e.wheel.key: e.wheel for e in corpus.load_corpus().select()}
    batches = corpus._one_version_per_package(list(real.values()))
    assert sum(len(b) for b in batches) == len(real)
    for batch in batches:
        assert len({w.package for w in batch}) == len(batch)
    packages = [w.package for w in real.values()]
    assert len(batches) == max(packages.count(p) for p in packages)
