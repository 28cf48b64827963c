"""The git checkout wasmforge runs from, as attestations and image labels name it.

Nothing host-specific leaves this module: the source is named by a canonical
remote URL when `origin` is a real remote (userinfo, query and fragment
stripped; scp-like `git@host:path` becomes `ssh://host/path`), never by a local
path, and always by content: the commit and its tree hash. A checkout whose
origin is a directory, or that has no origin, is named by content alone.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .paths import ROOT

# Schemes that name a place on another machine; file:// and bare paths do not.
REMOTE_SCHEMES = {"https", "http", "ssh", "git", "git+ssh", "ssh+git"}
_SCP_LIKE = re.compile(r"^(?:[^@/:]+@)?(?P<host>[A-Za-z0-9.-]+):(?P<path>(?!//)[^\\].*)$")


@dataclass(frozen=True)
class SourceState:
    commit: str | None  # HEAD, None outside a git checkout
    tree: str | None  # HEAD^{tree}
    dirty: bool  # the work tree differs from HEAD (or there is no git to say)
    remote: str | None  # canonical origin URL, None for local paths or no origin


def canonical_remote(url: str | None) -> str | None:
    """`origin` as a URL fit to publish, or None if it names a local path."""
    if not url:
        return None
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme:
        scheme = parts.scheme.lower()
        if scheme not in REMOTE_SCHEMES or not parts.hostname:
            return None  # file://, or a Windows drive letter read as a scheme
        host = parts.hostname.lower() + (f":{parts.port}" if parts.port else "")
        return urlunsplit((scheme, host, parts.path, "", ""))
    match = _SCP_LIKE.match(url)
    if match and "/" not in url.split(":", 1)[0]:  # `host:path`; `./a:b` is a path
        return f"ssh://{match['host'].lower()}/{match['path'].lstrip('/')}"
    return None  # a path: /srv/git/x.git, ../x, x


def git(root: Path, *args: str) -> str | None:
    # GIT_OPTIONAL_LOCKS=0: `git status` must not rewrite the index of a tree being built.
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=False, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def state(root: Path = ROOT) -> SourceState:
    commit = git(root, "rev-parse", "--verify", "HEAD^{commit}")
    tree = git(root, "rev-parse", "--verify", "HEAD^{tree}") if commit else None
    dirty = git(root, "status", "--porcelain") != ""  # None (no git) counts as dirty too
    return SourceState(commit, tree, dirty, canonical_remote(git(root, "remote", "get-url", "origin")))


def tree_of(commit: str, root: Path = ROOT) -> str | None:
    """The tree hash of `commit` in this checkout, None if the checkout lacks it."""
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit):
        return None
    return git(root, "rev-parse", "--verify", "--quiet", f"{commit}^{{tree}}")


def relative_argument(arg: str, root: Path = ROOT, cwd: Path | None = None) -> str:
    """One command-line argument without host paths: a path inside the checkout
    becomes relative to it; an existing file outside becomes `sha256:<hex>` of its
    bytes; any other absolute or outside path becomes `<path outside the checkout>`.
    `--opt=VALUE` and `NAME=VALUE` (as `--freeze` takes) are handled on VALUE."""
    from .hashing import sha256_file

    if arg.startswith("--") and "=" in arg:
        key, value = arg.split("=", 1)
        return f"{key}={relative_argument(value, root, cwd)}"
    if not arg.startswith("-") and "=" in arg and "/" not in arg.split("=", 1)[0]:
        key, value = arg.split("=", 1)
        return f"{key}={relative_argument(value, root, cwd)}"
    looks_like_path = "/" in arg or arg.startswith("~") or (arg.endswith((".onnx", ".npy", ".npz", ".pem", ".key")))
    if not looks_like_path:
        return arg
    path = (cwd or Path.cwd()) / Path(arg).expanduser()
    resolved = path.resolve()
    root = root.resolve()
    if resolved == root or root in resolved.parents:
        return resolved.relative_to(root).as_posix() or "."
    if resolved.is_file():
        try:
            return "sha256:" + sha256_file(resolved)
        except OSError:
            pass
    if Path(arg).is_absolute() or arg.startswith(("~", "..")) or resolved.exists():
        return "<path outside the checkout>"
    return arg  # a relative name that does not exist (e.g. a typo): not a host path
