"""`invoke smoke`: run `python -m wasmforge.smoke` on dist/<name>/ in the smoke image.

The container is locked down: no network, a read-only root file system, an
unprivileged user without capabilities, and caps on memory, CPU and process
count. It sees only the artifact and the wasmforge package, both read-only (the
package is mounted rather than copied in, so the image tag does not depend on
the runner's code). `container_settings` is the one place these are set: the
docker tests probe them from inside a container started with the very same.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import docker.errors
from rich.console import Console

from . import images
from .container import follow_lines
from .errors import UserError
from .paths import DIST
from .registry import check_model_name

PACKAGE_DIR = Path(__file__).resolve().parent
ARTIFACT_MOUNT = "/artifact"
PACKAGE_MOUNT = "/opt/wasmforge"  # on PYTHONPATH; the package is mounted at .../wasmforge
PYTHON = "/opt/venv/bin/python"
SMOKE_COMMAND = [PYTHON, "-m", "wasmforge.smoke", ARTIFACT_MOUNT]
# A backstop for the whole container; the runner's per-run time limit should
# always fire first.
WALL_LIMIT = 1800.0


def container_settings(artifact: Path) -> dict:
    """docker-py `containers.create` keyword arguments for every smoke container."""
    return {
        "user": "smoke",  # uid 1000 from docker/smoke/Dockerfile
        "network_mode": "none",  # only a loopback interface
        "read_only": True,
        # The only writable place: Python's and the runner's temp dirs (the
        # module's /io). noexec: nothing in it is meant to be executed.
        "tmpfs": {"/tmp": "rw,noexec,nosuid,nodev,size=64m"},
        "volumes": {
            str(artifact.resolve()): {"bind": ARTIFACT_MOUNT, "mode": "ro"},
            str(PACKAGE_DIR): {"bind": f"{PACKAGE_MOUNT}/wasmforge", "mode": "ro"},
        },
        "environment": {"PYTHONPATH": PACKAGE_MOUNT, "PYTHONUNBUFFERED": "1"},
        "mem_limit": "2g",
        "memswap_limit": "2g",  # equal to mem_limit: no swap to spill into
        "nano_cpus": 2_000_000_000,  # two CPUs
        "pids_limit": 64,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "labels": {"io.wasmforge.step": "smoke"},
    }


@dataclass
class ContainerResult:
    exit_code: int
    lines: list[str]
    oom_killed: bool


def run_container(client, image, artifact: Path, command: list[str], on_line=None) -> ContainerResult:
    """Run `command` in the locked-down smoke container, streaming its output to
    `on_line`; the container is removed afterwards whatever happens."""
    container = client.containers.create(image.id, command, detach=True, **container_settings(artifact))
    killer = threading.Timer(WALL_LIMIT, _kill_quietly, [container])
    killer.daemon = True
    lines: list[str] = []
    try:
        container.start()
        killer.start()
        for line in follow_lines(container):
            lines.append(line)
            if on_line is not None:
                on_line(line)
        code = container.wait().get("StatusCode", 1)
        container.reload()
        oom = bool(container.attrs["State"].get("OOMKilled"))
    finally:
        killer.cancel()
        container.remove(force=True)
    return ContainerResult(code, lines, oom)


def _kill_quietly(container) -> None:
    try:
        container.kill()
    except docker.errors.APIError:  # it exited meanwhile
        pass


def _echo(line: str) -> None:
    # The runner's `error:` line becomes the UserError that tasks.py prints; no need to show it twice.
    if not line.startswith("error: "):
        print(line, flush=True)


def smoke(model: str, *, rebuild: bool = False, dist: Path = DIST, console: Console | None = None) -> None:
    """Build what is missing (artifact, smoke image), then smoke-test dist/<model>/."""
    console = console or Console(stderr=True)
    check_model_name(model)
    directory = dist / model
    client = images.docker_client()
    if rebuild or not directory.is_dir():
        from .build import build  # needs onnx/onnxruntime: imported only when building

        build(model=model, dist=dist, console=console)
    image = images.ensure_smoke(client, console)
    limits = container_settings(directory)
    console.print(f"[bold]smoke[/] {model} in {min(image.tags) if image.tags else image.short_id}: no network, "
                  f"read-only root, user {limits['user']}, no capabilities, memory {limits['mem_limit']}, "
                  f"{limits['nano_cpus'] / 1e9:g} CPUs, {limits['pids_limit']} pids", highlight=False)
    started = time.monotonic()
    result = run_container(client, image, directory, SMOKE_COMMAND, on_line=_echo)
    if result.exit_code != 0:
        errors = [ln.removeprefix("error: ") for ln in result.lines if ln.startswith("error: ")]
        if errors:
            message = errors[-1]
            if "Permission denied" in message:
                message += (f" (the smoke container runs as uid 1000: make {directory} readable by others,"
                            f" e.g. chmod -R a+rX {directory}, or rebuild it with --build)")
            raise UserError(message, exit_code=result.exit_code if result.exit_code in (1, 2) else 1)
        reason = " (killed: out of memory)" if result.oom_killed else ""
        tail = " | ".join(ln.strip() for ln in result.lines[-5:] if ln.strip())
        raise UserError(f"smoke container exited with code {result.exit_code}{reason}: {tail}", exit_code=1)
    console.print(f"[bold green]smoke passed[/] {model} in {time.monotonic() - started:.1f} s")
