"""Interrupted and concurrent builds of lenet-digits, through `python -m invoke build`.

A build killed at any point leaves the previous dist/lenet-digits byte for byte
as it was; what a SIGKILL leaves behind (staging directory, orphaned builder
container) is removed by the next build; two builds at once take turns.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from rich.console import Console

from wasmforge import artifact, buildlock, images
from wasmforge.container import OWNER_LABEL, STEP_LABEL
from wasmforge.paths import DIST, ROOT

MODEL = "lenet-digits"
# Where to strike, by the build's own progress lines on stderr.
POINTS = {
    "after the checks": r"^building lenet-digits",
    "in TVM": r"^builder graph",
    "in cargo": r"^builder wasm",
}

pytestmark = pytest.mark.e2e


class Build:
    """`invoke build --model lenet-digits` in the background, its stderr read line by line."""

    def __init__(self):
        # SIGINT back to its default in the child: a test session started in the
        # background of a non-interactive shell inherits it ignored, and so would the build.
        self.proc = subprocess.Popen([sys.executable, "-m", "invoke", "build", "--model", MODEL], cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "COLUMNS": "200"},
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.lines: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 600) -> bool:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            if re.search(pattern, line):
                return True
        return False

    def finish(self, timeout: float = 900) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=30)
        return code, "".join(self.stderr)


def leftovers(pids: set[int]) -> tuple[list[str], list[str]]:
    """Staging/previous directories of the model and step containers owned by `pids`.

    Taken under the model's lock, so a build running meanwhile (another
    test session's) cannot be mistaken for a leftover.
    """
    with buildlock.model_lock(DIST, MODEL, Console(stderr=True)):
        dirs = [p.name for p in DIST.iterdir()
                if re.fullmatch(rf"\.(staging|previous)-{MODEL}(\.attestations)?-.+", p.name)]
    client = images.docker_client()
    containers = [c.short_id for c in client.containers.list(all=True, filters={"label": STEP_LABEL})
                  if c.labels.get(OWNER_LABEL, "").rpartition(":")[2] in {str(p) for p in pids}]
    return dirs, containers


def test_interrupted_builds_keep_the_artifact_and_leave_nothing_after_the_next(built_artifact):
    directory = built_artifact(MODEL)
    before = (directory / "SHA256SUMS").read_bytes()
    killed: set[int] = set()
    for sig in (signal.SIGINT, signal.SIGKILL):
        for point, pattern in POINTS.items():
            build = Build()
            assert build.wait_for(pattern), "".join(build.stderr)
            build.proc.send_signal(sig)
            code, err = build.finish()
            pid = build.proc.pid
            killed.add(pid)
            where = f"{sig.name} {point}"
            assert (directory / "SHA256SUMS").read_bytes() == before, where
            artifact.verify_artifact(directory)
            if sig == signal.SIGINT:
                # Ctrl-C: one line, and the build cleaned up after itself.
                assert code == 130, f"{where}: {err}"
                assert "Traceback" not in err and err.strip().splitlines()[-1] == "error: interrupted", err
                assert leftovers({pid}) == ([], []), where
            else:
                assert code == -signal.SIGKILL, f"{where}: {err}"
                dirs, containers = leftovers({pid})
                if point != "after the checks":
                    # Killed mid-container: the staging directory and the
                    # builder (still running) are left for the next build.
                    assert dirs and containers, f"{where}: nothing left to clean up"

    build = Build()
    code, err = build.finish()
    assert code == 0, err
    assert "left by an interrupted build" in err
    assert leftovers(killed) == ([], [])
    assert not (DIST / f".lock-{MODEL}").exists()
    artifact.verify_artifact(directory)


def test_concurrent_builds_take_turns(built_artifact):
    directory = built_artifact(MODEL)
    builds = [Build(), Build()]
    sums, codes, errs = [], [], []
    pending = list(builds)
    deadline = time.monotonic() + 1800
    while pending and time.monotonic() < deadline:
        for build in list(pending):
            if build.proc.poll() is not None:
                code, err = build.finish()
                # The other build waits for the lock, so this is the artifact
                # that this build published.
                sums.append((directory / "SHA256SUMS").read_bytes())
                codes.append(code)
                errs.append(err)
                pending.remove(build)
        time.sleep(0.2)
    assert not pending, "builds did not finish in time"
    assert codes == [0, 0], errs
    assert sums[0] == sums[1]
    assert any(f"waiting for another build of {MODEL}" in err for err in errs), errs
    artifact.verify_artifact(directory)
    assert leftovers({b.proc.pid for b in builds}) == ([], [])
