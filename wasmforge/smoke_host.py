"""`invoke smoke`: run `python -m wasmforge.smoke` on dist/<name>/ in the smoke image.

The container is locked down: no network, a read-only root file system, an
unprivileged user without capabilities, and caps on memory, CPU and process
count. It sees only the artifact and the wasmforge package, both read-only (the
package is mounted rather than copied in, so the image tag does not depend on
the runner's code). `container.smoke_profile` is the one place these are set:
the docker tests probe them from inside a container started with the very same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from . import images, provenance
from .container import Container, Mount, smoke_profile
from .errors import UserError
from .paths import DIST
from .registry import check_model_name
from .terminal import make_console

PACKAGE_DIR = Path(__file__).resolve().parent
ARTIFACT_MOUNT = "/artifact"
PACKAGE_MOUNT = "/opt/wasmforge"  # on PYTHONPATH; the package is mounted at .../wasmforge
PYTHON = "/opt/venv/bin/python"
SMOKE_COMMAND = [PYTHON, "-m", "wasmforge.smoke", ARTIFACT_MOUNT]


def smoke_container(client, image, artifact: Path, command: list[str], profile=None) -> Container:
    """The locked-down smoke container for `artifact`, running `command` (not started yet);
    `profile`: smoke_profile() unless given (tests shorten its wall-clock limit)."""
    mounts = [Mount(str(artifact.resolve()), ARTIFACT_MOUNT),
              Mount(str(PACKAGE_DIR), f"{PACKAGE_MOUNT}/wasmforge")]
    return Container(client, image.id if hasattr(image, "id") else image, command,
                     profile=profile or smoke_profile(),
                     title="smoke", mounts=mounts,
                     environment={"PYTHONPATH": PACKAGE_MOUNT, "PYTHONUNBUFFERED": "1"})


def container_settings(artifact: Path) -> dict:
    """docker-py `containers.create` keyword arguments of every smoke container."""
    return smoke_container(None, "", artifact, []).create_kwargs()


@dataclass
class ContainerResult:
    exit_code: int
    lines: list[str]
    oom_killed: bool
    timed_out: bool = False  # killed by the container's wall-clock limit


def run_container(client, image, artifact: Path, command: list[str], on_line=None,
                  profile=None) -> ContainerResult:
    """Run `command` in the locked-down smoke container, streaming its output to
    `on_line`; the container is removed afterwards whatever happens."""
    lines: list[str] = []
    with smoke_container(client, image, artifact, command, profile) as container:
        for line in container.lines():
            lines.append(line)
            if on_line is not None:
                on_line(line)
    return ContainerResult(container.exit_code, lines, container.oom_killed, container.timed_out)


def failure_message(result: ContainerResult, wall_limit: float | None) -> str:
    """One line for a smoke container that exited non-zero without an `error:` line."""
    if result.timed_out:
        return f"smoke container killed: it ran past its wall-clock limit of {wall_limit:g} s"
    reason = " (killed: out of memory)" if result.oom_killed else ""
    tail = " | ".join(ln.strip() for ln in result.lines[-5:] if ln.strip())
    return f"smoke container exited with code {result.exit_code}{reason}: {tail}"


def _echo(line: str) -> None:
    # The runner's `error:` line becomes the UserError that tasks.py prints; no need to show it twice.
    if not line.startswith("error: "):
        print(line, flush=True)


def smoke(model: str, *, rebuild: bool = False, dist: Path = DIST, console: Console | None = None) -> None:
    """Build what is missing (artifact, smoke image), then smoke-test dist/<model>/."""
    console = console or make_console()
    check_model_name(model)
    directory = dist / model
    if rebuild or not directory.is_dir():
        from .registry import get_model

        get_model(model)  # an unknown name is refused before Docker is asked for anything
    client = images.docker_client()
    if rebuild or not directory.is_dir():
        from .build import build  # needs onnx/onnxruntime: imported only when building

        build(model=model, dist=dist, console=console)
    # The container sees the artifact only; its attestations are checked here.
    provenance.check_artifact(directory)
    image = images.ensure_smoke(client, console)
    limits = container_settings(directory)
    console.print(f"[bold]smoke[/] {model} in {min(image.tags) if image.tags else image.short_id}: no network, "
                  f"read-only root, user {limits['user']}, no capabilities, memory {limits['mem_limit']}, "
                  f"{limits['nano_cpus'] / 1e9:g} CPUs, {limits['pids_limit']} pids", highlight=False)
    started = time.monotonic()
    result = run_container(client, image, directory, SMOKE_COMMAND, on_line=_echo)
    if result.exit_code != 0:
        errors = [ln.removeprefix("error: ") for ln in result.lines if ln.startswith("error: ")]
        if errors and not result.timed_out:
            message = errors[-1]
            if "Permission denied" in message:
                message += (f" (the smoke container runs as uid 1000: make {directory} readable by others,"
                            f" e.g. chmod -R a+rX {directory}, or rebuild it with --build)")
            raise UserError(message, exit_code=result.exit_code if result.exit_code in (1, 2) else 1)
        raise UserError(failure_message(result, smoke_profile().wall_limit), exit_code=1)
    console.print(f"[bold green]smoke passed[/] {model} in {time.monotonic() - started:.1f} s")
