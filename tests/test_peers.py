"""wasmforge/peers.py: the tract peer's cache keys, vendoring and cached build (no Docker)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from rich.console import Console

from wasmforge import peers
from wasmforge.errors import UserError


def _crate(root: Path) -> Path:
    crate = root / "tract-wasm"
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text('[package]\nname = "tract-peer"\n')
    (crate / "Cargo.lock").write_text("# lock v1\n")
    (crate / "src" / "main.rs").write_text("fn main() {}\n")
    return crate


def test_the_real_crate_is_complete_and_pins_tract():
    files = peers.crate_files()
    assert [f.name for f in files[:2]] == ["Cargo.toml", "Cargo.lock"]
    manifest = (peers.TRACT_CRATE / "Cargo.toml").read_text()
    assert 'tract-onnx = "=0.22.5"' in manifest and 'rust-version = "1.85"' in manifest
    lock = (peers.TRACT_CRATE / "Cargo.lock").read_text()
    assert 'name = "tract-onnx"\nversion = "0.22.5"' in lock
    assert 'name = "psm"\nversion = "0.1.26"' in lock  # newer psm needs a newer rustc


def test_the_wasm_key_follows_every_input(tmp_path):
    crate = _crate(tmp_path)
    first = peers.wasm_path("recipe-a", crate, tmp_path / "cache")
    assert first == peers.wasm_path("recipe-a", crate, tmp_path / "cache")
    assert peers.wasm_path("recipe-b", crate, tmp_path / "cache") != first
    (crate / "src" / "main.rs").write_text("fn main() { println!(); }\n")
    assert peers.wasm_path("recipe-a", crate, tmp_path / "cache") != first
    vendored = peers.vendor_dir(crate, tmp_path / "cache")
    (crate / "Cargo.lock").write_text("# lock v2\n")
    assert peers.vendor_dir(crate, tmp_path / "cache") != vendored


def test_a_missing_source_file_is_one_line(tmp_path):
    crate = _crate(tmp_path)
    (crate / "Cargo.lock").unlink()
    with pytest.raises(UserError, match="Cargo.lock is missing"):
        peers.crate_files(crate)


def _fake_cargo(bin_dir: Path, script: str) -> None:
    bin_dir.mkdir()
    cargo = bin_dir / "cargo"
    cargo.write_text("#!/bin/sh\n" + script)
    cargo.chmod(cargo.stat().st_mode | stat.S_IXUSR)


def test_vendoring_runs_cargo_vendor_locked_once(tmp_path, monkeypatch):
    crate, cache, log = _crate(tmp_path), tmp_path / "cache", tmp_path / "calls"
    # The last argument is the directory to vendor into.
    _fake_cargo(tmp_path / "bin", f'echo "$@" >> {log}\nfor last; do :; done\nmkdir -p "$last/somecrate-1.0.0"\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    console = Console(record=True)
    target = peers.ensure_vendored(console, crate, cache)
    assert (target / "somecrate-1.0.0").is_dir() and (target / ".complete").is_file()
    assert peers.ensure_vendored(console, crate, cache) == target
    calls = log.read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith("vendor --locked --versioned-dirs")
    assert [p.name for p in cache.iterdir()] == [target.name]  # no staging left behind


def test_a_failed_vendoring_leaves_nothing_and_says_why(tmp_path, monkeypatch):
    crate, cache = _crate(tmp_path), tmp_path / "cache"
    _fake_cargo(tmp_path / "bin", 'echo "error: failed to download from crates.io" >&2\nexit 101\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(UserError, match="cargo vendor failed for the tract peer: error: failed to download"):
        peers.ensure_vendored(Console(record=True), crate, cache)
    assert list(cache.iterdir()) == []


def test_no_cargo_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="needs cargo on the host"):
        peers.ensure_vendored(Console(record=True), _crate(tmp_path), tmp_path / "cache")


def test_a_cached_peer_is_used_without_docker(tmp_path, monkeypatch):
    from wasmforge import images

    crate, cache = _crate(tmp_path), tmp_path / "cache"
    recipe = images.recipe_digest("builder", images.load_pins())
    cached = peers.wasm_path(recipe, crate, cache)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"\0asm\1\0\0\0")
    monkeypatch.setattr(images, "ensure_builder", lambda *a, **k: pytest.fail("no image needed"))
    assert peers.ensure_tract_wasm(object(), Console(record=True), crate=crate, cache=cache) == cached


def test_the_build_command_is_offline_and_vendored():
    command = peers.build_command()
    assert {"--offline", "--locked", "--release"} <= set(command)
    assert command[command.index("--target") + 1] == "wasm32-wasip1"
    assert 'source.vendored.directory="/vendor"' in command
    assert "+simd128" in peers.RUSTFLAGS
