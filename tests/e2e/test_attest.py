"""Attestations of a real build with the real builder image."""

from __future__ import annotations

import dataclasses
import json
import shutil

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from tests.test_attest import FINISHED, STARTED
from wasmforge import artifact, attest, images, provenance
from wasmforge.paths import DIST
from wasmforge.verify import verify_provenance

pytestmark = pytest.mark.e2e


def test_attestations_of_a_real_build(built_artifact, tmp_path):
    """On a real build and builder image; into a copy, so dist/ is not touched."""
    final = tmp_path / "lenet-digits"
    shutil.copytree(built_artifact("lenet-digits"), final)
    client = images.docker_client()
    builder = images.ensure_builder(client)
    out = attest.write_attestations(final, client=client, builder_image=builder,
                                    command=attest.command_line(), started=STARTED, finished=FINISHED)
    sbom_text = (out / attest.SBOM_NAME).read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(sbom_text) is None
    debs = {c["name"]: c["version"] for c in json.loads(sbom_text)["components"]
            if c.get("purl", "").startswith("pkg:deb/")}
    pins = images.load_pins()["builder"]["apt"]
    assert debs["rustc"] == pins["rustc"] and debs["llvm-19"] == pins["llvm-19"]
    statement = provenance.read_statement(out)[0]
    assert attest.read_subjects(out) == artifact.read_sums(final)
    digests = [d["digest"] for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]]
    assert {"sha256": builder.id.split(":")[1]} in digests


def test_provenance_of_a_fresh_build_verifies_and_catches_a_consistent_rewrite(built_artifact, tmp_path):
    """dist/lenet-digits as the build left it: its provenance passes `verify --provenance`;
    signed afterwards (as the release workflow does) it passes with the public key, and a
    rewritten .wasm + manifest + SHA256SUMS is refused by verify and by every consumer."""
    built_artifact("lenet-digits")
    lines = verify_provenance("lenet-digits", DIST)
    assert any(line.startswith("ok: the ") and "attested files are exactly" in line for line in lines), lines
    dist = tmp_path / "dist"
    for name in ("lenet-digits", "lenet-digits.attestations"):
        shutil.copytree(DIST / name, dist / name)
    key = Ed25519PrivateKey.generate()
    public = tmp_path / "key.pub"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    provenance.sign(dist / "lenet-digits", key)
    lines = verify_provenance("lenet-digits", dist, public_key=str(public))
    assert lines[0].startswith("ok: signature verified"), lines
    final = dist / "lenet-digits"
    wasm = final / "lenet-digits.wasm"
    wasm.write_bytes(wasm.read_bytes() + b"\0")
    manifest = artifact.load_manifest(final)
    (final / artifact.MANIFEST_NAME).unlink()
    files = {n: artifact.FileRecord.of(final / n) for n in artifact.artifact_files(final)}
    dataclasses.replace(manifest, files=files).write(final)
    artifact.write_sums(final)
    artifact.verify_sums(final)
    with pytest.raises(provenance.ProvenanceError, match="lenet-digits.wasm has sha256"):
        verify_provenance("lenet-digits", dist, public_key=str(public))
    with pytest.raises(provenance.ProvenanceError, match="does not match its provenance"):
        artifact.verify_artifact(final)  # run, bench, smoke, verify
