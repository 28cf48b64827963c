"""examples/node/classify.mjs under the machine's Node (Debian's nodejs: Node
20): the portable build runs without flags and matches the artifact's
onnxruntime references; the relaxed-SIMD build is refused with one clear line."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from wasmforge.paths import ROOT

EXAMPLE = ROOT / "examples" / "node" / "classify.mjs"


@pytest.fixture(scope="module")
def node():
    path = shutil.which("node") or shutil.which("nodejs")
    if path is None:
        pytest.skip("no node on PATH (Debian: apt-get install nodejs; .ci/run does)")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
    return path, int(re.match(r"v(\d+)", version)[1])


def run_example(node_path, *args):
    return subprocess.run([node_path, str(EXAMPLE), *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_portable_build_matches_the_references_without_flags(node, portable_artifact):
    done = run_example(node[0], portable_artifact)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(": ok") == 3 and "MISMATCH" not in done.stdout
    assert "relaxed-simd" not in done.stdout.splitlines()[0]
    assert "input = pixel / 16" in done.stdout


def test_portable_build_classifies_a_digit(node, portable_artifact):
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index in (0, 7, 13):
        pixels = ",".join(str(int(p)) for p in digits.images[index].ravel())
        done = run_example(node[0], portable_artifact, "--pixels", pixels)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == f"digit: {digits.target[index]}"


def test_relaxed_build_is_refused_with_one_line_on_node_20(node, built_artifact):
    path, major = node
    done = run_example(path, built_artifact("lenet-digits"))
    if major >= 22:  # relaxed SIMD is on by default from V8 11.4 (Node 22 has 12.4)
        assert done.returncode == 0, done.stderr
        return
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: this engine has no relaxed SIMD"), done.stderr
    assert "invoke build --features simd128" in lines[0]


def test_bad_arguments_are_one_line(node, portable_artifact, tmp_path):
    for args in ([], [tmp_path], [portable_artifact, "--pixels", "1,2,3"]):
        done = run_example(node[0], *args)
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, (args, done.stderr)
        assert done.stderr.startswith("error: ")
