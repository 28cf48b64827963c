"""Run one step in a container with the docker SDK, streaming its log.

The container is always removed afterwards, also when the step fails or the
user presses Ctrl-C, so no stopped containers pile up.
"""

from __future__ import annotations

import codecs
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from rich.console import Console
from rich.text import Text

from .errors import UserError

# Lines the in-container scripts print to mark a step, e.g. "==> graph".
STEP_PREFIX = "==> "
# Every step container carries these labels: the step's title, and the host and
# pid of the process that will remove it (buildlock removes those whose process
# died without doing so).
STEP_LABEL = "io.wasmforge.step"
OWNER_LABEL = "io.wasmforge.owner"


@dataclass
class Mount:
    host: str
    container: str
    read_only: bool = True


@dataclass
class StepRun:
    image: str
    command: list[str]
    mounts: list[Mount]
    environment: dict[str, str] = field(default_factory=dict)
    network: bool = False
    workdir: str = "/work"


def run_step(client, step: StepRun, console: Console, title: str) -> list[str]:
    """Run `step`, echo its output, and return the output lines.

    A non-zero exit raises UserError carrying the step's own `error:` line when
    it printed one (exit code 2: the input is at fault) or the log tail.
    """
    volumes = {
        m.host: {"bind": m.container, "mode": "ro" if m.read_only else "rw"} for m in step.mounts
    }
    container = client.containers.create(
        step.image,
        step.command,
        volumes=volumes,
        environment=step.environment,
        working_dir=step.workdir,
        user=f"{os.getuid()}:{os.getgid()}",
        network_disabled=not step.network,
        network_mode=None if step.network else "none",
        labels={STEP_LABEL: title, OWNER_LABEL: f"{socket.gethostname()}:{os.getpid()}"},
        tmpfs={"/tmp": "rw,exec,mode=1777", "/work": "rw,exec,mode=1777"},
        detach=True,
    )
    lines: list[str] = []
    started = time.monotonic()
    step_started = started
    try:
        container.start()
        for line in follow_lines(container):
            lines.append(line)
            if line.startswith(STEP_PREFIX):
                now = time.monotonic()
                console.print(f"[bold cyan]{title}[/] {line[len(STEP_PREFIX):]}"
                              f"  [dim](+{now - step_started:.1f} s)[/]")
                step_started = now
            else:
                console.print(Text(f"  {line}", style="dim"), highlight=False)
        status = container.wait()
    finally:
        container.remove(force=True)
    code = status.get("StatusCode", 1)
    if code != 0:
        errors = [ln[len("error: "):] for ln in lines if ln.startswith("error: ")]
        if errors:
            raise UserError(errors[-1], exit_code=2 if code == 2 else 1)
        tail = " | ".join(ln.strip() for ln in lines[-5:] if ln.strip())
        raise UserError(f"{title} failed with exit code {code}: {tail}", exit_code=1)
    console.print(f"[bold green]{title}[/] done in {time.monotonic() - started:.1f} s")
    return lines


def follow_lines(container) -> Iterator[str]:
    """A started container's output (stdout and stderr), line by line as it comes."""
    # Incremental: a UTF-8 character may be split across two chunks.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    for chunk in container.logs(stream=True, follow=True):
        pending += decoder.decode(chunk)
        *complete, pending = pending.split("\n")
        yield from complete
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending
