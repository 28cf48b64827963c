"""The release workflow's gate: two independent builds must agree before anything is published.

`.github/workflows/release.yml` builds every model on two runners and hands
their `dist/` trees to `compare_builds` (`invoke compare-builds`): each model
must be present in both, each copy must match its own SHA256SUMS, and the two
SHA256SUMS must be identical byte for byte. Only then does the workflow sign
and publish one of them (docs/release.md).
"""

from __future__ import annotations

from pathlib import Path

from . import artifact
from .artifact import ArtifactError
from .errors import UserError
from .provenance import SUFFIX


def artifact_names(dist: Path) -> set[str]:
    """The artifacts in a dist/ tree: directories with a SHA256SUMS."""
    if not dist.is_dir():
        raise UserError(f"no such directory: {dist}")
    return {p.name for p in dist.iterdir()
            if p.is_dir() and not p.name.endswith(SUFFIX) and (p / artifact.SUMS_NAME).is_file()}


def compare_builds(first: Path, second: Path, models: list[str] | None = None) -> list[str]:
    """The models both trees built identically; UserError naming every disagreement."""
    names_a, names_b = artifact_names(first), artifact_names(second)
    wanted = sorted(models) if models else sorted(names_a | names_b)
    if not wanted:
        raise UserError(f"no artifacts in {first} or {second}")
    problems = []
    for name in wanted:
        missing = [str(d) for d, names in ((first, names_a), (second, names_b)) if name not in names]
        if missing:
            problems.append(f"{name}: not built in {' and '.join(missing)}")
            continue
        try:
            for dist in (first, second):
                artifact.verify_sums(dist / name)
        except ArtifactError as exc:
            problems.append(f"{name}: {dist / name}: {exc}")
            continue
        sums_a, sums_b = (artifact.read_sums(d / name) for d in (first, second))
        if sums_a != sums_b:
            differ = sorted(n for n in set(sums_a) | set(sums_b) if sums_a.get(n) != sums_b.get(n))
            problems.append(f"{name}: the two builds differ in {', '.join(differ)}")
        elif (first / name / artifact.SUMS_NAME).read_bytes() != (second / name / artifact.SUMS_NAME).read_bytes():
            problems.append(f"{name}: the two SHA256SUMS files differ")
    if problems:
        raise UserError("the builds disagree, nothing may be published: " + "; ".join(problems), exit_code=1)
    return wanted
