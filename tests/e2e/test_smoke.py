"""`wasmforge.smoke` on a real dist/lenet-digits/ (built once in Docker by
`built_artifact` if it is missing), on the host and in the real, locked-down
container started with `smoke_host.container_settings`, the settings `invoke
smoke` uses. Artifacts are copied to tmp_path before any tampering.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.cli import invoke
from tests.test_smoke import MODEL, TAMPERED, flip_byte, reseal, table_rows
from wasmforge import smoke, smoke_host
from wasmforge.errors import UserError

pytestmark = pytest.mark.e2e


@pytest.fixture
def lenet(built_artifact, tmp_path):
    """A private copy of the real dist/lenet-digits/, free to tamper with."""
    return shutil.copytree(built_artifact(MODEL), tmp_path / MODEL)


# --- the runner on the host ---------------------------------------------------------


def test_good_artifact_passes(lenet, capsys):
    assert smoke.main([str(lenet)]) == 0
    out, err = capsys.readouterr()
    rows = table_rows(out)
    assert [r[:2] for r in rows] == [["0", "pass"], ["1", "pass"], ["2", "pass"]]
    assert all(r[4] == "same" for r in rows)
    assert f"{MODEL}: all 3 reference cases pass" in out and err == ""


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


# --- the real container ------------------------------------------------------------------
# (The `client` and `smoke_image` fixtures are in conftest.py.)


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


def test_container_passes_the_good_artifact(client, smoke_image, lenet):
    result = smoke_host.run_container(client, smoke_image, lenet, smoke_host.SMOKE_COMMAND)
    text = "\n".join(result.lines)
    assert result.exit_code == 0, text
    assert [r[:2] for r in table_rows(text)] == [["0", "pass"], ["1", "pass"], ["2", "pass"]]
    assert not client.containers.list(all=True, filters={"label": "io.wasmforge.step=smoke"})


@pytest.mark.parametrize("name", TAMPERED)
def test_container_refuses_a_tampered_artifact(client, smoke_image, lenet, name):
    flip_byte(lenet / name)
    result = smoke_host.run_container(client, smoke_image, lenet, smoke_host.SMOKE_COMMAND)
    assert result.exit_code == smoke.EXIT_REFUSED
    assert result.lines == [f"error: artifact refused: {name} does not match its sha256 in SHA256SUMS"]


def test_smoke_task_passes_and_a_tampered_artifact_is_a_user_error(client, smoke_image, lenet):
    code, out, err = invoke("smoke", "--model", MODEL)
    assert code == 0, err
    assert len(table_rows(out)) == 3 and "smoke passed" in err

    flip_byte(lenet / f"{MODEL}.wasm")
    with pytest.raises(UserError, match=f"refused: {MODEL}.wasm does not match") as e:
        smoke_host.smoke(MODEL, dist=lenet.parent)
    assert e.value.exit_code == 2


def test_smoke_builds_a_missing_artifact_first(client, smoke_image, tmp_path, capsys):
    dist = tmp_path / "dist"  # empty: nothing in the real dist/ is touched
    smoke_host.smoke(MODEL, dist=dist)
    assert (dist / MODEL / "SHA256SUMS").is_file()
    assert [r[:2] for r in table_rows(capsys.readouterr().out)] == [["0", "pass"], ["1", "pass"], ["2", "pass"]]


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


# --- deadlines, exercised (not only read from the settings) ---------------------------


def test_in_the_container_a_blocked_module_stops_at_the_time_limit(client, smoke_image, tmp_path):
    """The runner's wall clock inside the locked-down container (pids and /tmp limits
    included): a module sleeping in poll_oneoff fails its case within the limit + 1 s."""
    from tests.wasm_modules import SLEEPER, identity_artifact

    artifact = identity_artifact(tmp_path / "dist", wat=SLEEPER)
    for path in [artifact, *artifact.rglob("*")]:  # the container's user is uid 1000
        path.chmod(0o755 if path.is_dir() else 0o644)
    command = [*smoke_host.SMOKE_COMMAND, "--time-limit", "2"]
    result = smoke_host.run_container(client, smoke_image, artifact, command)
    assert result.exit_code == smoke.EXIT_FAILED, result.lines
    rows = [ln.split() for ln in result.lines if ln.split() and ln.split()[0].isdigit()]
    assert rows[0][1] == "FAIL" and "time limit exceeded (2 s)" in " ".join(rows[0]), result.lines
    assert not result.timed_out


def test_the_container_is_killed_at_its_own_wall_clock_limit(client, smoke_image, lenet):
    import dataclasses
    import time

    from wasmforge.container import smoke_profile

    profile = dataclasses.replace(smoke_profile(), wall_limit=3.0)
    started = time.monotonic()
    result = smoke_host.run_container(client, smoke_image, lenet,
                                      [smoke_host.PYTHON, "-c", "import time; time.sleep(600)"], profile=profile)
    assert result.timed_out and result.exit_code != 0
    assert time.monotonic() - started < 30
    assert smoke_host.failure_message(result, profile.wall_limit) == \
        "smoke container killed: it ran past its wall-clock limit of 3 s"
