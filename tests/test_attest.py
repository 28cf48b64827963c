"""dist/<name>.attestations/: the CycloneDX SBOM and the in-toto SLSA provenance statement."""

from __future__ import annotations

import base64
import json
import shutil
from datetime import UTC, datetime, timedelta
import os
from types import SimpleNamespace

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from tests.manifests import seal
from wasmforge import artifact, attest, checkout, images
from wasmforge.paths import ROOT

STARTED = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
FINISHED = STARTED + timedelta(seconds=75)
COMMAND = ["invoke", "build", "--model", "m"]
DPKG = (b"libc6\t2.41-12+deb13u5\tamd64\n" b"llvm-19\t1:19.1.7-3+b1\tamd64\n"
        b"rustc\t1.85.1+dfsg1-1+deb13u1\tamd64\n" b"tzdata\t2025b-4\tall\n")


class FakeContainer:
    """A container that prints the dpkg listing and exits 0; records its removal."""

    def __init__(self, client):
        self.client, self.attrs = client, {"State": {"OOMKilled": False}}

    def start(self):
        pass

    def logs(self, **_):
        return iter([DPKG])

    def wait(self):
        return {"StatusCode": 0}

    def reload(self):
        pass

    def remove(self, force=False):
        self.client.removed += 1


class FakeClient:
    """Just what attest uses of docker-py: containers.create, images.get, version."""

    def __init__(self, fail=False):
        self.runs, self.fail, self.removed = [], fail, 0
        self.containers = SimpleNamespace(create=self._create)
        self.images = SimpleNamespace(get=lambda ref: fake_image("sha256:" + "b" * 64, ref))

    def _create(self, image, command, **kwargs):
        self.runs.append((image, command, kwargs))
        return FakeContainer(self)

    def version(self):  # called on every run (the dpkg listing may come from the cache)
        if self.fail:
            raise RuntimeError("docker went away")
        return {"Version": "20.10.24"}


def fake_image(image_id, tag):
    return SimpleNamespace(id=image_id, tags=[tag], labels={
        "org.opencontainers.image.base.name": "wasmforge/base:trixie-test"},
        attrs={"RootFS": {"Layers": ["sha256:" + "c" * 64]}, "RepoDigests": []})


BUILDER = fake_image("sha256:" + "a" * 64, "wasmforge/builder:test")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(attest, "CACHE", tmp_path / "cache")


def make_artifact(directory, wasm=b"\0asm\1\0\0\0"):
    directory.mkdir(parents=True)
    (directory / "m.wasm").write_bytes(wasm)
    (directory / "reference" / "case0").mkdir(parents=True)
    (directory / "reference" / "case0" / "input0.npy").write_bytes(b"data")
    seal(directory)  # name m, source: the registry's m with sha256 d...d
    return directory


def attest_(directory, client=None):
    return attest.write_attestations(directory, client=client or FakeClient(), builder_image=BUILDER,
                                     command=COMMAND, started=STARTED, finished=FINISHED)


def components(sbom):
    return {c["bom-ref"]: c for c in sbom["components"]}


def test_sbom_validates_and_lists_the_build_inputs(tmp_path):
    out = attest_(make_artifact(tmp_path / "dist" / "m"))
    assert out == tmp_path / "dist" / "m.attestations"
    text = (out / attest.SBOM_NAME).read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    sbom = json.loads(text)
    by_ref = components(sbom)

    wasm = sbom["metadata"]["component"]
    assert wasm["name"] == "m.wasm"
    assert wasm["hashes"] == [{"alg": "SHA-256", "content": artifact.sha256_file(out.parent / "m" / "m.wasm")}]
    # The pinned TVM of the builder lock, with every wheel hash the lock allows.
    tvm_version = images.lock_versions(ROOT / "requirements" / "builder.txt")["apache-tvm"]
    tvm = by_ref[f"pkg:pypi/apache-tvm@{tvm_version}"]
    assert tvm["scope"] == "excluded"
    assert len(tvm["externalReferences"][0]["hashes"]) >= 1
    # Debian packages of the (fake) dpkg listing; the epoch stays in the version.
    rustc = by_ref["pkg:deb/debian/rustc@1.85.1%2Bdfsg1-1%2Bdeb13u1?arch=amd64&distro=trixie"]
    assert rustc["version"] == "1.85.1+dfsg1-1+deb13u1" and rustc["scope"] == "excluded"
    assert by_ref["pkg:deb/debian/llvm-19@1:19.1.7-3%2Bb1?arch=amd64&distro=trixie"]["version"] == "1:19.1.7-3+b1"
    # The runtime crate is linked in: required, reached from the .wasm through the model crate.
    assert by_ref["pkg:cargo/wasmforge-runtime@0.1.0"]["scope"] == "required"
    deps = {d["ref"]: d.get("dependsOn", []) for d in sbom["dependencies"]}
    assert "pkg:cargo/wasmforge-model@0.1.0" in deps["wasm"] and "model" in deps["wasm"]
    assert deps["pkg:cargo/wasmforge-model@0.1.0"] == ["pkg:cargo/wasmforge-runtime@0.1.0"]
    assert by_ref["model"]["hashes"][0]["content"] == "d" * 64


def test_statement_binds_every_file_to_commit_images_and_command(tmp_path):
    final = make_artifact(tmp_path / "dist" / "m")
    out = attest_(final)
    envelope = json.loads((out / attest.PROVENANCE_NAME).read_text())
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert envelope["signatures"] == []  # no key given: unsigned
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert attest.read_subjects(out) == artifact.read_sums(final)

    definition = statement["predicate"]["buildDefinition"]
    assert definition["externalParameters"]["command"] == COMMAND
    assert definition["externalParameters"]["source"] == {"registry": "m", "sha256": "d" * 64}
    deps = {d["name"]: d for d in definition["resolvedDependencies"]}
    source = checkout.state(ROOT)
    assert deps["source"]["digest"] == {"gitCommit": source.commit, "gitTree": source.tree}
    assert deps["source"]["annotations"]["dirty"] is source.dirty
    assert deps["m"]["digest"] == {"sha256": "d" * 64}
    assert deps["wasmforge/builder:test"]["digest"] == {"sha256": "a" * 64}
    assert deps["wasmforge/base:trixie-test"]["digest"] == {"sha256": "b" * 64}

    run = statement["predicate"]["runDetails"]
    assert run["metadata"]["startedOn"] == "2026-11-25T12:00:00Z"
    assert run["metadata"]["finishedOn"] == "2026-11-25T12:01:15Z"
    sbom = json.loads((out / attest.SBOM_NAME).read_text())
    assert sbom["serialNumber"] == "urn:uuid:" + run["metadata"]["invocationId"]
    assert run["byproducts"] == [{"name": attest.SBOM_NAME, "mediaType": "application/vnd.cyclonedx+json",
                                  "digest": {"sha256": artifact.sha256_file(out / attest.SBOM_NAME)}}]


def test_the_artifact_directory_is_left_alone(tmp_path):
    final = make_artifact(tmp_path / "dist" / "m")
    before = {p: p.read_bytes() for p in final.rglob("*") if p.is_file()}
    attest_(final)
    assert {p: p.read_bytes() for p in final.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in final.parent.iterdir()) == ["m", "m.attestations"]  # no staging left


def test_dpkg_listing_runs_once_per_image_id_without_network(tmp_path):
    client = FakeClient()
    first = attest.debian_packages(client, BUILDER)
    assert attest.debian_packages(client, BUILDER) == first
    assert ("tzdata", "2025b-4", "all") in first
    assert len(client.runs) == 1
    image, command, kwargs = client.runs[0]
    assert image == BUILDER.id and command[0] == "dpkg-query"
    # The project's one container class: no network, read-only, owner-labelled, removed.
    assert kwargs["network_mode"] == "none" and kwargs["read_only"] and kwargs["cap_drop"] == ["ALL"]
    assert kwargs["labels"]["io.wasmforge.owner"].endswith(f":{os.getpid()}")
    assert client.removed == 1
    attest.debian_packages(client, fake_image("sha256:" + "e" * 64, "other"))
    assert len(client.runs) == 2


def test_bytes_that_fail_their_sums_are_not_attested(tmp_path):
    final = make_artifact(tmp_path / "dist" / "m")
    (final / "m.wasm").write_bytes(b"tampered")
    with pytest.raises(artifact.ArtifactError):
        attest_(final)
    assert sorted(p.name for p in final.parent.iterdir()) == ["m"]


def test_a_failed_run_removes_statements_about_older_bytes(tmp_path):
    final = make_artifact(tmp_path / "dist" / "m")
    out = attest_(final)
    # Same bytes: a failure keeps the statements, which are still true.
    with pytest.raises(RuntimeError):
        attest_(final, FakeClient(fail=True))
    assert attest.read_subjects(out) == artifact.read_sums(final)
    # New bytes published, then attesting them fails: the old statements go.
    shutil.rmtree(final)
    make_artifact(final, wasm=b"\0asm\1\0\0\0new")
    with pytest.raises(RuntimeError):
        attest_(final, FakeClient(fail=True))
    assert sorted(p.name for p in final.parent.iterdir()) == ["m"]


def test_command_line_drops_the_host_path():
    assert attest.command_line(["/home/me/wasmforge/.venv/bin/invoke", "build", "--model", "x"]) == \
        ["invoke", "build", "--model", "x"]


def test_a_source_outside_git_is_named_by_a_digest_of_its_files(tmp_path):
    (tmp_path / "wasmforge").mkdir()
    (tmp_path / "wasmforge" / "a.py").write_text("x = 1\n")
    (tmp_path / "Makefile").write_text("all:\n")
    no_git = checkout.SourceState(None, None, True, None)
    first = attest.source_descriptor(no_git, tmp_path).pb
    assert not first.uri and first.annotations["dirty"] is True
    (tmp_path / "wasmforge" / "__pycache__").mkdir()
    (tmp_path / "wasmforge" / "__pycache__" / "a.pyc").write_bytes(b"cache")  # not source
    assert attest.source_descriptor(no_git, tmp_path).pb.digest == first.digest
    (tmp_path / "wasmforge" / "a.py").write_text("x = 2\n")
    assert attest.source_descriptor(no_git, tmp_path).pb.digest["sha256"] != first.digest["sha256"]
