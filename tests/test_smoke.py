"""The smoke test: `wasmforge.smoke` (the in-container runner) on the host, and
`invoke smoke` in the real, locked-down container.

The host tests run the runner as plain Python on a copy of dist/lenet-digits/
(built once in Docker by `built_artifact` if it is missing). The `docker` tests
start the smoke image with `smoke_host.container_settings`, the same settings
`invoke smoke` uses. Artifacts are copied to tmp_path before any tampering.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from wasmforge import artifact, smoke, smoke_host
from wasmforge.errors import UserError
from wasmforge.paths import ROOT

MODEL = "lenet-digits"
TAMPERED = [f"{MODEL}.wasm", "reference/case1/output0.npy", "manifest.json"]


@pytest.fixture
def lenet(built_artifact, tmp_path):
    """A private copy of dist/lenet-digits/, free to tamper with."""
    return shutil.copytree(built_artifact(MODEL), tmp_path / MODEL)


def flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def reseal(directory):
    """Rewrite the manifest's file list and SHA256SUMS, as a build would have."""
    manifest = artifact.load_manifest(directory)
    (directory / "manifest.json").unlink()
    files = {n: artifact.FileRecord.of(directory / n) for n in artifact.artifact_files(directory)}
    dataclasses.replace(manifest, files=files).write(directory)
    artifact.write_sums(directory)


def table_rows(text):
    return [ln.split() for ln in text.splitlines() if ln.split() and ln.split()[0].isdigit()]


# --- the runner on the host ---------------------------------------------------------


def test_good_artifact_passes(lenet, capsys):
    assert smoke.main([str(lenet)]) == 0
    out, err = capsys.readouterr()
    rows = table_rows(out)
    assert [r[:2] for r in rows] == [["0", "pass"], ["1", "pass"], ["2", "pass"]]
    assert all(r[4] == "same" for r in rows)
    assert f"{MODEL}: all 3 reference cases pass" in out and err == ""


@pytest.mark.parametrize("name", TAMPERED)
def test_tampered_artifact_is_refused_before_anything_runs(lenet, capsys, monkeypatch, name):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the runner loaded the module or reference data of a tampered artifact")

    monkeypatch.setattr(smoke, "WasmModel", must_not_run)
    monkeypatch.setattr(smoke, "load_case", must_not_run)
    flip_byte(lenet / name)
    assert smoke.main([str(lenet)]) == smoke.EXIT_REFUSED
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"error: artifact refused: {name} does not match its sha256 in SHA256SUMS"]


def test_rewritten_sums_do_not_hide_a_changed_module(lenet, capsys, monkeypatch):
    monkeypatch.setattr(smoke, "WasmModel", None)  # calling it would fail the test
    flip_byte(lenet / f"{MODEL}.wasm")
    artifact.write_sums(lenet)
    assert smoke.main([str(lenet)]) == smoke.EXIT_REFUSED
    assert f"{MODEL}.wasm does not match its sha256 in manifest.json" in capsys.readouterr().err


def test_a_wrong_reference_output_fails_its_case(lenet, capsys):
    path = lenet / "reference" / "case1" / "output0.npy"
    np.save(path, -np.load(path))  # far off and a different top-1
    reseal(lenet)  # consistent hashes: the comparison itself must catch it
    assert smoke.main([str(lenet)]) == smoke.EXIT_FAILED
    out, err = capsys.readouterr()
    assert [r[:2] for r in table_rows(out)] == [["0", "pass"], ["1", "FAIL"], ["2", "pass"]]
    assert table_rows(out)[1][4] == "DIFF"
    assert err.splitlines() == [f"error: {MODEL}: 1 of 3 reference cases failed"]


@pytest.mark.parametrize("limit, message", [(["--memory-limit-mib", "1"], "memory limit exceeded"),
                                            (["--time-limit", "0.000001"], "time limit exceeded")])
def test_limits_fail_every_case(lenet, capsys, limit, message):
    assert smoke.main([str(lenet), *limit]) == smoke.EXIT_FAILED
    out, _ = capsys.readouterr()
    rows = table_rows(out)
    assert len(rows) == 3 and all(r[1] == "FAIL" for r in rows)
    assert all(message in line for line in out.splitlines() if line.split()[0].isdigit())


def test_runner_imports_only_stdlib_numpy_and_wasmtime():
    """What the smoke image has; rich, docker or onnx would fail there."""
    script = ("import sys; before = set(sys.modules); import wasmforge.smoke; "
              "import json; print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before}"
              " - set(sys.stdlib_module_names))))")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert set(json.loads(out.stdout)) <= {"wasmforge", "numpy", "wasmtime"}, out.stdout


def test_container_settings_are_locked_down(tmp_path):
    settings = smoke_host.container_settings(tmp_path)
    assert settings["network_mode"] == "none" and settings["read_only"] is True
    assert settings["user"] not in ("root", "0") and settings["cap_drop"] == ["ALL"]
    assert settings["security_opt"] == ["no-new-privileges"]
    assert settings["mem_limit"] == settings["memswap_limit"] and settings["nano_cpus"] and settings["pids_limit"]
    assert {v["mode"] for v in settings["volumes"].values()} == {"ro"}
    assert list(settings["tmpfs"]) == ["/tmp"]


# --- the real container ------------------------------------------------------------------
# (The `client` and `smoke_image` fixtures are in conftest.py.)


@pytest.mark.docker
def test_container_passes_the_good_artifact(client, smoke_image, lenet):
    result = smoke_host.run_container(client, smoke_image, lenet, smoke_host.SMOKE_COMMAND)
    text = "\n".join(result.lines)
    assert result.exit_code == 0, text
    assert [r[:2] for r in table_rows(text)] == [["0", "pass"], ["1", "pass"], ["2", "pass"]]
    assert not client.containers.list(all=True, filters={"label": "io.wasmforge.step=smoke"})


@pytest.mark.docker
@pytest.mark.parametrize("name", TAMPERED)
def test_container_refuses_a_tampered_artifact(client, smoke_image, lenet, name):
    flip_byte(lenet / name)
    result = smoke_host.run_container(client, smoke_image, lenet, smoke_host.SMOKE_COMMAND)
    assert result.exit_code == smoke.EXIT_REFUSED
    assert result.lines == [f"error: artifact refused: {name} does not match its sha256 in SHA256SUMS"]


@pytest.mark.docker
def test_smoke_task_passes_and_a_tampered_artifact_is_a_user_error(client, smoke_image, lenet):
    proc = subprocess.run([sys.executable, "-m", "invoke", "smoke", "--model", MODEL], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stderr
    assert len(table_rows(proc.stdout)) == 3 and "smoke passed" in proc.stderr

    flip_byte(lenet / f"{MODEL}.wasm")
    with pytest.raises(UserError, match=f"refused: {MODEL}.wasm does not match") as e:
        smoke_host.smoke(MODEL, dist=lenet.parent)
    assert e.value.exit_code == 2



@pytest.mark.docker
def test_smoke_builds_a_missing_artifact_first(client, smoke_image, tmp_path, capsys):
    dist = tmp_path / "dist"  # empty: nothing in the real dist/ is touched
    smoke_host.smoke(MODEL, dist=dist)
    assert (dist / MODEL / "SHA256SUMS").is_file()
    assert [r[:2] for r in table_rows(capsys.readouterr().out)] == [["0", "pass"], ["1", "pass"], ["2", "pass"]]

# Run as `python -c` in the smoke container; prints one JSON line of findings.
PROBE = r"""
import errno, json, os, socket
def attempt(action):
    try:
        action()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc))
def write(path):
    return attempt(lambda: open(path, "w").close())
def first(*paths):
    for path in paths:
        if os.path.exists(path):
            return open(path).read().strip()
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
print(json.dumps({
    "uid": os.getuid(), "euid": os.geteuid(),
    "interfaces": sorted(os.listdir("/sys/class/net")),
    "connect": attempt(lambda: socket.create_connection(("1.1.1.1", 53), timeout=5).close()),
    "dns": attempt(lambda: socket.getaddrinfo("deb.debian.org", 80)),
    "writes": {p: write(p) for p in ("/etc/x", "/opt/x", "/x", "/home/smoke/x", "/artifact/x",
                                     "/opt/wasmforge/wasmforge/x", "/tmp/x")},
    "cap_eff": status["CapEff"].strip(), "no_new_privs": status["NoNewPrivs"].strip(),
    "pids_max": first("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"),
    "memory_max": first("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"),
}))
"""


@pytest.mark.docker
def test_container_is_locked_down(client, smoke_image, lenet):
    result = smoke_host.run_container(client, smoke_image, lenet, [smoke_host.PYTHON, "-c", PROBE])
    assert result.exit_code == 0, result.lines
    found = json.loads(result.lines[-1])
    assert found["uid"] != 0 and found["euid"] != 0
    assert found["interfaces"] == ["lo"]
    assert found["connect"] != "ok" and found["dns"] != "ok"
    writes = found["writes"]
    assert writes.pop("/tmp/x") == "ok"  # the one writable place
    assert writes == dict.fromkeys(writes, "EROFS")
    assert int(found["cap_eff"], 16) == 0 and found["no_new_privs"] == "1"
    assert found["pids_max"] == str(smoke_host.container_settings(lenet)["pids_limit"])
    assert int(found["memory_max"]) == 2 << 30
