"""The artifact directory `dist/<model>/`: SHA256SUMS, verification, atomic publishing.

Standard library only: the smoke-test image verifies artifacts with this module.
`SHA256SUMS` lists every other file in the directory (recursively, sorted, in
the `sha256sum` text format), so `sha256sum -c SHA256SUMS` accepts it, and a
file added, removed or changed after the build is detected.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .hashing import sha256_file

SUMS_NAME = "SHA256SUMS"
MANIFEST_NAME = "manifest.json"


class ArtifactError(Exception):
    """The artifact is missing, incomplete or does not match its hashes."""


def artifact_files(directory: Path) -> list[str]:
    """Relative paths (with `/`) of every file but SHA256SUMS, sorted."""
    names = []
    for path in directory.rglob("*"):
        if path.is_symlink():
            raise ArtifactError(f"{path.relative_to(directory)} is a symlink; artifacts hold files only")
        if path.is_file() and path.name != SUMS_NAME:
            names.append(path.relative_to(directory).as_posix())
    return sorted(names)


def write_sums(directory: Path) -> None:
    lines = [f"{sha256_file(directory / name)}  {name}\n" for name in artifact_files(directory)]
    (directory / SUMS_NAME).write_text("".join(lines))


def read_sums(directory: Path) -> dict[str, str]:
    sums_path = directory / SUMS_NAME
    if not sums_path.is_file():
        raise ArtifactError(f"{directory} has no {SUMS_NAME}; build it first")
    sums = {}
    for number, line in enumerate(sums_path.read_text().splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or name.startswith("/") or ".." in name.split("/"):
            raise ArtifactError(f"{SUMS_NAME} line {number} is malformed")
        sums[name] = digest
    return sums


def verify_sums(directory: Path) -> list[str]:
    """Check every file against SHA256SUMS; return the names checked.

    Raises ArtifactError naming the first problem: a changed, missing or
    unlisted file.
    """
    sums = read_sums(directory)
    present = artifact_files(directory)
    unlisted = sorted(set(present) - set(sums))
    if unlisted:
        raise ArtifactError(f"{unlisted[0]} is not listed in {SUMS_NAME}")
    for name, expected in sums.items():
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{name} is listed in {SUMS_NAME} but missing")
        if sha256_file(path) != expected:
            raise ArtifactError(f"{name} does not match its sha256 in {SUMS_NAME}")
    return sorted(sums)


def load_manifest(directory: Path) -> dict:
    try:
        return json.loads((directory / MANIFEST_NAME).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{directory} has no {MANIFEST_NAME}") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{MANIFEST_NAME} is not valid JSON ({exc.msg})") from None


def verify_artifact(directory: Path) -> dict:
    """Hashes first, then the manifest's own file list; returns the manifest."""
    verify_sums(directory)
    manifest = load_manifest(directory)
    for name, entry in manifest.get("files", {}).items():
        path = directory / name
        if not path.is_file() or sha256_file(path) != entry["sha256"]:
            raise ArtifactError(f"{name} does not match its sha256 in {MANIFEST_NAME}")
    params_file(manifest)  # a declared weights file must be one of those just checked
    return manifest


def params_file(manifest: dict) -> str | None:
    """The weights file of an artifact built with `--external-params`, or None when
    the weights are embedded in the .wasm (no `params` key, or `"embedded"`).

    The manifest records `"params": {"file": ..., "sha256": ..., "size": ...}`;
    the file must be one the manifest lists with the same sha256.
    """
    params = manifest.get("params", "embedded")
    if params == "embedded":
        return None
    name = params.get("file") if isinstance(params, dict) else None
    listed = manifest.get("files", {}).get(name) if isinstance(name, str) else None
    if not isinstance(name, str) or "/" in name or not isinstance(listed, dict):
        raise ArtifactError(f"{MANIFEST_NAME} names {name!r} as the params file, which it does not list")
    if params.get("sha256") != listed.get("sha256"):
        raise ArtifactError(f"{MANIFEST_NAME} gives two different sha256 for {name}")
    return name


def staging_dir(dist: Path, name: str) -> Path:
    """A fresh directory beside the final one, so the last rename stays on one file system."""
    dist.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=dist))
    staging.chmod(0o755)  # mkdtemp makes it private; the artifact is meant to be shared
    return staging


def publish(staging: Path, final: Path) -> None:
    """Replace `final` by `staging` so that readers see the old or the new artifact, never a mix.

    The previous artifact is first renamed aside, then the new one renamed into
    place; only then is the old one deleted.
    """
    previous = None
    if final.exists():
        previous = final.with_name(f".previous-{final.name}-{os.getpid()}")
        os.rename(final, previous)
    try:
        os.rename(staging, final)
    except OSError:
        if previous is not None:
            os.rename(previous, final)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
