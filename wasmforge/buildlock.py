"""One build per artifact at a time, and the cleanup of builds that died.

`model_lock(dist, name)` holds `flock` on `dist/.lock-<name>` for a whole build
(staging, publish, attestations), so two builds of one model take turns
instead of mixing their files. The kernel drops the lock when its holder dies,
even by SIGKILL, so a lock that can be taken means nobody is building.

`clean_leftovers` then removes what a killed build leaves: staging and
`.previous-` directories whose model's lock is free (a killed publish is rolled
back first), `.rebuild-` directories of a killed `invoke verify --rebuild`
(which holds the model's lock while it rebuilds), and builder containers whose
owning process is gone.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from .container import OWNER_LABEL, STEP_LABEL

LOCK_PREFIX = ".lock-"
# artifact.staging_dir and verify's rebuild add mkdtemp's 8 random characters;
# publish adds a pid.
_LEFTOVER = re.compile(r"\.(?:staging-(?P<staged>.+)-[a-z0-9_]{8}|rebuild-(?P<rebuilt>.+)-[a-z0-9_]{8}"
                       r"|previous-(?P<previous>.+)-\d+)")
# Attestations are written inside the build of the model they belong to.
_ATTESTATIONS = ".attestations"


def _try_lock(path: Path, blocking: bool) -> int | None:
    """An fd holding `path`'s lock, or None if another process holds it (non-blocking)."""
    while True:
        # O_CLOEXEC: a child that outlives us must not keep the lock alive.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:  # Ctrl-C while waiting
            os.close(fd)
            raise
        # The previous holder removes the file on release; a lock on a removed
        # file guards nothing, so start again on the new one.
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _unlock(path: Path, fd: int) -> None:
    # Remove while still holding it (see _try_lock), so dist/ keeps no lock files.
    path.unlink(missing_ok=True)
    os.close(fd)


@contextmanager
def model_lock(dist: Path, name: str, console: Console) -> Iterator[None]:
    """Hold the build lock of `name`, waiting (and saying so) while another build has it."""
    dist.mkdir(parents=True, exist_ok=True)
    path = dist / f"{LOCK_PREFIX}{name}"
    fd = _try_lock(path, blocking=False)
    if fd is None:
        console.print(f"[yellow]waiting[/] for another build of {name} to finish ({path.name})")
        fd = _try_lock(path, blocking=True)
    try:
        yield
    finally:
        _unlock(path, fd)


def clean_leftovers(dist: Path, held: str, console: Console, client=None) -> None:
    """Remove what killed builds left in `dist`; call it holding the lock of `held`.

    Containers go first: an orphaned builder may still be writing into a
    staging directory.
    """
    if client is not None:
        remove_orphan_containers(client, console)
    by_model: dict[str, list[Path]] = {}
    for path in dist.iterdir():
        match = _LEFTOVER.fullmatch(path.name)
        if match and path.is_dir():
            owner = (match["staged"] or match["rebuilt"] or match["previous"]).removesuffix(_ATTESTATIONS)
            by_model.setdefault(owner, []).append(path)
    for model, paths in sorted(by_model.items()):
        if model == held:
            _clean(dist, paths, console)
            continue
        lock = dist / f"{LOCK_PREFIX}{model}"
        fd = _try_lock(lock, blocking=False)
        if fd is None:
            continue  # a live build of that model: its directories are in use
        try:
            _clean(dist, paths, console)
        finally:
            _unlock(lock, fd)


def _clean(dist: Path, paths: list[Path], console: Console) -> None:
    for path in sorted(paths):
        if path.name.startswith(".previous-"):
            final = dist / path.name.removeprefix(".previous-").rpartition("-")[0]
            if not final.exists():
                # Killed between publish's two renames: put the old artifact back.
                os.rename(path, final)
                console.print(f"[yellow]restored[/] {final.name} from an interrupted publish")
                continue
        shutil.rmtree(path, ignore_errors=True)
        console.print(f"[dim]removed {path.name}, left by an interrupted build[/]")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is gone too
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_orphan_containers(client, console: Console) -> None:
    """Remove step containers whose owner process on this host has died.

    They are left when a build is SIGKILLed (its `finally` never runs); one
    may still be running, doing work nobody will collect. Containers of live
    processes are theirs to remove. Containers from before the owner label
    are removed once they have stopped.
    """
    import docker

    host = socket.gethostname()
    for container in client.containers.list(all=True, filters={"label": STEP_LABEL}):
        owner_host, _, pid = container.labels.get(OWNER_LABEL, "").rpartition(":")
        if owner_host:
            orphan = owner_host == host and pid.isdigit() and not _alive(int(pid))
        else:
            orphan = container.status in ("exited", "dead")
        if orphan:
            try:
                container.remove(force=True)
            except docker.errors.APIError:  # already gone, or being removed by another build
                continue
            console.print(f"[dim]removed container {container.short_id} "
                          f"({container.labels.get(STEP_LABEL)}), left by an interrupted build[/]")
