"""The bench's wasm peer: tract's ONNX runtime built for wasm32-wasip1.

`invoke bench` runs it under the same wasmtime configuration as wasmforge's
own modules, so the two are compared engine for engine. The crate lives in
`rust_app/peers/tract-wasm/` (pinned `tract-onnx =0.22.5`, the newest that
builds with the builder's rustc 1.85; its own Cargo.lock). Building it:

1. vendor: `cargo vendor --locked` on the host (the only step that needs the
   network; cargo checks every crate against Cargo.lock's checksums) into
   `CACHE/peers/vendor-<lock digest>/`;
2. compile: the builder image, offline, `--target wasm32-wasip1` with
   `+simd128`, into `CACHE/peers/tract-<recipe digest>.wasm`.

Both are cached by what defines them (the crate's files and the builder
recipe), so the ~20 minutes of the first build happen once per machine.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from rich.console import Console

from .errors import UserError
from .paths import CACHE, ROOT

TRACT_CRATE = ROOT / "rust_app" / "peers" / "tract-wasm"
PEERS_CACHE = CACHE / "peers"
WASM_NAME = "tract-peer.wasm"
RUSTFLAGS = "-C target-feature=+simd128"
BUILD_WALL_LIMIT = 3 * 3600.0  # seconds; ~20 min on 2 idle cores
# Both wasm engines of the bench are measured with and without epoch
# interruption (the runner's deadline mechanism): its cost differs per engine.
EPOCH_SETTINGS = (True, False)


def crate_files(crate: Path = TRACT_CRATE) -> list[Path]:
    """What defines the peer's build: manifest, lock and sources, in a fixed order."""
    files = [crate / "Cargo.toml", crate / "Cargo.lock", *sorted((crate / "src").rglob("*.rs"))]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise UserError(f"the tract peer crate is incomplete: {missing[0]} is missing", 1)
    return files


def _digest(parts: list[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()[:16]


def vendor_dir(crate: Path = TRACT_CRATE, cache: Path = PEERS_CACHE) -> Path:
    return cache / f"vendor-{_digest([(crate / 'Cargo.lock').read_bytes()])}"


def wasm_path(builder_recipe: str, crate: Path = TRACT_CRATE, cache: Path = PEERS_CACHE) -> Path:
    key = _digest([f.read_bytes() for f in crate_files(crate)] + [builder_recipe.encode(), RUSTFLAGS.encode()])
    return cache / f"tract-{key}.wasm"


def ensure_vendored(console: Console, crate: Path = TRACT_CRATE, cache: Path = PEERS_CACHE) -> Path:
    """The crate's dependencies as a cargo `directory` source (vendored once)."""
    target = vendor_dir(crate, cache)
    if (target / ".complete").is_file():
        return target
    cargo = shutil.which("cargo")
    if cargo is None:
        raise UserError("the tract peer needs cargo on the host to vendor its crates (crates.io)", 1)
    cache.mkdir(parents=True, exist_ok=True)
    console.print(f"tract peer: vendoring crates.io dependencies into {target.name} (once)")
    with tempfile.TemporaryDirectory(prefix=".vendor-", dir=cache) as tmp:
        staging = Path(tmp) / "vendor"
        done = subprocess.run([cargo, "vendor", "--locked", "--versioned-dirs", "--quiet", str(staging)],
                              cwd=crate, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              check=False)
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
            raise UserError(f"cargo vendor failed for the tract peer: {lines[-1] if lines else done.returncode}", 1)
        (staging / ".complete").write_text("")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    return target


def build_command() -> list[str]:
    """Offline cargo build inside the builder; crates.io replaced by the vendored copy."""
    return ["cargo", "build", "--release", "--offline", "--locked", "--target", "wasm32-wasip1",
            "--config", 'source.crates-io.replace-with="vendored"',
            "--config", 'source.vendored.directory="/vendor"']


def ensure_tract_wasm(client, console: Console, *, crate: Path = TRACT_CRATE, cache: Path = PEERS_CACHE) -> Path:
    """The peer's .wasm, built in the builder image if it is not cached yet."""
    from . import images
    from .container import Container, Mount, Profile, builder_profile, builder_user, writable_by

    recipe = images.recipe_digest("builder", images.load_pins())
    out = wasm_path(recipe, crate, cache)
    if out.is_file():
        return out
    vendored = ensure_vendored(console, crate, cache)
    builder = images.ensure_builder(client, console)
    target = cache / "target"  # kept between attempts: an interrupted build resumes
    target.mkdir(parents=True, exist_ok=True)
    console.print("tract peer: compiling tract-onnx for wasm32-wasip1 (+simd128) in the builder, "
                  "once per machine (~20 min on 2 cores)")
    # The builder's limits (memory, pids, no network, not root), with the time this build needs.
    profile = Profile({**builder_profile().settings, "working_dir": "/src/peer"}, wall_limit=BUILD_WALL_LIMIT)
    mounts = [Mount(str(crate), "/src/peer"), Mount(str(vendored), "/vendor"),
              Mount(str(target), "/target", read_only=False)]
    environment = {"CARGO_TARGET_DIR": "/target", "RUSTFLAGS": RUSTFLAGS, "CARGO_TERM_PROGRESS_WHEN": "never"}
    lines: list[str] = []
    with writable_by([target], *builder_user()), \
            Container(client, builder.id, build_command(), profile=profile, title="tract-peer", mounts=mounts,
                      environment=environment) as container:
        for line in container.lines():
            lines.append(line)
            if line.strip().startswith("Compiling"):
                console.print(f"  tract peer: {line.strip()}", highlight=False)
    if container.exit_code != 0:
        tail = " | ".join(ln.strip() for ln in lines[-4:] if ln.strip())
        raise UserError(f"the tract peer did not build (exit {container.exit_code}): {tail}", 1)
    built = target / "wasm32-wasip1" / "release" / WASM_NAME
    partial = out.with_name(f".{out.name}.partial")
    shutil.copyfile(built, partial)
    os.replace(partial, out)
    return out
