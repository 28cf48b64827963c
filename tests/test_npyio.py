"""Hostile and wrong .npy/.npz files: one line naming the file, checked before any data is
read; .npz written with names as data."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from wasmforge.artifact import TensorRecord
from wasmforge.npyio import NpyError, read_npy, read_npz, write_npz
from wasmforge.paths import ROOT

SPEC = [TensorRecord("input", "float32", (1, 1, 8, 8))]
LIMIT = 1 << 30


def npy_header(shape, descr="<f4") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


@pytest.mark.parametrize("content, message", [
    (b"hello world", r"^x\.npy is not a \.npy file \(no NPY magic string\)$"),
    (b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}    ", r"^x\.npy is not a \.npy file \(its header is malformed\)$"),
    (b"\x93NUMPY garbage", r"^x\.npy is not a \.npy file numpy writes \(format version 32\.103\)$"),
    (b"\x93NUMPY\x03\x00\x10\x00\x00\x00\xff\xfe", r"^x\.npy is not a \.npy file \(its header is malformed\)$"),
    (npy_header((1, 1, 8, 8)) + b"\0" * 10, r"^x\.npy is truncated: its header declares 256 bytes of data$"),
    (npy_header((1 << 40,)), r"^x\.npy holds float32 \(1099511627776,\), expected float32 \(1, 1, 8, 8\)"),
    (npy_header((1, 1, 8, 8), "<f8") + b"\0" * 512, r"^x\.npy holds float64 \(1, 1, 8, 8\), expected float32"),
])
def test_bad_npy_is_one_line_naming_the_file(tmp_path, content, message):
    (tmp_path / "x.npy").write_bytes(content)
    with pytest.raises(NpyError, match=message):
        read_npy(tmp_path / "x.npy", label="x.npy", shape=(1, 1, 8, 8), dtype="float32", max_bytes=LIMIT)


def test_pickled_objects_are_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(NpyError, match=r"^o\.npy holds Python objects, not numbers"):
        read_npy(tmp_path / "o.npy", label="o.npy", max_bytes=LIMIT)


def test_fortran_order_and_big_endian_are_read_as_c_order_little_endian(tmp_path):
    x = np.arange(64, dtype=np.float32).reshape(1, 1, 8, 8)
    np.save(tmp_path / "f.npy", np.asfortranarray(x))
    np.save(tmp_path / "b.npy", x.astype(">f4"))
    for name in ("f.npy", "b.npy"):
        got = read_npy(tmp_path / name, label=name, shape=(1, 1, 8, 8), dtype="float32", max_bytes=LIMIT)
        assert got.flags.c_contiguous and got.dtype == np.dtype("<f4")
        np.testing.assert_array_equal(got, x)


def test_npz_members_are_checked_before_decompressing(tmp_path):
    x = np.ones((1, 1, 8, 8), np.float32)
    np.savez(tmp_path / "ok.npz", input=x, unused=np.zeros(3))
    np.testing.assert_array_equal(read_npz(tmp_path / "ok.npz", SPEC, label="ok.npz", max_bytes=LIMIT)[0], x)
    np.savez(tmp_path / "wrong.npz", input=np.ones((512, 512), np.float32))
    with pytest.raises(NpyError, match=r"^wrong\.npz\[input\] declares \d+ bytes, but the model's input "
                                       r"'input' is float32 \(1, 1, 8, 8\) \(256 bytes\)$"):
        read_npz(tmp_path / "wrong.npz", SPEC, label="wrong.npz", max_bytes=LIMIT)
    np.savez(tmp_path / "lying.npz", input=np.ones((8, 8), np.float32))  # same size, other shape
    with pytest.raises(NpyError, match=r"^lying\.npz\[input\] holds float32 \(8, 8\), expected"):
        read_npz(tmp_path / "lying.npz", SPEC, label="lying.npz", max_bytes=LIMIT)
    np.savez(tmp_path / "none.npz", other=x)
    with pytest.raises(NpyError, match=r"^none\.npz has no array named input$"):
        read_npz(tmp_path / "none.npz", SPEC, label="none.npz", max_bytes=LIMIT)
    (tmp_path / "junk.npz").write_bytes(b"PK not really")
    with pytest.raises(NpyError, match=r"^junk\.npz is not a \.npz file"):
        read_npz(tmp_path / "junk.npz", SPEC, label="junk.npz", max_bytes=LIMIT)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """A ~1 MB .npz: `small` is a good (1, 1, 8, 8) float32; `input` declares 2^28 float32
    (1 GiB) and holds them (zeros, deflated)."""
    path = tmp_path_factory.mktemp("npz") / "bomb.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("small.npy", "w") as handle:
            np.lib.format.write_array(handle, np.ones((1, 1, 8, 8), np.float32))
        with archive.open("input.npy", "w", force_zip64=True) as handle:
            handle.write(npy_header((1 << 28,)))
            zeros = bytes(16 << 20)
            for _ in range((1 << 30) // len(zeros)):
                handle.write(zeros)
    assert path.stat().st_size < 3 << 20
    return path


def _read_in_a_fresh_process(path, input_name: str) -> tuple:
    """read_npz of one float32 (1, 1, 8, 8) input named `input_name`: (result, peak RSS bytes)."""
    code = f"""
import json
from pathlib import Path
from wasmforge.artifact import TensorRecord
from wasmforge.npyio import NpyError, read_npz
try:
    result = [a.shape for a in read_npz({str(path)!r}, [TensorRecord({input_name!r}, "float32", (1, 1, 8, 8))],
                                        label="in.npz", max_bytes=4 << 30)]
except NpyError as exc:
    result = str(exc)
hwm = next(int(ln.split()[1]) for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:"))
print(json.dumps([result, hwm * 1024]))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_an_npz_bomb_is_refused_under_100_mb(bomb):
    """The member declaring 1 GiB is refused from the zip directory's size: nothing decompressed."""
    message, peak = _read_in_a_fresh_process(bomb, "input")
    assert message == ("in.npz[input] declares 1073741952 bytes, but the model's input 'input' is "
                       "float32 (1, 1, 8, 8) (256 bytes)")
    assert peak < 100 << 20, peak


def test_an_unused_huge_member_is_not_read(bomb):
    shapes, peak = _read_in_a_fresh_process(bomb, "small")
    assert shapes == [[1, 1, 8, 8]]
    assert peak < 100 << 20, peak


@pytest.mark.parametrize("names", [("file", "allow_pickle"), ("a/b", "x y"), ("allow_pickle",)])
def test_npz_output_names_are_data(tmp_path, names):
    arrays = [np.full((2,), i, np.float32) for i in range(len(names))]
    with open(tmp_path / "o.npz", "wb") as handle:
        write_npz(handle, list(zip(names, arrays)))
    with np.load(tmp_path / "o.npz") as loaded:
        assert sorted(loaded.files) == sorted(names)
        for name, array in zip(names, arrays):
            np.testing.assert_array_equal(loaded[name], array)


@pytest.mark.parametrize("value", [np.float32(2.5), np.array(7, dtype=">i8")])
def test_a_scalar_stays_a_scalar(tmp_path, value):
    """A 0-d array (a model's scalar output) keeps shape (), also from big-endian data."""
    np.save(tmp_path / "s.npy", np.asarray(value))
    array = read_npy(tmp_path / "s.npy", label="s.npy", max_bytes=LIMIT)
    assert array.shape == () and array == value and array.dtype.byteorder in ("<", "=", "|")
