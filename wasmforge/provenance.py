"""Reading an artifact's provenance, and the check every consumer makes with it.

`dist/<name>.attestations/provenance.intoto.jsonl` holds one DSSE envelope (one
JSON line) whose payload is an in-toto Statement v1; its subjects are the
artifact's files and their sha256. `check_artifact` compares them with the
artifact's SHA256SUMS (which `artifact.verify_sums` has compared with the
files): once attestations exist, a `.wasm`, manifest and SHA256SUMS rewritten
consistently no longer pass. Standard library only, like the smoke runner that
imports it; the signature is checked by `signing` (in `invoke verify`).
"""

from __future__ import annotations

import json
from pathlib import Path

from . import artifact
from .artifact import ArtifactError

PROVENANCE_NAME = "provenance.intoto.jsonl"
# The unsigned bare Statement that builds before DSSE wrote: consumers still
# compare its subjects; `invoke verify --provenance` asks for a rebuild.
LEGACY_NAME = "provenance.intoto.json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SUFFIX = ".attestations"


class ProvenanceError(ArtifactError):
    """The provenance is missing, unreadable or disagrees with the artifact."""


def attestations_dir(final_dir: Path) -> Path:
    return final_dir.with_name(final_dir.name + SUFFIX)


def read_envelope(attestations: Path) -> dict:
    """The DSSE envelope, its fields checked; ProvenanceError naming the problem otherwise."""
    from .signing import EnvelopeError, parse_envelope

    path = attestations / PROVENANCE_NAME
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise ProvenanceError(f"{_show(path)} is missing") from None
    except OSError as exc:
        raise ProvenanceError(f"cannot read {_show(path)}: {exc.strerror or exc}") from None
    try:
        return parse_envelope(text)
    except EnvelopeError as exc:
        raise ProvenanceError(f"{_show(path)}: {exc}") from None


def statement_of(envelope: dict, where: str = PROVENANCE_NAME) -> dict:
    from .signing import decode_payload

    if envelope["payloadType"] != PAYLOAD_TYPE:
        raise ProvenanceError(f"{where}: payloadType is {envelope['payloadType']!r}, not {PAYLOAD_TYPE}")
    try:
        statement = json.loads(decode_payload(envelope))
    except ValueError:
        raise ProvenanceError(f"{where}: the payload is not a JSON in-toto statement") from None
    return _checked_statement(statement, where)


def _checked_statement(statement, where: str) -> dict:
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise ProvenanceError(f"{where}: the payload is not an in-toto Statement v1")
    subjects(statement, where)
    return statement


def subjects(statement: dict, where: str = PROVENANCE_NAME) -> dict[str, str]:
    """{file name: sha256} of the statement's subjects."""
    try:
        found = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    except (KeyError, TypeError):
        raise ProvenanceError(f"{where}: a subject has no name or sha256 digest") from None
    if len(found) != len(statement["subject"]):
        raise ProvenanceError(f"{where}: a file is named by two subjects")
    return found


def read_statement(attestations: Path) -> tuple[dict, dict | None]:
    """(statement, its envelope), or (statement, None) for a legacy bare statement."""
    if not (attestations / PROVENANCE_NAME).exists() and (attestations / LEGACY_NAME).is_file():
        try:
            statement = json.loads((attestations / LEGACY_NAME).read_text())
        except (OSError, ValueError):
            raise ProvenanceError(f"{_show(attestations / LEGACY_NAME)} is not readable JSON") from None
        return _checked_statement(statement, LEGACY_NAME), None
    envelope = read_envelope(attestations)
    return statement_of(envelope, _show(attestations / PROVENANCE_NAME)), envelope


def read_subjects(attestations: Path) -> dict[str, str]:
    """{file name: sha256} attested in `attestations` ({} if there is no readable statement)."""
    try:
        return subjects(read_statement(attestations)[0])
    except ProvenanceError:
        return {}


def differences(attested: dict[str, str], sums: dict[str, str]) -> list[str]:
    """What differs between the attested files and SHA256SUMS, one phrase per file."""
    problems = []
    for name in sorted(set(attested) | set(sums)):
        if name not in attested:
            problems.append(f"{name} is not attested")
        elif name not in sums:
            problems.append(f"{name} is attested but missing")
        elif attested[name] != sums[name]:
            problems.append(f"{name} has sha256 {sums[name]}, the provenance says {attested[name]}")
    return problems


def check_subjects(directory: Path, statement: dict, sums: dict[str, str] | None = None) -> int:
    """ProvenanceError unless the statement attests exactly the artifact's files; returns their count."""
    sums = artifact.read_sums(directory) if sums is None else sums
    problems = differences(subjects(statement), sums)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ProvenanceError(f"{directory.name} does not match its provenance in "
                              f"{attestations_dir(directory).name}/: {'; '.join(problems[:3])}{more}")
    return len(sums)


def check_artifact(directory: Path, sums: dict[str, str] | None = None) -> bool:
    """The consumers' check (run, verify, bench, smoke, the API), after the hashes:
    if `<directory>.attestations/` exists, its statement must be readable and
    attest exactly the files of SHA256SUMS. Returns whether there was one."""
    attestations = attestations_dir(directory)
    if not attestations.is_dir():
        return False
    statement, _ = read_statement(attestations)
    check_subjects(directory, statement, sums)
    return True


def _show(path: Path) -> str:
    """`<name>.attestations/<file>`: the part of a path a user recognizes."""
    return f"{path.parent.name}/{path.name}"


def sign(directory: Path, private_key) -> str:
    """Add a signature by `private_key` to the envelope of a built artifact (as the
    release workflow does, on a machine that did not build it); returns the keyid.
    Only an artifact whose files match SHA256SUMS, the manifest and the attested
    subjects is signed. The envelope is replaced atomically."""
    import os
    import tempfile

    from .signing import add_signature, keyid

    artifact.verify_artifact(directory)  # hashes, manifest, and the subjects if attested
    attestations = attestations_dir(directory)
    if not attestations.is_dir():
        raise ProvenanceError(f"{directory.name} has no provenance to sign: {attestations.name}/ is missing")
    envelope = read_envelope(attestations)
    check_subjects(directory, statement_of(envelope))
    signed = add_signature(envelope, private_key)
    path = attestations / PROVENANCE_NAME
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=attestations)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(signed, sort_keys=True) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return keyid(private_key.public_key())
