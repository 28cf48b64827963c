"""Two builds of the same commit, in different checkouts, at different times, the
second with its images rebuilt without Docker's cache, give identical bytes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wasmforge.paths import ROOT

pytestmark = pytest.mark.e2e


def clone(destination: Path) -> Path:
    """A clean checkout of HEAD: what a release pipeline would start from."""
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(destination)],
                   check=True)
    return destination


def invoke(checkout: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=checkout, env=env,
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def two_checkouts(tmp_path_factory):
    # The clones hold HEAD: uncommitted changes in this tree are not what is tested.
    first = clone(tmp_path_factory.mktemp("first") / "checkout")
    second = clone(tmp_path_factory.mktemp("second-at-another-path") / "wasmforge")
    invoke(second, "image", "--no-cache")  # images rebuilt from scratch for the second build
    return first, second


@pytest.mark.parametrize("model", ["lenet-digits", "resnet50-synth"])
def test_rebuild_is_bit_identical(two_checkouts, model):
    first, second = two_checkouts
    invoke(first, "build", "--model", model)
    time.sleep(2)  # a different clock time for the second build
    invoke(second, "build", "--model", model)
    sums_first = (first / "dist" / model / "SHA256SUMS").read_text()
    sums_second = (second / "dist" / model / "SHA256SUMS").read_text()
    assert sums_first == sums_second
    for line in sums_first.splitlines():
        name = line.split("  ", 1)[1]
        assert (first / "dist" / model / name).read_bytes() == \
            (second / "dist" / model / name).read_bytes(), name
