"""`invoke run` without Docker, on a sealed artifact around a tiny WAT module that copies
its input to its output: output refusals, modes, stdin/stdout, .npz by name, errors that
name the user's own paths."""

from __future__ import annotations

import io
import os
import stat
import sys

import numpy as np
import pytest

from tests.cli import assert_one_line_error, invoke
from tests.wasm_modules import identity_artifact
from wasmforge import run as run_module
from wasmforge.errors import UserError
from wasmforge.run import run_artifact

X = np.arange(4, dtype=np.float32).reshape(1, 4)


@pytest.fixture
def dist(tmp_path):
    identity_artifact(tmp_path / "dist")
    return tmp_path / "dist"


@pytest.fixture
def x_npy(tmp_path):
    np.save(tmp_path / "x.npy", X)
    return tmp_path / "x.npy"


def run(dist, inputs, outputs, **kwargs):
    run_artifact("m", [str(p) for p in inputs], [str(p) for p in outputs], dist=dist, **kwargs)


def test_npy_in_npy_out_with_the_usual_mode(dist, x_npy, tmp_path):
    old = os.umask(0o022)
    try:
        run(dist, [x_npy], [tmp_path / "y.npy"])
    finally:
        os.umask(old)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), X)
    assert stat.S_IMODE((tmp_path / "y.npy").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


@pytest.mark.parametrize("name", ["file", "allow_pickle"])
def test_npz_outputs_keep_any_name(tmp_path, x_npy, name):
    dist = tmp_path / "d"
    identity_artifact(dist, output_name=name)
    run(dist, [x_npy], [tmp_path / "y.npz"])
    with np.load(tmp_path / "y.npz") as out:
        assert out.files == [name]
        np.testing.assert_array_equal(out[name], X)


def test_existing_files_are_kept_unless_overwrite(dist, x_npy, tmp_path):
    (tmp_path / "y.npy").write_bytes(b"precious")
    with pytest.raises(UserError, match=rf"^{tmp_path}/y\.npy exists; pass --overwrite to replace it$"):
        run(dist, [x_npy], [tmp_path / "y.npy"])
    assert (tmp_path / "y.npy").read_bytes() == b"precious"
    run(dist, [x_npy], [tmp_path / "y.npy"], overwrite=True)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), X)


def test_outputs_never_go_into_an_artifact_or_over_an_input(dist, x_npy, tmp_path):
    artifact = dist / "m"
    before = {p.name: p.read_bytes() for p in artifact.iterdir() if p.is_file()}
    for target, message in [
        (artifact / "m.wasm", "which holds artifacts only"),
        (artifact / "SHA256SUMS", "which holds artifacts only"),
        (artifact / "new.npy", "which holds artifacts only"),
        (artifact / "reference" / "case0" / "output0.npy", "which holds artifacts only"),
        (dist / "loose.npy", "which holds artifacts only"),
        (x_npy, "it is also an --input"),
    ]:
        with pytest.raises(UserError, match=message):
            run(dist, [x_npy], [target], overwrite=True)
    # An artifact directory anywhere (not under dist/) is recognised by its files.
    elsewhere = tmp_path / "copy"
    identity_artifact(elsewhere)
    with pytest.raises(UserError, match=r"is an artifact directory$"):
        run(dist, [x_npy], [elsewhere / "m" / "out.npy"])
    assert {p.name: p.read_bytes() for p in artifact.iterdir() if p.is_file()} == before
    np.testing.assert_array_equal(np.load(x_npy), X)


def test_no_directory_is_created(dist, x_npy, tmp_path):
    with pytest.raises(UserError, match=rf"^cannot write {tmp_path}/nope/o\.npy: no such directory "
                                        rf"{tmp_path}/nope \(create it first\)$"):
        run(dist, [x_npy], [tmp_path / "nope" / "o.npy"])
    assert not (tmp_path / "nope").exists()


def test_dash_is_stdin_and_stdout(dist, monkeypatch, capsysbinary):
    buffer = io.BytesIO()
    np.save(buffer, X)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(buffer.getvalue())))
    run(dist, ["-"], ["-"])
    out = capsysbinary.readouterr().out
    np.testing.assert_array_equal(np.load(io.BytesIO(out)), X)


def test_input_errors_name_the_users_file(dist, tmp_path):
    (tmp_path / "garbage.npy").write_bytes(b"not numpy at all")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "f64.npy", X.astype(np.float64))
    np.save(tmp_path / "fortran.npy", np.asfortranarray(np.ones((4, 1), np.float32)).T)  # (1, 4), F order
    cases = [
        ("garbage.npy", r"^{p}/garbage\.npy is not a \.npy file \(no NPY magic string\)$"),
        ("obj.npy", r"^{p}/obj\.npy holds Python objects, not numbers"),
        ("f64.npy", r"^{p}/f64\.npy holds float64 \(1, 4\), expected float32 \(1, 4\) \(the model's input 'x'\)$"),
        ("missing.npy", r"^no such file: {p}/missing\.npy$"),
    ]
    for name, pattern in cases:
        with pytest.raises(UserError, match=pattern.format(p=tmp_path)) as info:
            run(dist, [tmp_path / name], [tmp_path / "o.npy"])
        assert "/io/" not in str(info.value)
    run(dist, [tmp_path / "fortran.npy"], [tmp_path / "o.npy"])  # Fortran order is simply read
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), np.ones((1, 4), np.float32))


def test_invoke_run_errors_are_one_line(tmp_path, monkeypatch, x_npy):
    identity_artifact(tmp_path / "dist")
    monkeypatch.setattr(run_module, "DIST", tmp_path / "dist")
    code, _, err = invoke("run", "--model", "m", "--input", str(x_npy), "--output", str(tmp_path / "m-out.npy"))
    assert code == 0, err
    code, _, err = invoke("run", "--model", "m", "--input", str(x_npy), "--output", str(tmp_path / "m-out.npy"))
    assert_one_line_error(code, err, 2, "m-out.npy exists; pass --overwrite to replace it")
    code, _, err = invoke("run", "--model", "m", "--input", str(x_npy), "--output", str(tmp_path / "m-out.npy"),
                          "--overwrite")
    assert code == 0, err


def test_the_modules_own_errors_name_the_users_file(tmp_path, x_npy):
    from tests.wasm_modules import info_json, refusing_wat
    from wasmforge.errors import WasmRunError

    message = "error: /io/input0.npy: expected float32 [1, 4], got something else\n"
    identity_artifact(tmp_path / "dist", wat=refusing_wat(info_json("x", "y", (1, 4)), message))
    with pytest.raises(WasmRunError, match=rf"^{x_npy}: expected float32 \[1, 4\], got something else$") as info:
        run(tmp_path / "dist", [x_npy], [tmp_path / "o.npy"])
    assert info.value.exit_code == 2
    assert not (tmp_path / "o.npy").exists()


def test_invoke_run_stops_a_blocked_module_at_the_time_limit(tmp_path, x_npy, monkeypatch):
    import time

    from tests.wasm_modules import SLEEPER

    identity_artifact(tmp_path / "dist", wat=SLEEPER)
    monkeypatch.setattr(run_module, "DIST", tmp_path / "dist")
    started = time.monotonic()
    code, _, err = invoke("run", "--model", "m", "--input", str(x_npy), "--output", str(tmp_path / "o.npy"),
                          "--time-limit", "1")
    assert_one_line_error(code, err, 1, "time limit exceeded (1 s)")
    assert time.monotonic() - started < 1 + 1 + 1  # the limit, its grace, loading the module
    assert not (tmp_path / "o.npy").exists()


def test_dash_refuses_a_terminal(dist, x_npy, tmp_path, monkeypatch):
    class Terminal(io.TextIOWrapper):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Terminal(io.BytesIO()))
    with pytest.raises(UserError, match=r"^--output - writes binary \.npy data to stdout; redirect it"):
        run(dist, [x_npy], ["-"])
    monkeypatch.setattr(sys, "stdin", Terminal(io.BytesIO()))
    with pytest.raises(UserError, match=r"^--input - reads \.npy data from stdin; redirect a file"):
        run(dist, ["-"], [tmp_path / "o.npy"])
