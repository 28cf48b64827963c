"""How the checkout is named in attestations and labels: no host paths (wasmforge/checkout.py)."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from wasmforge import checkout


@pytest.mark.parametrize("url, expected", [
    ("https://github.com/o/wasmforge.git", "https://github.com/o/wasmforge.git"),
    ("https://user:ghp_token@GitHub.com/o/wasmforge.git", "https://github.com/o/wasmforge.git"),
    ("https://x-access-token:t@github.com:8443/o/r?x=1#frag", "https://github.com:8443/o/r"),
    ("git@github.com:o/wasmforge.git", "ssh://github.com/o/wasmforge.git"),
    ("ssh://git@gitlab.example.org/group/r.git", "ssh://gitlab.example.org/group/r.git"),
    ("/srv/git/wasmforge.git", None),
    ("../wasmforge", None),
    ("wasmforge", None),
    ("./a:b", None),
    ("file:///home/me/wasmforge", None),
    ("C:\\src\\wasmforge", None),
    ("", None),
    (None, None),
])
def test_canonical_remote(url, expected):
    assert checkout.canonical_remote(url) == expected


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                   check=True, capture_output=True)


def test_a_checkout_with_a_local_origin_is_named_by_content_only(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "f").write_text("x")
    git(repo, "add", "f")
    git(repo, "commit", "-q", "-m", "c")
    git(repo, "remote", "add", "origin", str(tmp_path / "upstream.git"))
    state = checkout.state(repo)
    assert state.remote is None and not state.dirty
    assert len(state.commit) == 40 and checkout.tree_of(state.commit, repo) == state.tree
    assert checkout.tree_of("0" * 40, repo) is None and checkout.tree_of("HEAD; rm", repo) is None
    git(repo, "remote", "set-url", "origin", "https://u:p@example.org/o/r.git")
    (repo / "f").write_text("y")
    state = checkout.state(repo)
    assert state.remote == "https://example.org/o/r.git" and state.dirty
    assert checkout.state(tmp_path / "not-git") == checkout.SourceState(None, None, True, None)


def test_command_arguments_lose_their_host_paths(tmp_path):
    root = tmp_path / "checkout"
    (root / "models").mkdir(parents=True)
    (root / "models" / "m.onnx").write_bytes(b"inside")
    outside = tmp_path / "elsewhere" / "x.onnx"
    outside.parent.mkdir()
    outside.write_bytes(b"outside")
    frozen = tmp_path / "sr.npy"
    frozen.write_bytes(b"npy")
    digest = hashlib.sha256(b"outside").hexdigest()
    rel = lambda arg, cwd=root: checkout.relative_argument(arg, root, cwd)  # noqa: E731
    assert rel(str(outside)) == f"sha256:{digest}"
    assert rel("../elsewhere/x.onnx") == f"sha256:{digest}"
    assert rel(f"--onnx={outside}") == f"--onnx=sha256:{digest}"
    assert rel(f"sr={frozen}") == "sr=sha256:" + hashlib.sha256(b"npy").hexdigest()
    assert rel(str(root / "models" / "m.onnx"), cwd=tmp_path) == "models/m.onnx"
    assert rel("models/m.onnx") == "models/m.onnx"
    assert rel(str(outside.parent)) == "<path outside the checkout>"
    assert rel("/no/such/file.onnx") == "<path outside the checkout>"
    for plain in ("build", "--model", "lenet-digits", "input=1x3x8x8", "sr=16000", "--external-params"):
        assert rel(plain) == plain
