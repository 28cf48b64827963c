"""Every container the project starts: one `Container` class, one settings profile per use.

A `Container` is a context manager: it creates the container on entry (with the
owner labels that let `buildlock` remove containers whose process died), streams
its output line by line, and removes it on exit whatever happened (an error,
Ctrl-C), so no stopped containers pile up. A wall-clock limit kills it from
outside if it runs too long.

Profiles:
- `builder_profile`: a compiler step in the builder image (no network, the
  caller's uid or the image's unprivileged user for root, no capabilities,
  no-new-privileges, memory/CPU/pid/wall-clock limits from
  resources/limits.toml, scratch tmpfs at /tmp and /work);
- `smoke_profile`: the locked-down smoke test (read-only root, no network,
  uid 1000 without capabilities, memory/CPU/pid limits);
- `listing_profile`: a short read-only query of an image (e.g. its packages).
"""

from __future__ import annotations

import codecs
import errno
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.text import Text

from .compiler.request import RESULT_PREFIX, STEP_PREFIX, JobResult
from .errors import UserError
from .limits import ENV_PREFIX, builder_limits

# Every container carries these labels: its title, and the host and pid of the
# process that will remove it (buildlock removes those whose process died
# without doing so).
STEP_LABEL = "io.wasmforge.step"
OWNER_LABEL = "io.wasmforge.owner"


@dataclass(frozen=True)
class Mount:
    host: str
    container: str
    read_only: bool = True


@dataclass(frozen=True)
class Profile:
    """docker-py `containers.create` settings shared by every container of one kind."""

    settings: dict
    wall_limit: float | None = None  # seconds, then the container is killed


# The image's own unprivileged user (docker/builder/Dockerfile), for a host user
# that is root: the builder never runs as uid 0.
BUILDER_UID = BUILDER_GID = 1000


def builder_user() -> tuple[int, int]:
    """The uid:gid a builder runs as: the caller's, so that what it writes into
    mounted directories belongs to them; the image's `builder` user for root."""
    uid, gid = os.getuid(), os.getgid()
    return (uid, gid) if uid != 0 else (BUILDER_UID, BUILDER_GID)


def builder_profile(limits=None, models: int = 1) -> Profile:
    """A compiler step: no network, not root, no capabilities, no new privileges,
    memory (scratch tmpfs included), CPU, pid and wall-clock limits from
    resources/limits.toml (or WASMFORGE_BUILDER_* variables); the wall clock
    is per model, `models` of them."""
    limits = limits or builder_limits()
    uid, gid = builder_user()
    return Profile({
        "user": f"{uid}:{gid}",
        "network_disabled": True,
        "network_mode": "none",
        "working_dir": "/work",
        # Owned by the builder's user: this docker resets the mode of the
        # working directory's mount to 0755 whatever `mode=` says.
        "tmpfs": {path: f"rw,exec,uid={uid},gid={gid},mode=1777" for path in ("/tmp", "/work")},
        "mem_limit": limits.memory,
        "memswap_limit": limits.memory,  # no swap to spill into
        "nano_cpus": int(limits.cpus * 1e9),
        "pids_limit": limits.pids,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
    }, wall_limit=limits.wall_seconds * max(1, models))


@contextmanager
def writable_by(paths, uid: int, gid: int) -> Iterator[None]:
    """Give `paths` (directories the container writes into) to uid:gid for the
    block, and back to the caller afterwards (also after a failure), so that
    a root caller's builder can write as an unprivileged user and the caller
    still owns every file. Nothing to do when the caller is that user."""
    mine = (os.getuid(), os.getgid())
    if (uid, gid) == mine:
        yield
        return
    for path in paths:
        _chown_tree(path, uid, gid)
    try:
        yield
    finally:
        for path in paths:
            _chown_tree(path, *mine)


@contextmanager
def readable_by(mounts: list[Mount], uid: int, gid: int) -> Iterator[list[Mount]]:
    """The read-only mounts as the container's user can read them: a file it
    may not read (a model saved with mode 0600 by a root caller) is mounted
    from a private copy it owns for the block; a directory it cannot read is
    one `error:` line. Nothing changes when the container runs as the caller."""
    if (uid, gid) == (os.getuid(), os.getgid()):
        yield list(mounts)
        return
    import shutil
    import tempfile

    copies: str | None = None
    result = []
    try:
        for mount in mounts:
            if mount.read_only and not _may_read(mount.host, uid, gid):
                if os.path.isdir(mount.host):
                    raise UserError(f"{mount.host} is not readable by the builder's unprivileged user "
                                    f"(uid {uid}); make it readable for others (chmod o+rx)")
                copies = copies or tempfile.mkdtemp(prefix="wasmforge-mount-")
                copy = os.path.join(copies, str(len(result)))
                shutil.copyfile(mount.host, copy)
                os.chmod(copy, 0o400)
                os.chown(copy, uid, gid)
                mount = Mount(copy, mount.container, read_only=True)
            result.append(mount)
        yield result
    finally:
        if copies is not None:
            shutil.rmtree(copies, ignore_errors=True)


def _may_read(path: str, uid: int, gid: int) -> bool:
    status = os.stat(path)
    shift = 6 if status.st_uid == uid else 3 if status.st_gid == gid else 0
    need = 0o5 if os.path.isdir(path) else 0o4
    return (status.st_mode >> shift) & need == need


def _chown_tree(path, uid: int, gid: int) -> None:
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), uid, gid)
    if os.path.lexists(path):
        os.lchown(path, uid, gid)


def smoke_profile() -> Profile:
    return Profile({
        "user": "smoke",  # uid 1000 from docker/smoke/Dockerfile
        "network_mode": "none",  # only a loopback interface
        "read_only": True,
        # The only writable place: Python's and the runner's temp dirs (the
        # module's /io). noexec: nothing in it is meant to be executed.
        "tmpfs": {"/tmp": "rw,noexec,nosuid,nodev,size=64m"},
        "mem_limit": "2g",
        "memswap_limit": "2g",  # equal to mem_limit: no swap to spill into
        "nano_cpus": 2_000_000_000,  # two CPUs
        "pids_limit": 64,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
    }, wall_limit=1800.0)  # a backstop: the runner's per-run limit fires first


def listing_profile() -> Profile:
    return Profile({"network_disabled": True, "network_mode": "none", "read_only": True,
                    "cap_drop": ["ALL"], "security_opt": ["no-new-privileges"]}, wall_limit=300.0)


def owner_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Container:
    """One container: `with Container(...) as c: for line in c.lines(): ...; c.exit_code`."""

    def __init__(self, client, image: str, command: list[str], *, profile: Profile, title: str,
                 mounts: list[Mount] = (), environment: dict[str, str] | None = None):
        self.client, self.image, self.command = client, image, command
        self.profile, self.title = profile, title
        self.mounts, self.environment = list(mounts), dict(environment or {})
        self.exit_code: int | None = None
        self.oom_killed = False
        self.timed_out = False
        self._container = None
        self._killer: threading.Timer | None = None

    def create_kwargs(self) -> dict:
        settings = dict(self.profile.settings)
        settings["volumes"] = {m.host: {"bind": m.container, "mode": "ro" if m.read_only else "rw"}
                               for m in self.mounts}
        settings["environment"] = self.environment
        settings["labels"] = {STEP_LABEL: self.title, OWNER_LABEL: owner_label()}
        return settings

    def __enter__(self) -> "Container":
        self._container = self.client.containers.create(self.image, self.command, detach=True,
                                                        **self.create_kwargs())
        return self

    def lines(self) -> Iterator[str]:
        """Start the container and yield its output (stdout and stderr) line by line;
        afterwards `exit_code` and `oom_killed` are set."""
        self._container.start()
        if self.profile.wall_limit:
            self._killer = threading.Timer(self.profile.wall_limit, self._kill)
            self._killer.daemon = True
            self._killer.start()
        yield from follow_lines(self._container)
        self.exit_code = self._container.wait().get("StatusCode", 1)
        self._container.reload()
        self.oom_killed = bool(self._container.attrs["State"].get("OOMKilled"))

    def output(self) -> bytes:
        """Start, wait, and return stdout (for short queries); raises UserError on failure."""
        out = [line for line in self.lines()]
        if self.exit_code != 0:
            raise UserError(f"{self.title} failed with exit code {self.exit_code}", exit_code=1)
        return ("\n".join(out) + "\n").encode() if out else b""

    def _kill(self) -> None:
        self.timed_out = True
        try:
            self._container.kill()
        except Exception:  # noqa: BLE001 - it exited meanwhile
            pass

    def __exit__(self, *exc) -> None:
        if self._killer is not None:
            self._killer.cancel()
        if self._container is not None:
            try:
                self._container.remove(force=True)
            except Exception as error:  # noqa: BLE001 - docker-py's NotFound / APIError
                # Gone already, or its removal is in progress (409): what we wanted.
                status = getattr(getattr(error, "response", None), "status_code", None)
                if status not in (404, 409):
                    raise


# Builder lines that tell the user nothing and are dropped from the log: TVM's
# LLVM backend announces on every build the vector width it picked for wasm32.
NOISE = (re.compile(r"llvm_instance\.cc:\d+: Warning: Set native vector bits to be \d+ for `wasm32`"),)


@dataclass
class StepOutput:
    lines: list[str] = field(default_factory=list)
    results: list[JobResult] = field(default_factory=list)


def run_step(client, image: str, command: list[str], mounts: list[Mount], console: Console,
             title: str, environment: dict[str, str] | None = None,
             output: StepOutput | None = None, models: int = 1) -> StepOutput:
    """Run one builder step, echo its output with step timings, and collect its result lines
    (into `output` if given: the caller keeps what came before a failure).
    `models`: how many models it builds (its wall-clock limit is per model).

    A non-zero exit raises UserError carrying the step's own `error:` line when
    it printed one (exit code 2: the input is at fault) or the log tail.
    """
    output = StepOutput() if output is None else output
    started = step_started = time.monotonic()
    profile = builder_profile(models=models)
    user = builder_user()
    try:
        with writable_by([m.host for m in mounts if not m.read_only], *user), \
                readable_by(mounts, *user) as mounts, \
                Container(client, image, command, profile=profile, title=title, mounts=mounts,
                          environment=environment) as container:
            for line in container.lines():
                result = JobResult.parse(line)
                if result is not None:
                    output.results.append(result)
                    continue
                if any(pattern.search(line) for pattern in NOISE):
                    continue
                output.lines.append(line)
                if line.startswith(STEP_PREFIX):
                    now = time.monotonic()
                    console.print(f"[bold cyan]{title}[/] {line[len(STEP_PREFIX):]}"
                                  f"  [dim](+{now - step_started:.1f} s)[/]", highlight=False)
                    step_started = now
                elif line.startswith("warning: "):
                    console.print(Text(line, style="yellow"), highlight=False)
                else:
                    console.print(Text(f"  {line}", style="dim"), highlight=False)
    except Exception as exc:  # noqa: BLE001 - docker-py's errors: the daemon or the container went away
        if not type(exc).__module__.startswith(("docker", "requests", "urllib3")):
            raise
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{title} container failed: {reason} (was it removed from outside?)", 1) from None
    code = container.exit_code
    if container.timed_out:
        raise UserError(f"{title} ran longer than its limit of {profile.wall_limit:g} s and was stopped "
                        f"(raise the per-model limit with {ENV_PREFIX}WALL_SECONDS)", exit_code=1)
    if container.oom_killed:
        raise UserError(f"{title} ran out of memory (limit {profile.settings['mem_limit']}, scratch files "
                        f"included) and was stopped (raise it with {ENV_PREFIX}MEMORY)", exit_code=1)
    if code != 0:
        full = os.strerror(errno.ENOSPC)  # the host's disk under a writable mount, not a traceback
        writable = [m.host for m in mounts if not m.read_only]
        if writable and any(full in ln for ln in output.lines[-20:]):
            raise UserError(f"no space left on device writing {', '.join(writable)} ({title} output)", 1)
        errors = [ln[len("error: "):] for ln in output.lines if ln.startswith("error: ")]
        if errors:
            raise UserError(errors[-1], exit_code=2 if code == 2 else 1)
        tail = " | ".join(ln.strip() for ln in output.lines[-5:] if ln.strip())
        raise UserError(f"{title} failed with exit code {code}: {tail}", exit_code=1)
    console.print(f"[bold green]{title}[/] done in {time.monotonic() - started:.1f} s")
    return output


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
