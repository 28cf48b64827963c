"""SHA-256 of files and bytes: the one way wasmforge pins and checks content."""

import hashlib
from pathlib import Path

# 1 MiB reads keep memory flat for 100 MB models without slowing small files.
_CHUNK_BYTES = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of an in-memory byte string."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file, read in chunks so large models never sit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
