"""Turn a registry entry into a local ONNX file whose sha256 matches its pin.

Downloaded and generated models live in `CACHE/models/<sha256>.onnx`. Files only ever
appear there by rename after their hash was checked, so a cache entry is either
complete and correct or absent; a crash mid-download leaves no half-written model
under the final name. Cached files are re-hashed on every use anyway (cheap next to a
compile) so a corrupted cache heals itself instead of producing a wrong binary.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from wasmforge import __version__, paths
from wasmforge.errors import UserError
from wasmforge.hashing import sha256_bytes, sha256_file
from wasmforge.registry import FileSource, GeneratorSource, ModelSpec, UrlSource
from wasmforge.terminal import make_console

# Offline machines must fail in seconds, not after the OS's multi-minute TCP timeout.
# urllib applies this to the connect and to each read, not to the whole transfer.
CONNECT_TIMEOUT_SECONDS = 10.0
_READ_CHUNK_BYTES = 1 << 20


def model_cache_dir() -> Path:
    """Where downloaded and generated models are kept (looked up at call time so tests can move it)."""
    return paths.CACHE / "models"


def model_path(spec: ModelSpec, *, cache_dir: Path | None = None,
               timeout: float = CONNECT_TIMEOUT_SECONDS) -> Path:
    """A local .onnx file for `spec` whose sha256 equals `spec.sha256`.

    url: downloaded once into the cache; generator: generated once into the cache;
    file: the committed file itself. Anything the user can fix raises UserError.
    """
    source = spec.source
    if isinstance(source, FileSource):
        return verify_pin(spec, source.absolute(), what="the committed file")

    cache_dir = model_cache_dir() if cache_dir is None else Path(cache_dir)
    cached = cache_dir / f"{spec.sha256}.onnx"
    if cached.is_file():
        if sha256_file(cached) == spec.sha256:
            return cached
        cached.unlink()  # damaged cache entry: fetch it again rather than fail
    cache_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(source, UrlSource):
        _download(spec, source.url, cached, timeout)
    elif isinstance(source, GeneratorSource):
        _generate(spec, source, cached)
    else:  # pragma: no cover - the registry only builds the three source kinds
        raise TypeError(f"unknown source {source!r}")
    return cached


def verify_pin(spec: ModelSpec, path: Path, *, what: str = "the file") -> Path:
    """Return `path` if its sha256 is `spec`'s pin (e.g. for a user-supplied --onnx PATH)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} for {spec.name} does not exist: {path}")
    actual = sha256_file(path)
    if actual != spec.sha256:
        hint = (" (the committed file changed: restore it or update the pin in models.toml)"
                if isinstance(spec.source, FileSource) else "")
        raise UserError(
            f"sha256 mismatch for {spec.name} in {path}: expected {spec.sha256}, got {actual}{hint}",
            exit_code=1,
        )
    return path


# --- url ------------------------------------------------------------------------------


def _download(spec: ModelSpec, url: str, destination: Path, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": f"wasmforge/{__version__}"})
    partial = _new_partial_file(destination)
    try:
        try:
            # No explicit SSL context: urllib's default verifies against the system CAs.
            response = urllib.request.urlopen(request, timeout=timeout)
        except (OSError, ValueError, http.client.HTTPException) as error:
            raise _cannot_download(spec, url, error, timeout) from None
        with response:
            actual = _stream_to_file(spec, url, response, partial, timeout)
        if actual != spec.sha256:
            raise UserError(
                f"sha256 mismatch for {spec.name} downloaded from {url}: "
                f"expected {spec.sha256}, got {actual}; nothing was cached",
                exit_code=1,
            )
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)


def _stream_to_file(spec: ModelSpec, url: str, response, partial: Path, timeout: float) -> str:
    """Copy the response body into `partial` with a progress bar; returns its sha256."""
    length_header = response.headers.get("Content-Length")
    total = int(length_header) if length_header and length_header.isdigit() else spec.size
    digest = hashlib.sha256()
    received = 0
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=make_console()) as progress, open(partial, "wb") as out:
        task = progress.add_task(f"downloading {spec.name}", total=total)
        try:
            while chunk := response.read(_READ_CHUNK_BYTES):
                received += len(chunk)
                # A wrong URL can serve anything; stop before it fills the disk.
                if spec.size is not None and received > spec.size:
                    raise UserError(
                        f"download of {spec.name} from {url} exceeds the pinned {spec.size} bytes; "
                        "the URL no longer serves the pinned file",
                        exit_code=1,
                    )
                digest.update(chunk)
                out.write(chunk)
                progress.update(task, advance=len(chunk))
        except (OSError, http.client.HTTPException) as error:
            raise _cannot_download(spec, url, error, timeout) from None
    return digest.hexdigest()


def _cannot_download(spec: ModelSpec, url: str, error: BaseException, timeout: float) -> UserError:
    return UserError(
        f"cannot download {spec.name} from {url} ({_reason(error, timeout)}); "
        "download it elsewhere and pass --onnx PATH",
        exit_code=1,
    )


def _reason(error: BaseException, timeout: float) -> str:
    """A short, single-line cause: 'Connection refused', 'HTTP 404 Not Found', ..."""
    if isinstance(error, urllib.error.HTTPError):
        text = f"HTTP {error.code} {error.reason}"
    else:
        if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
            error = error.reason
        if isinstance(error, TimeoutError):
            text = f"timed out after {timeout:g} s"
        elif isinstance(error, urllib.error.URLError):
            text = str(error.reason)
        elif isinstance(error, OSError) and error.strerror:
            text = error.strerror
        else:
            text = str(error) or type(error).__name__
    return " ".join(text.split())


# --- generator -----------------------------------------------------------------------


def _generate(spec: ModelSpec, source: GeneratorSource, destination: Path) -> None:
    module_name, _, function_name = source.entry.partition(":")
    try:
        build = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError):
        raise UserError(f"generator {source.entry} for {spec.name} does not exist", exit_code=1) from None
    with make_console().status(f"generating {spec.name}"):
        model = build(**source.kwargs())
        data = model if isinstance(model, bytes) else model.SerializeToString()
    actual = sha256_bytes(data)
    if actual != spec.sha256:
        raise UserError(
            f"sha256 mismatch for generated {spec.name} ({source.entry}): expected {spec.sha256}, "
            f"got {actual}; the generator, its arguments or numpy changed (update the pin in models.toml "
            "only if that was intended)",
            exit_code=1,
        )
    partial = _new_partial_file(destination)
    try:
        partial.write_bytes(data)
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)


def _new_partial_file(destination: Path) -> Path:
    """A unique temp file next to `destination`, so the final rename is atomic."""
    handle, name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.stem}.", suffix=".part")
    # mkstemp's 0600 would keep the cached model from an unprivileged builder
    # (it would then be mounted from a copy): the modes of any new file.
    mask = os.umask(0o022)
    os.umask(mask)
    os.fchmod(handle, 0o666 & ~mask)
    os.close(handle)
    return Path(name)
