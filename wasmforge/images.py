"""The Docker images everything runs in: base (debootstrap), builder and smoke.

Every image is tagged with a hash of its inputs, so an unchanged tree reuses the
cached image and any change to a Dockerfile, lock file, pin or base gives a new
tag. Only docker-py talks to the daemon; `debootstrap` and the host's pip are
the two subprocesses (they have no Python API).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from wasmforge import __version__
from wasmforge.errors import UserError
from wasmforge.paths import CACHE, PINS_FILE, ROOT
from wasmforge.terminal import make_console

# Bump when _bootstrap/_tidy_rootfs/_write_tar change what ends up in the base.
BOOTSTRAP_RECIPE = 1
# The wheels are for the images' Debian CPython 3.13; manylinux_2_28 matches the
# `--python-platform` of the locks (trixie's glibc 2.41 runs all of them).
WHEEL_PYTHON = "3.13"
WHEEL_PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(28, 4, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
LABEL_PREFIX = "io.wasmforge."


def load_pins(path: Path = PINS_FILE) -> dict:
    with open(path, "rb") as f:
        return tomllib.load(f)


def _short_hash(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:  # length-prefixed, so ("ab", "c") != ("a", "bc")
        h.update(len(p).to_bytes(8, "big") + p)
    return h.hexdigest()[:12]


def _canon(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# --- docker ------------------------------------------------------------------

def docker_client():
    """A docker-py client whose daemon answers, or a UserError (the SDK is imported here, not at start-up)."""
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.DockerException as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"Docker daemon not reachable ({reason}); start Docker or set DOCKER_HOST",
                        exit_code=1) from e
    return client


def _console(console: Console | None) -> Console:
    return console or make_console()


def _local_image(client, ref: str):
    import docker.errors

    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


# --- base ----------------------------------------------------------------------

def base_tag(pins: dict) -> str:
    """wasmforge/base:<suite>-<hash of the bootstrap recipe>."""
    recipe = {k: v for k, v in pins["base"].items() if k != "default_image"}
    return f"wasmforge/base:{recipe['suite']}-{_short_hash(_canon(recipe), str(BOOTSTRAP_RECIPE).encode())}"


def ensure_base(client, console: Console | None = None, *, base_image: str | None = None,
                pins: dict | None = None) -> str:
    """Return a base image reference, bootstrapping and importing it if needed.

    `base_image` (or $WASMFORGE_BASE_IMAGE) names an existing local or pullable
    trixie image to use instead, e.g. debian:trixie-slim where a registry exists.
    """
    console, pins = _console(console), pins or load_pins()
    ref = base_image or os.environ.get("WASMFORGE_BASE_IMAGE")
    if ref:
        if _local_image(client, ref) is None:
            try:
                console.print(f"pulling base image {ref}")
                client.images.pull(ref)
            except Exception as e:  # docker.errors.DockerException and requests' errors
                raise UserError(f"base image {ref} is neither local nor pullable: {e}", exit_code=1) from e
        return ref
    tag = base_tag(pins)
    if _local_image(client, tag) is not None:
        return tag
    tar_path = CACHE / "base" / (tag.split(":", 1)[1] + ".tar")
    if not tar_path.exists():
        _bootstrap(pins["base"], tar_path, console)
    t0 = time.monotonic()
    repo, name = tag.split(":", 1)
    # CMD matches Docker's official Debian images; nothing else is set on import.
    client.api.import_image(src=str(tar_path), repository=repo, tag=name, changes=['CMD ["bash"]'])
    console.print(f"imported {tag} from {tar_path.name} in {time.monotonic() - t0:.1f}s")
    return tag


def _bootstrap(b: dict, tar_path: Path, console: Console) -> None:
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        raise UserError("bootstrapping the base image needs root and debootstrap "
                        "(apt-get install debootstrap); or set WASMFORGE_BASE_IMAGE", exit_code=1)
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    # Everything happens in a temp dir next to the cache entry and is renamed
    # into place only when complete, so an interrupted run leaves nothing usable.
    work = Path(tempfile.mkdtemp(prefix=".bootstrap-", dir=tar_path.parent))
    try:
        rootfs, log = work / "rootfs", work / "debootstrap.log"
        cmd = ["debootstrap", f"--variant={b['variant']}", f"--arch={b['arch']}",
               f"--components={','.join(b['components'])}"]
        if b.get("include"):
            cmd.append("--include=" + ",".join(b["include"]))
        cmd += [b["suite"], str(rootfs), b["mirror"]]
        t0 = time.monotonic()
        with console.status(f"debootstrap {b['variant']} {b['suite']} from {b['mirror']}"), \
                open(log, "wb") as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
        if rc:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise UserError(f"debootstrap failed (exit {rc}):\n{tail}", exit_code=1)
        console.print(f"debootstrap {b['suite']}: {time.monotonic() - t0:.1f}s")
        _tidy_rootfs(rootfs, b)
        _write_tar(rootfs, work / "rootfs.tar", int(b["source_date_epoch"]))
        os.replace(work / "rootfs.tar", tar_path)
    finally:
        _unmount_under(work)  # a failed debootstrap can leave /proc, /sys mounted
        shutil.rmtree(work, ignore_errors=True)


def _tidy_rootfs(rootfs: Path, b: dict) -> None:
    etc = rootfs / "etc"
    # debootstrap copies the host's hostname and resolv.conf; Docker provides both.
    for f in ("hostname", "resolv.conf"):
        (etc / f).unlink(missing_ok=True)
    # deb822 sources like Docker's debian images: release, updates and security.
    (etc / "apt" / "sources.list").unlink(missing_ok=True)
    components = " ".join(b["components"])
    (etc / "apt" / "sources.list.d" / "debian.sources").write_text(
        f"Types: deb\nURIs: {b['mirror']}\nSuites: {b['suite']} {b['suite']}-updates\n"
        f"Components: {components}\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        f"Types: deb\nURIs: {b['security_mirror']}\nSuites: {b['suite']}-security\n"
        f"Components: {components}\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    # Never start services from maintainer scripts during image builds.
    policy = rootfs / "usr" / "sbin" / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    # Downloaded .debs, package lists and bootstrap logs: dead weight in an image.
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
                    "var/log/*.log", "var/log/apt/*", "var/cache/debconf/*-old"):
        for p in rootfs.glob(pattern):
            if p.is_file() or p.is_symlink():
                p.unlink()
            elif p.is_dir() and p.name != "partial":
                shutil.rmtree(p)


def _write_tar(rootfs: Path, out: Path, epoch: int) -> None:
    """Deterministic tarball: sorted entries (tarfile sorts directory listings),
    mtimes clamped to `epoch`, numeric owners only. So the same rootfs gives the
    same layer digest, and with it the same builder/smoke tags after a re-import."""
    skip = {"./dev", "./proc", "./sys", "./run"}  # Docker mounts these; keep the empty dirs

    def clean(ti: tarfile.TarInfo):
        if os.path.dirname(ti.name) in skip or any(ti.name.startswith(s + "/") for s in skip):
            return None
        ti.mtime = min(int(ti.mtime), epoch)
        ti.uname = ti.gname = ""
        return ti

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(rootfs, arcname=".", filter=clean)


def _unmount_under(path: Path) -> None:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
    for p in sorted(points, reverse=True):  # deepest first
        subprocess.run(["umount", "-l", p], check=False)


# --- builder / smoke -------------------------------------------------------------

def recipe_digest(kind: str, pins: dict, root: Path = ROOT) -> str:
    """Hash of everything that defines the image except the base's bytes:
    Dockerfile, lock file, this image's pins. Artifacts record it, because it is
    the same on every machine, while a fresh debootstrap gives new base bytes."""
    spec = pins[kind]
    return _short_hash(
        (root / spec["dockerfile"]).read_bytes(), (root / spec["requirements"]).read_bytes(),
        _canon({"image": spec, "epoch": pins["base"]["source_date_epoch"],
                "wheels": [WHEEL_PYTHON, WHEEL_PLATFORMS], "base": base_tag(pins)}))


def image_tag(kind: str, pins: dict, base_fingerprint: str, root: Path = ROOT) -> str:
    """wasmforge/<kind>:<hash of the recipe and the base's layers>."""
    return f"wasmforge/{kind}:" + _short_hash(
        recipe_digest(kind, pins, root).encode(), base_fingerprint.encode())


def base_fingerprint(image) -> str:
    """The base's layer digests, not its image id: `docker import` stamps a new
    creation time (so a new id) on every import of the same cached tarball."""
    return ",".join(image.attrs["RootFS"]["Layers"])


def lock_versions(requirements: Path) -> dict[str, str]:
    """{normalized project name: version} from a `name==version` lock file."""
    pat = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s\\;]+)")
    return {re.sub(r"[-_.]+", "-", m[1]).lower(): m[2]
            for m in map(pat.match, requirements.read_text().splitlines()) if m}


def labels_for(kind: str, pins: dict, base_ref: str, inputs: str, root: Path = ROOT) -> dict[str, str]:
    spec = pins[kind]
    pip = lock_versions(root / spec["requirements"])
    from .checkout import state

    # A canonical remote URL (userinfo stripped), never a local path.
    source = state(root)
    labels = {
        "org.opencontainers.image.title": f"wasmforge-{kind}",
        "org.opencontainers.image.source": source.remote or "unknown",
        "org.opencontainers.image.revision": source.commit or "unknown",
        "org.opencontainers.image.version": __version__,
        "org.opencontainers.image.base.name": base_ref,
        LABEL_PREFIX + "inputs": inputs,
    }
    for key, source in spec["labels"].items():
        where, name = source.split(":", 1)
        labels[LABEL_PREFIX + key] = spec["apt"][name] if where == "apt" else pip[name]
    return labels


def _label_line(labels: dict[str, str]) -> str:
    return "\n# appended by wasmforge/images.py\nLABEL " + " \\\n      ".join(
        f"{k}={json.dumps(v)}" for k, v in sorted(labels.items())) + "\n"


def image_versions(image) -> dict[str, str]:
    """The io.wasmforge.* labels without the prefix (tool versions, inputs hash)."""
    labels = image.labels or {}
    return {k[len(LABEL_PREFIX):]: v for k, v in sorted(labels.items()) if k.startswith(LABEL_PREFIX)}


def ensure_builder(client, console: Console | None = None, *, rebuild: bool = False,
                   no_cache: bool = False, base_image: str | None = None):
    return _ensure_image("builder", client, console, rebuild, no_cache, base_image)


def ensure_smoke(client, console: Console | None = None, *, rebuild: bool = False,
                 no_cache: bool = False, base_image: str | None = None):
    return _ensure_image("smoke", client, console, rebuild, no_cache, base_image)


def _ensure_image(kind, client, console, rebuild, no_cache, base_image):
    console, pins = _console(console), load_pins()
    base_ref = ensure_base(client, console, base_image=base_image, pins=pins)
    tag = image_tag(kind, pins, base_fingerprint(client.images.get(base_ref)))
    if not (rebuild or no_cache) and (image := _local_image(client, tag)) is not None:
        return image
    spec = pins[kind]
    wheels = _download_wheels(ROOT / spec["requirements"], console)
    with tempfile.TemporaryDirectory(prefix=f".context-{kind}-", dir=CACHE) as ctx:
        ctx = Path(ctx)
        # Labels go in as one appended LABEL line: docker-py's `labels=` makes the
        # classic builder add one slow commit step per label.
        (ctx / "Dockerfile").write_text((ROOT / spec["dockerfile"]).read_text() + _label_line(
            labels_for(kind, pins, base_ref, tag.split(":", 1)[1])))
        shutil.copy(ROOT / spec["requirements"], ctx / "requirements.txt")
        (ctx / "wheels").mkdir()
        for whl in wheels.glob("*.whl"):
            _link_or_copy(whl, ctx / "wheels" / whl.name)
        console.print(f"building {tag} (base {base_ref})")
        stream = client.api.build(
            path=str(ctx), tag=tag, rm=True, forcerm=True, nocache=no_cache, pull=False,
            # apt-get needs the package mirror: use the host's network path to it
            # (the default bridge happened to work here too, but needn't elsewhere).
            network_mode="host",
            buildargs={
                "BASE": base_ref,
                "APT_PACKAGES": " ".join(f"{n}={v}" for n, v in spec["apt"].items()),
                "PIP_APT_PACKAGES": " ".join(f"{n}={v}" for n, v in spec["pydeps_apt"].items()),
                "SOURCE_DATE_EPOCH": str(pins["base"]["source_date_epoch"]),
            },
            decode=True)
        _follow_build(stream, console, tag, CACHE / "logs" / f"{kind}-{tag.split(':', 1)[1]}.log")
    return client.images.get(tag)


def _download_wheels(requirements: Path, console: Console) -> Path:
    """The lock's wheels, fetched by the host's pip (which trusts the host CA),
    cached per lock-file content. Only the wheels, never a pip config or CA, go
    into the build context."""
    dest = CACHE / "wheels" / f"cp{WHEEL_PYTHON.replace('.', '')}-{_short_hash(requirements.read_bytes())}"
    if (dest / ".complete").exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps",
           "--require-hashes", "--python-version", WHEEL_PYTHON, "--implementation", "cp",
           "--progress-bar", "off", "-d", str(dest), "-r", str(requirements)]
    for plat in WHEEL_PLATFORMS:
        cmd += ["--platform", plat]
    t0 = time.monotonic()
    with console.status(f"downloading wheels for {requirements.name}"):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise UserError(f"pip download for {requirements.name} failed:\n{tail}", exit_code=1)
    (dest / ".complete").touch()
    console.print(f"wheels for {requirements.name}: {time.monotonic() - t0:.1f}s")
    return dest


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the classic builder colours RUN's stderr
NOISE = re.compile(r"^ ---> |^Removing intermediate container ")


def _follow_build(stream, console: Console, tag: str, log_path: Path) -> None:
    """Show the running step, print each finished one with its duration, keep the
    full log on disk; turn a failure into a UserError naming the step, with the
    last log lines."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    step, started, t_build = None, time.monotonic(), time.monotonic()

    def finish_step():
        if step:
            console.print(f"  [dim]{time.monotonic() - started:6.1f}s[/]  {escape(step)}", highlight=False)

    with open(log_path, "w") as log, console.status(f"building {tag}") as status:
        for chunk in stream:
            if "error" in chunk:
                err = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                log.write(err + "\n")
                err = re.sub(r"(?s)^The command .* returned", "the command returned", err.strip())
                tail = "\n".join(lines[-20:])
                hint = ("\n(an apt pin in wasmforge/resources/pins.toml may be gone from the mirror after a "
                        "Debian point release: re-read it with apt-cache policy)"
                        if re.search(r"Version '.*' for '.*' was not found", tail) else "")
                raise UserError(f"docker build of {tag} failed at {step or 'start'}: {err}\n"
                                f"{tail}{hint}\n(full log: {log_path})", exit_code=1)
            text = chunk.get("stream")
            if not text:
                continue
            log.write(text)
            for line in ANSI.sub("", text).splitlines():
                if m := STEP.match(line):
                    finish_step()
                    instr = m[3] if len(m[3]) <= 90 else m[3][:87] + "..."
                    step, started = f"step {m[1]}/{m[2]}: {instr}", time.monotonic()
                    status.update(escape(step))
                elif line.strip() and not NOISE.match(line):
                    lines.append(line)
        finish_step()
    console.print(f"built {tag} in {time.monotonic() - t_build:.1f}s")
