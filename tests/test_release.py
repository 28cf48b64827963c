"""The release workflow (.github/workflows/release.yml), linted, and its gate (wasmforge/release.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.manifests import seal
from wasmforge.errors import UserError
from wasmforge.paths import ROOT
from wasmforge.registry import load_registry
from wasmforge.release import compare_builds

WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
ZIZMOR = Path(sys.executable).with_name("zizmor")


def zizmor(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(ZIZMOR), "--offline", "--no-progress", "--persona=pedantic", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_the_workflow_passes_its_linter():
    """zizmor (from host.txt): GitHub's workflow schema, then every audit, pedantic."""
    result = zizmor(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings" in result.stdout


def test_the_linter_catches_what_it_should(tmp_path):
    """A schema error and an injectable expression, in copies of the workflow."""
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    broken = workflows / "schema.yml"
    broken.write_text(WORKFLOW.read_text().replace("    steps:\n", "    stepz:\n", 1))
    assert zizmor(broken).returncode != 0
    injectable = workflows / "inject.yml"
    injectable.write_text(WORKFLOW.read_text().replace(
        'run: gh release create "$TAG"', 'run: gh release create "${{ github.head_ref }}"'))
    result = zizmor(injectable)
    assert result.returncode != 0 and "template-injection" in result.stdout


def test_workflow_shape():
    text = WORKFLOW.read_text()
    # Every action pinned by commit, with its version as a comment.
    uses = re.findall(r"uses: (\S+)", text)
    assert uses and all(re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", u) for u in uses), uses
    # Two different runners for the same models; the gate names the very same models.
    runners = re.search(r"runner: \[(.*)\]", text)[1].split(", ")
    models = re.search(r"model: \[(.*)\]", text)[1].split(", ")
    assert len(set(runners)) == 2
    assert set(models) <= set(load_registry())
    gate = re.search(r"invoke compare-builds (.*?)\n\n", text, re.S)[1]
    assert re.findall(r"--model ([\w.-]+)", gate) == models
    for runner in runners:
        assert f"pattern: dist-{runner}-*" in text
    # The secret only where it is used: the publish job, which runs after the gate, for tags only.
    jobs = re.split(r"\n  (?=[a-z]+:\n)", text.split("\njobs:\n", 1)[1])
    by_name = {job.split(":", 1)[0].strip(): job for job in jobs}
    assert set(by_name) == {"build", "compare", "publish"}
    assert "secrets." not in by_name["build"] + by_name["compare"]
    assert "needs: compare" in by_name["publish"] and "startsWith(github.ref, 'refs/tags/v')" in by_name["publish"]
    assert "secrets.WASMFORGE_SIGNING_KEY" in by_name["publish"]
    assert re.search(r"^permissions: \{\}$", text, re.M)


# --- the gate ---------------------------------------------------------------------

def make_dist(root: Path, models: dict[str, bytes]) -> Path:
    for name, wasm in models.items():
        directory = root / name
        directory.mkdir(parents=True)
        (directory / "m.wasm").write_bytes(wasm)
        seal(directory)
        (root / f"{name}.attestations").mkdir()  # differs between runners; not compared
        (root / f"{name}.attestations" / "x").write_text(str(root))
    return root


def test_identical_builds_pass(tmp_path):
    first = make_dist(tmp_path / "a", {"m1": b"one", "m2": b"two"})
    second = make_dist(tmp_path / "b", {"m1": b"one", "m2": b"two"})
    assert compare_builds(first, second) == ["m1", "m2"]
    assert compare_builds(first, second, ["m2"]) == ["m2"]


def test_disagreeing_or_missing_builds_publish_nothing(tmp_path):
    first = make_dist(tmp_path / "a", {"m1": b"one", "m2": b"two"})
    second = make_dist(tmp_path / "b", {"m1": b"ONE"})
    with pytest.raises(UserError) as caught:
        compare_builds(first, second, ["m1", "m2", "m3"])
    message = str(caught.value)
    assert message.startswith("the builds disagree, nothing may be published: ")
    assert "m1: the two builds differ in m.wasm, manifest.json" in message
    assert f"m2: not built in {second}" in message and f"m3: not built in {first} and {second}" in message
    assert caught.value.exit_code == 1


def test_a_copy_that_fails_its_own_sums_is_refused(tmp_path):
    first = make_dist(tmp_path / "a", {"m1": b"one"})
    second = tmp_path / "b"
    shutil.copytree(first, second)
    (second / "m1" / "m.wasm").write_bytes(b"two")
    with pytest.raises(UserError, match=r"m1: .*m.wasm does not match its sha256 in SHA256SUMS"):
        compare_builds(first, second)
    with pytest.raises(UserError, match="no such directory"):
        compare_builds(first, tmp_path / "nowhere")
