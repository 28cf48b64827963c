"""The per-model build lock and the cleanup of what killed builds leave (no Docker)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

from rich.console import Console

from wasmforge import buildlock
from wasmforge.container import OWNER_LABEL, STEP_LABEL
from wasmforge.paths import ROOT


def quiet() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200), out


def test_lock_excludes_and_leaves_no_file(tmp_path):
    """Threads hammering one lock: never two inside, and no lock file after."""
    inside, overlaps = [], []

    def worker():
        for _ in range(30):
            with buildlock.model_lock(tmp_path, "m", quiet()[0]):
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(1)
                time.sleep(0.0005)
                inside.pop()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlaps
    assert list(tmp_path.iterdir()) == []


def test_second_build_waits_with_a_message(tmp_path):
    console, out = quiet()
    released = threading.Event()

    def holder(ready):
        with buildlock.model_lock(tmp_path, "m", quiet()[0]):
            ready.set()
            released.wait(10)

    ready = threading.Event()
    thread = threading.Thread(target=holder, args=(ready,))
    thread.start()
    ready.wait(10)
    threading.Timer(0.3, released.set).start()
    started = time.monotonic()
    with buildlock.model_lock(tmp_path, "m", console):
        waited = time.monotonic() - started
    thread.join()
    assert waited >= 0.25
    assert "waiting for another build of m to finish (.lock-m)" in out.getvalue()
    # Another model's lock is independent.
    with buildlock.model_lock(tmp_path, "m", quiet()[0]), buildlock.model_lock(tmp_path, "n", console):
        pass


def test_lock_is_released_when_its_holder_is_killed(tmp_path):
    code = ("import sys, time; from pathlib import Path; from rich.console import Console;"
            "from wasmforge import buildlock\n"
            "with buildlock.model_lock(Path(sys.argv[1]), 'm', Console()):\n"
            "    print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    assert buildlock._try_lock(tmp_path / ".lock-m", blocking=False) is None
    proc.kill()
    proc.wait()
    with buildlock.model_lock(tmp_path, "m", quiet()[0]):
        pass


def test_clean_leftovers(tmp_path):
    dist = tmp_path
    for name in ("m", "n", "busy"):
        (dist / name).mkdir()
    stale = [".staging-m-abcd1234", ".staging-m.attestations-x_y12345", ".previous-m-4242",
             ".staging-other-zzzz9999", ".rebuild-m-k1ll3d_x", ".rebuild-other-abcd1234"]
    kept = [".staging-busy-abcd1234", ".rebuild-busy-abcd1234", ".rebuild-abcd", ".staging-not-a-mkdtemp-name"]
    for name in stale + kept:
        (dist / name).mkdir()
    # Killed between publish's two renames: `gone` is missing, its old copy aside.
    (dist / ".previous-gone-77").mkdir()
    (dist / ".previous-gone-77" / "SHA256SUMS").write_text("old\n")

    console, out = quiet()
    fd = buildlock._try_lock(dist / ".lock-busy", blocking=False)  # a live build of `busy`
    try:
        buildlock.clean_leftovers(dist, "m", console)
    finally:
        buildlock._unlock(dist / ".lock-busy", fd)
    names = sorted(p.name for p in dist.iterdir())
    assert names == sorted(["m", "n", "busy", "gone", *kept])
    assert (dist / "gone" / "SHA256SUMS").read_text() == "old\n"
    assert "restored gone" in out.getvalue()


class FakeContainer(SimpleNamespace):
    def remove(self, force):
        assert force
        self.removed = True


def test_orphan_containers(monkeypatch):
    host = buildlock.socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    containers = {
        "mine-running": ("running", f"{host}:{os.getpid()}"),
        "mine-exited": ("exited", f"{host}:{os.getpid()}"),  # run_step is about to remove it
        "orphan-running": ("running", f"{host}:{dead.pid}"),
        "orphan-created": ("created", f"{host}:{dead.pid}"),
        "other-host": ("exited", f"elsewhere:{dead.pid}"),
        "legacy-exited": ("exited", None),
        "legacy-running": ("running", None),
    }
    fakes = [FakeContainer(short_id=name, status=status, removed=False,
                           labels={STEP_LABEL: "builder", **({OWNER_LABEL: owner} if owner else {})})
             for name, (status, owner) in containers.items()]

    def listing(all, filters):
        assert all and filters == {"label": STEP_LABEL}
        return fakes

    client = SimpleNamespace(containers=SimpleNamespace(list=listing))
    buildlock.remove_orphan_containers(client, quiet()[0])
    assert sorted(c.short_id for c in fakes if c.removed) == ["legacy-exited", "orphan-created",
                                                              "orphan-running"]


VERIFY_DRIVER = r"""
import os, signal, sys
from pathlib import Path
from wasmforge import build, verify

def killed_midway(*, dist, **_):
    (dist / "half-built").mkdir(parents=True)
    os.kill(os.getpid(), signal.SIGKILL)

build.build = killed_midway
verify.rebuild_and_compare("m", dist=Path(sys.argv[1]))
"""


def test_a_killed_verify_rebuild_leaves_a_directory_the_next_run_removes(tmp_path, monkeypatch):
    import shutil
    import subprocess
    import sys

    from tests.manifests import seal
    from wasmforge import build, verify
    from wasmforge.paths import ROOT

    dist = tmp_path / "dist"
    (dist / "m").mkdir(parents=True)
    (dist / "m" / "m.wasm").write_bytes(b"\0asm\1\0\0\0")
    seal(dist / "m")  # a registry model's manifest
    done = subprocess.run([sys.executable, "-c", VERIFY_DRIVER, str(dist)], cwd=ROOT, capture_output=True)
    assert done.returncode == -9, done.stderr
    (left,) = [p.name for p in dist.iterdir() if p.name not in ("m", ".lock-m")]  # a free lock file may stay
    assert left.startswith(".rebuild-m-") and (dist / left / "half-built").is_dir()

    def identical(*, dist, name, **_):  # the next run: a rebuild that matches
        shutil.copytree(tmp_path / "dist" / "m", dist / name)
        return dist / name

    monkeypatch.setattr(build, "build", identical)
    console, out = quiet()
    verify.rebuild_and_compare("m", dist=dist, console=console)
    assert sorted(p.name for p in dist.iterdir()) == ["m"]
    assert f"removed {left}" in out.getvalue() and "rebuild identical" in out.getvalue()
