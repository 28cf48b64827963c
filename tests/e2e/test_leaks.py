"""Nothing private leaks into an artifact: no host path, home, hostname,
environment value or local CA certificate, in any file of dist/<name>/."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import pytest

from wasmforge.paths import ROOT

pytestmark = pytest.mark.e2e

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def private_strings() -> dict[str, bytes]:
    """What must not appear, by what it is."""
    found = {"checkout path": str(ROOT).encode(), "home": (str(Path.home()) + "/").encode()}
    hostname = socket.gethostname()
    if len(hostname) >= 6:
        found["hostname"] = hostname.encode()
    for name, value in os.environ.items():
        # Long values only: short ones ("1", "C.UTF-8") occur by chance.
        if len(value) >= 12 and "\n" not in value:
            found[f"${name}"] = value.encode()
    if HOST_CA.is_file():
        blocks = re.findall(r"-----BEGIN CERTIFICATE-----\n(.*?)-----END", HOST_CA.read_text(), re.DOTALL)
        for index, block in enumerate(blocks):
            lines = block.splitlines()
            if len(lines) > 3:
                found[f"CA certificate {index}"] = lines[3].encode()
    return found


@pytest.mark.parametrize("name", ["lenet-digits", "resnet50-synth"])
def test_no_private_strings_in_the_artifact(built_artifact, name):
    directory = built_artifact(name)
    secrets = private_strings()
    assert secrets["checkout path"].startswith(b"/")
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        data = path.read_bytes()
        leaked = [what for what, value in secrets.items() if value in data]
        assert not leaked, f"{path.relative_to(directory)} contains {leaked}"


def test_no_private_strings_in_the_attestations(built_artifact):
    """dist/<name>.attestations/ too (issue 12): no checkout path, home or hostname
    in the SBOM or in the provenance statement inside its envelope."""
    from wasmforge import provenance

    directory = built_artifact("lenet-digits")
    attestations = provenance.attestations_dir(directory)
    statement = json.dumps(provenance.read_statement(attestations)[0]).encode()
    secrets = private_strings()
    for name, data in [("statement", statement), *((p.name, p.read_bytes()) for p in attestations.iterdir())]:
        leaked = [what for what, value in secrets.items() if value in data]
        assert not leaked, f"{name} contains {leaked}"
