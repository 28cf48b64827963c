"""Reading and writing `.npy` / `.npz` files that may be hostile or wrong.

Every header is checked (magic, dtype, shape, size against what is expected
and against the bytes really there) before any data is read or allocated, so
a file that claims 2^40 elements costs nothing. `.npz` members are checked
from the zip directory and their `.npy` header before a byte of data is
decompressed; members nobody asked for are never read. Errors are one line
naming the caller's `label` (the user's own path). `.npz` output is written
member by member, the names as data (any name works).

numpy and the standard library only (the smoke image uses this).
"""

from __future__ import annotations

import io
import math
import zipfile
import zlib
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np

HEADER_LIMIT = 64 << 10  # bytes of .npy header we read at most (numpy's own default is 10000)
NPZ_MEMBER_LIMIT = 4096  # entries in an .npz directory


class NpyError(ValueError):
    """A file that is not what it should be; the message is one line naming it."""


def _read_header(handle: BinaryIO, label: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(handle)
    except ValueError:
        raise NpyError(f"{label} is not a .npy file (no NPY magic string)") from None
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise NpyError(f"{label} is not a .npy file numpy writes (format version {version[0]}.{version[1]})")
    try:
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(handle, max_header_size=HEADER_LIMIT)
        else:  # 2.0, and 3.0: the 2.0 layout with a UTF-8 header (numbers are ASCII)
            shape, fortran, dtype = fmt.read_array_header_2_0(handle, max_header_size=HEADER_LIMIT)
    except (ValueError, SyntaxError, TypeError, EOFError, UnicodeDecodeError):
        raise NpyError(f"{label} is not a .npy file (its header is malformed)") from None
    if dtype.hasobject:
        raise NpyError(f"{label} holds Python objects, not numbers (refused: loading it would "
                       "unpickle code)")
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biuf":
        raise NpyError(f"{label} has dtype {dtype}, not a plain numeric dtype")
    return tuple(shape), bool(fortran), dtype


def describe(shape: Sequence[int], dtype) -> str:
    return f"{np.dtype(dtype).name} {tuple(shape)}"


def read_npy_from(handle: BinaryIO, *, label: str, shape: tuple[int, ...] | None = None,
                  dtype: str | None = None, max_bytes: int, available: int | None = None,
                  what: str = "") -> np.ndarray:
    """One array from `handle`, positioned at a .npy header. `shape`/`dtype`: what it must be
    (checked before reading data); `available`: bytes left in the source, if known."""
    start = handle.tell() if available is not None else 0
    got_shape, fortran, got_dtype = _read_header(handle, label)
    for_what = f" ({what})" if what else ""
    if shape is not None and (got_shape != tuple(shape) or
                              (dtype is not None and got_dtype.newbyteorder("=") != np.dtype(dtype))):
        raise NpyError(f"{label} holds {describe(got_shape, got_dtype)}, expected "
                       f"{describe(shape, dtype or got_dtype)}{for_what}")
    if dtype is not None and got_dtype.newbyteorder("=") != np.dtype(dtype):
        raise NpyError(f"{label} holds {got_dtype.name}, expected {np.dtype(dtype).name}{for_what}")
    nbytes = math.prod(got_shape) * got_dtype.itemsize
    if nbytes > max_bytes:
        raise NpyError(f"{label} declares {nbytes} bytes of data, more than the limit of {max_bytes}")
    if available is not None and available - (handle.tell() - start) < nbytes:
        raise NpyError(f"{label} is truncated: its header declares {nbytes} bytes of data")
    buffer = bytearray(nbytes)
    view, filled = memoryview(buffer), 0
    while filled < nbytes:
        count = handle.readinto(view[filled:])
        if not count:
            raise NpyError(f"{label} is truncated: its header declares {nbytes} bytes of data")
        filled += count
    array = np.frombuffer(buffer, dtype=got_dtype)
    if fortran:
        array = array.reshape(got_shape[::-1]).T
    else:
        array = array.reshape(got_shape)
    # The module reads C order, little-endian: made so here, whatever the file had.
    # (not np.ascontiguousarray: it turns a 0-d array, a scalar output, into shape (1,))
    return array.astype(got_dtype.newbyteorder("<"), order="C", copy=False)


def read_npy(path, *, label: str, shape=None, dtype=None, max_bytes: int, what: str = "") -> np.ndarray:
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, io.SEEK_END)
            handle.seek(0)
            return read_npy_from(handle, label=label, shape=shape, dtype=dtype, max_bytes=max_bytes,
                                 available=size, what=what)
    except FileNotFoundError:
        raise NpyError(f"no such file: {label}") from None
    except IsADirectoryError:
        raise NpyError(f"{label} is a directory, not a .npy file") from None
    except OSError as exc:
        raise NpyError(f"cannot read {label}: {exc.strerror or exc}") from None


def read_npz(path, specs: Sequence, *, label: str, max_bytes: int) -> list[np.ndarray]:
    """The arrays named by `specs` (records with name, dtype, shape), in order. Each member's
    declared size and header are checked before its data is decompressed; other members are
    not read; the total is capped at `max_bytes`."""
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise NpyError(f"no such file: {label}") from None
    except IsADirectoryError:
        raise NpyError(f"{label} is a directory, not a .npz file") from None
    except (zipfile.BadZipFile, ValueError, EOFError):
        raise NpyError(f"{label} is not a .npz file (not a readable zip archive)") from None
    except OSError as exc:
        raise NpyError(f"cannot read {label}: {exc.strerror or exc}") from None
    with archive:
        members = archive.infolist()
        if len(members) > NPZ_MEMBER_LIMIT:
            raise NpyError(f"{label} has {len(members)} members, more than {NPZ_MEMBER_LIMIT}")
        by_name = {}
        for info in members:
            key = info.filename.removesuffix(".npy")
            by_name.setdefault(key, info)
        missing = [s.name for s in specs if s.name not in by_name]
        if missing:
            raise NpyError(f"{label} has no array named {', '.join(missing)}")
        total = 0
        arrays = []
        for spec in specs:
            info = by_name[spec.name]
            expected = math.prod(spec.shape) * np.dtype(spec.dtype).itemsize
            where = f"{label}[{spec.name}]"
            # The zip directory's sizes bound what decompression may produce.
            if info.file_size > expected + HEADER_LIMIT + 16:
                raise NpyError(f"{where} declares {info.file_size} bytes, but the model's input "
                               f"{spec.name!r} is {describe(spec.shape, spec.dtype)} ({expected} bytes)")
            total += expected
            if total > max_bytes:
                raise NpyError(f"{label}: the inputs add up to more than {max_bytes} bytes")
            try:
                with archive.open(info) as member:
                    arrays.append(read_npy_from(
                        _Counted(member), label=where, shape=tuple(spec.shape), dtype=spec.dtype,
                        max_bytes=expected, available=info.file_size, what=f"the model's input {spec.name!r}"))
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
                raise NpyError(f"{where} cannot be decompressed ({str(exc).strip() or type(exc).__name__})") \
                    from None
        return arrays


class _Counted(io.RawIOBase):
    """A zip member as a stream that knows its position (zipfile's lacks `tell` when compressed)."""

    def __init__(self, member):
        self.member, self.position = member, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.member.read(len(buffer))
        buffer[:len(data)] = data
        self.position += len(data)
        return len(data)

    def read(self, size=-1) -> bytes:
        data = self.member.read(size)
        self.position += len(data)
        return data

    def tell(self) -> int:
        return self.position


def write_npy(handle: BinaryIO, array: np.ndarray) -> None:
    np.lib.format.write_array(handle, np.asarray(array), allow_pickle=False)


def write_npz(handle: BinaryIO, named: Sequence[tuple[str, np.ndarray]]) -> None:
    """An .npz (`np.load` reads it) of `named` arrays; each name is a member's name, as data."""
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in named:
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
