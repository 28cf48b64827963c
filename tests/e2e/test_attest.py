"""Attestations of a real build with the real builder image."""

from __future__ import annotations

import json
import shutil

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from tests.test_attest import FINISHED, STARTED
from wasmforge import artifact, attest, images

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
    statement = json.loads((out / attest.PROVENANCE_NAME).read_text())
    assert attest.read_subjects(out) == artifact.read_sums(final)
    digests = [d["digest"] for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]]
    assert {"sha256": builder.id.split(":")[1]} in digests
