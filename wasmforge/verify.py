"""`invoke verify`: check an artifact's hashes and its provenance, and optionally
rebuild it and compare bytes."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from rich.console import Console

from . import artifact, buildlock
from .errors import UserError
from .paths import DIST, ROOT
from .run import artifact_dir
from .terminal import make_console


def verify_hashes(model: str, dist: Path = DIST) -> list[str]:
    """SHA256SUMS and the manifest's own file list; returns the files checked."""
    directory = artifact_dir(model, dist)
    checked = artifact.verify_sums(directory)
    artifact.verify_artifact(directory)
    return checked


def verify_provenance(model: str, dist: Path = DIST, public_key: str | None = None,
                      root: Path = ROOT) -> list[str]:
    """Check `dist/<model>.attestations/provenance.intoto.jsonl`: its signature (with
    `public_key`), its subjects against every file and SHA256SUMS, and its source
    against this checkout. Returns what was checked, one line each; ArtifactError
    (or UserError for a bad key file) naming the first problem."""
    from . import checkout, provenance, signing

    directory = artifact_dir(model, dist)
    sums = artifact.read_sums(directory)
    artifact.verify_sums(directory)  # every file in dist/<model>/ matches SHA256SUMS
    attestations = provenance.attestations_dir(directory)
    where = f"{attestations.name}/{provenance.PROVENANCE_NAME}"
    if not attestations.is_dir():
        raise provenance.ProvenanceError(f"{model} has no provenance: {attestations.name}/ is missing")
    if not (attestations / provenance.PROVENANCE_NAME).exists() \
            and (attestations / provenance.LEGACY_NAME).exists():
        raise provenance.ProvenanceError(f"{attestations.name}/ holds an unsigned statement of an older "
                                         f"wasmforge, not a DSSE envelope: rebuild {model}")
    key = signing.load_public_key(public_key) if public_key else None
    envelope = provenance.read_envelope(attestations)
    lines = []
    if key is not None:  # DSSE: the signature first, then parse what it covers
        try:
            keyid = signing.verify_envelope(envelope, key)
        except signing.EnvelopeError as exc:
            raise provenance.ProvenanceError(f"{where}: {exc}") from None
        lines.append(f"ok: signature verified with {public_key} (keyid {keyid[:16]}...)")
    elif envelope["signatures"]:
        ids = ", ".join(s.get("keyid", "")[:16] + "..." for s in envelope["signatures"])
        lines.append(f"note: signed (keyid {ids}) but not checked: pass --public-key PATH")
    else:
        lines.append("note: the provenance is unsigned (built without a signing key): "
                     "it is a checksum list, not evidence of who built it")
    statement = provenance.statement_of(envelope, where)
    count = provenance.check_subjects(directory, statement, sums)
    lines.append(f"ok: the {count} attested files are exactly the files of dist/{model}/ and SHA256SUMS")
    lines.extend(_check_source(statement, root, where, checkout))
    return lines


def _check_source(statement: dict, root: Path, where: str, checkout) -> list[str]:
    from .provenance import ProvenanceError

    try:
        deps = statement["predicate"]["buildDefinition"].get("resolvedDependencies", [])
        source = next((d for d in deps if isinstance(d, dict) and d.get("name") == "source"), None) or {}
        digest = source.get("digest") or {}
        commit, tree = digest.get("gitCommit"), digest.get("gitTree")
    except (KeyError, TypeError, AttributeError):
        raise ProvenanceError(f"{where}: the statement is not a SLSA provenance with a build definition") from None
    if not commit:
        return ["note: the provenance records no source commit (built outside a git checkout)"]
    dirty = " (built with uncommitted changes: the commit does not describe them)" \
        if isinstance(source.get("annotations"), dict) and source["annotations"].get("dirty") else ""
    here = checkout.state(root)
    if here.commit is None:
        return [f"note: source commit {commit[:12]} not checked: {root.name} is not a git checkout{dirty}"]
    found = checkout.tree_of(commit, root)
    if found is None:
        raise ProvenanceError(f"{where}: the source commit {commit} is not in this checkout "
                              f"(fetch it, or verify in a clone that has it)")
    if tree and found != tree:
        raise ProvenanceError(f"{where}: the source commit {commit[:12]} has tree {found[:12]} here, "
                              f"the provenance says {tree[:12]}")
    at = "HEAD" if commit == here.commit else f"in this checkout (HEAD is {here.commit[:12]})"
    return [f"ok: source commit {commit[:12]} is {at}{dirty}"]


def differing_files(first: Path, second: Path) -> list[str]:
    """Relative names of files that differ, or exist on one side only."""
    names = sorted(set(artifact.artifact_files(first)) | set(artifact.artifact_files(second))
                   | {artifact.SUMS_NAME})
    return [n for n in names if not _same_bytes(first / n, second / n)]


def _same_bytes(a: Path, b: Path) -> bool:
    return a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()


def rebuild_and_compare(model: str, onnx: str | None = None, dist: Path = DIST,
                        console: Console | None = None) -> None:
    """Build the same model again into a temporary directory and compare every byte."""
    from .build import build

    console = console or make_console()
    directory = artifact_dir(model, dist)
    manifest = artifact.verify_artifact(directory)
    registry_name = manifest.source.registry
    if registry_name is None and onnx is None:
        raise UserError(f"{model} was built from a file; pass it again with --onnx PATH to rebuild")
    # The model's lock for the whole comparison: dist/<model> cannot change
    # meanwhile, and a .rebuild- directory whose lock is free is a leftover of
    # a killed verify, which the next build or verify removes (buildlock).
    with buildlock.model_lock(dist, model, console):
        buildlock.clean_leftovers(dist, model, console)
        with tempfile.TemporaryDirectory(prefix=f".rebuild-{model}-", dir=dist) as tmp:
            rebuilt = build(model=None if onnx else registry_name, onnx=onnx, name=model,
                            external_params=manifest.params is not None, features=manifest.feature_set,
                            dist=Path(tmp), console=console)
            different = differing_files(directory, rebuilt)
            for name in different:
                console.print(f"[bold red]differs:[/] {name}")
                show_diffoscope(directory / name, rebuilt / name, console)
    if different:
        raise UserError(f"rebuild of {model} is not bit-identical: {', '.join(different)}", 1)
    console.print(f"[bold green]rebuild identical[/]: every file of dist/{model} matches")


def show_diffoscope(a: Path, b: Path, console: Console) -> None:
    if shutil.which("diffoscope") is None or not a.is_file() or not b.is_file():
        return
    result = subprocess.run(["diffoscope", "--text", "-", str(a), str(b)],
                            capture_output=True, text=True)
    console.print(result.stdout[:20000], markup=False, highlight=False)
