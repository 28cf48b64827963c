"""wasmforge.container: one Container class; its output, results and failures (fake docker client)."""

from __future__ import annotations

import io
import os
from types import SimpleNamespace

import docker.errors
import pytest
from rich.console import Console

from wasmforge.compiler.request import JobResult
from wasmforge.container import Container, builder_profile, run_step
from wasmforge.errors import UserError


class FakeContainer:
    def __init__(self, client, chunks, code=0, vanish=False):
        self.client, self.chunks, self.code, self.vanish = client, chunks, code, vanish
        self.attrs = {"State": {"OOMKilled": False}}

    def start(self):
        pass

    def logs(self, **_):
        for chunk in self.chunks:
            yield chunk
        if self.vanish:
            raise docker.errors.NotFound("404 Client Error: No such container: abc")

    def wait(self):
        return {"StatusCode": self.code}

    def reload(self):
        pass

    def remove(self, force=False):
        self.client.removed += 1


class FakeClient:
    def __init__(self, chunks, code=0, vanish=False):
        self.created, self.removed = [], 0
        self.containers = SimpleNamespace(create=self._create)
        self._args = (chunks, code, vanish)

    def _create(self, image, command, **kwargs):
        self.created.append(kwargs)
        return FakeContainer(self, *self._args)


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def test_lines_are_split_across_chunks_and_the_container_is_removed():
    client = FakeClient([b"first li", b"ne\nsecond\xc3", b"\xa9 line\nlast"])
    with Container(client, "img", ["true"], profile=builder_profile(), title="t") as container:
        lines = list(container.lines())
    assert lines == ["first line", "second\u00e9 line", "last"]
    assert container.exit_code == 0 and client.removed == 1
    labels = client.created[0]["labels"]
    assert labels["io.wasmforge.step"] == "t" and labels["io.wasmforge.owner"].endswith(f":{os.getpid()}")
    assert client.created[0]["network_mode"] == "none"


def test_run_step_collects_results_apart_from_the_log():
    result = JobResult("m", graph={"calls": 3})
    client = FakeClient([b"==> graph\nplain\n", (result.line() + "\n").encode()])
    out = run_step(client, "img", ["x"], [], quiet(), title="builder")
    assert out.results == [result]
    assert out.lines == ["==> graph", "plain"]


def test_a_failing_step_raises_its_own_error_line():
    client = FakeClient([b"working\nerror: the model is broken\n"], code=2)
    with pytest.raises(UserError) as info:
        run_step(client, "img", ["x"], [], quiet(), title="builder")
    assert str(info.value) == "the model is broken" and info.value.exit_code == 2
    assert client.removed == 1


def test_a_container_removed_from_outside_is_one_line_not_a_traceback():
    client = FakeClient([b"==> graph\n"], vanish=True)
    with pytest.raises(UserError) as info:
        run_step(client, "img", ["x"], [], quiet(), title="builder")
    assert "builder container failed" in str(info.value) and "\n" not in str(info.value)
    assert info.value.exit_code == 1


@pytest.mark.parametrize("status", [404, 409])
def test_a_container_already_gone_or_being_removed_is_not_an_error(status):
    class Gone(FakeContainer):
        def remove(self, force=False):
            raise docker.errors.APIError("removal", response=SimpleNamespace(status_code=status))

    client = FakeClient([b"done\n"])
    client.containers = SimpleNamespace(create=lambda image, command, **kw: Gone(client, [b"done\n"]))
    out = run_step(client, "img", ["x"], [], quiet(), title="builder")
    assert out.lines == ["done"]


# --- the builder's lockdown and limits ----------------------------------------------------


def test_builder_profile_is_unprivileged_and_bounded():
    from wasmforge.container import builder_user
    from wasmforge.limits import BuilderLimits

    profile = builder_profile(BuilderLimits(memory="3g", cpus=1.5, pids=300, wall_seconds=90))
    settings = profile.settings
    uid, gid = builder_user()
    assert uid != 0 and settings["user"] == f"{uid}:{gid}"
    assert (uid, gid) == ((os.getuid(), os.getgid()) if os.getuid() else (1000, 1000))
    assert settings["cap_drop"] == ["ALL"] and settings["security_opt"] == ["no-new-privileges"]
    assert settings["mem_limit"] == settings["memswap_limit"] == "3g"
    assert settings["nano_cpus"] == 1_500_000_000 and settings["pids_limit"] == 300
    assert profile.wall_limit == 90
    assert settings["network_mode"] == "none"
    # The defaults (resources/limits.toml) fit resnet50-synth on two cores.
    default = builder_profile()
    assert default.settings["mem_limit"] == "6g" and default.wall_limit == 1800
    assert builder_profile(models=3).wall_limit == 5400  # per model of the run


@pytest.mark.skipif(os.getuid() != 0, reason="only root hands directories to another uid")
def test_writable_mounts_go_to_the_builder_user_and_come_back(tmp_path):
    from wasmforge.container import writable_by

    out = tmp_path / "staging"
    (out / "old").mkdir(parents=True)
    (out / "old" / "f").write_text("x")
    with writable_by([out], 1000, 1000):
        assert {(p.stat().st_uid, p.stat().st_gid) for p in [out, *out.rglob("*")]} == {(1000, 1000)}
        (out / "new").write_text("made by the builder")  # as root here; chowned back below
        os.chown(out / "new", 1000, 1000)
    assert {(p.stat().st_uid, p.stat().st_gid) for p in [out, *out.rglob("*")]} == {(0, 0)}
    with pytest.raises(RuntimeError):  # after a failure too
        with writable_by([out], 1000, 1000):
            raise RuntimeError("the build failed")
    assert out.stat().st_uid == 0


@pytest.mark.skipif(os.getuid() != 0, reason="only root builds as another uid")
def test_a_file_the_builder_user_cannot_read_is_mounted_from_a_private_copy(tmp_path):
    from wasmforge.container import Mount

    model = tmp_path / "m.onnx"
    model.write_bytes(b"onnx bytes")
    model.chmod(0o600)  # as fetch and many tools save files
    seen = {}

    class Reads(FakeContainer):
        def start(self):  # what the container would see, while it runs
            (bind,) = self.client.created[-1]["volumes"].items()
            seen["path"], seen["bind"] = bind
            status = os.stat(bind[0])
            seen["owner"], seen["mode"] = (status.st_uid, status.st_gid), status.st_mode & 0o777
            seen["bytes"] = open(bind[0], "rb").read()

    client = FakeClient([b"done\n"])
    client.containers = SimpleNamespace(create=lambda image, command, **kw: (
        client.created.append(kw), Reads(client, [b"done\n"]))[1])
    run_step(client, "img", ["x"], [Mount(str(model), "/in/0/model.onnx")], quiet(), title="builder")
    assert seen["path"] != str(model) and seen["bind"]["bind"] == "/in/0/model.onnx"
    assert seen["owner"] == (1000, 1000) and seen["mode"] == 0o400 and seen["bytes"] == b"onnx bytes"
    assert not os.path.exists(seen["path"])  # the copy is gone
    assert model.stat().st_mode & 0o777 == 0o600  # the user's file untouched
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(UserError, match=r"private is not readable by the builder's unprivileged user \(uid 1000\)"):
        run_step(client, "img", ["x"], [Mount(str(private), "/src")], quiet(), title="builder")


@pytest.mark.parametrize("what", ["oom", "time"])
def test_a_builder_stopped_by_a_limit_says_which(what, monkeypatch):
    class Stopped(FakeContainer):
        def reload(self):
            self.attrs["State"]["OOMKilled"] = what == "oom"

    client = FakeClient([b"==> graph\n"], code=137)
    client.containers = SimpleNamespace(create=lambda image, command, **kw: Stopped(client, [b"==> graph\n"], 137))
    if what == "time":
        monkeypatch.setenv("WASMFORGE_BUILDER_WALL_SECONDS", "0.2")
        real_lines = Container.lines

        def slow_lines(self):
            for line in real_lines(self):
                yield line
            import time
            time.sleep(0.5)  # the killer fires meanwhile

        monkeypatch.setattr(Container, "lines", slow_lines)
    with pytest.raises(UserError) as info:
        run_step(client, "img", ["x"], [], quiet(), title="builder")
    expected = {"oom": "builder ran out of memory (limit 6g, scratch files included) and was stopped "
                       "(raise it with WASMFORGE_BUILDER_MEMORY)",
                "time": "builder ran longer than its limit of 0.2 s and was stopped "
                        "(raise the per-model limit with WASMFORGE_BUILDER_WALL_SECONDS)"}
    assert str(info.value) == expected[what]


def test_tvm_vector_width_warning_is_dropped_and_long_lines_stay_whole():
    from wasmforge.terminal import make_console

    long_line = "note: " + "x" * 300
    warning = ("[18:57:04] /project/src/target/llvm/llvm_instance.cc:986: Warning: Set native vector bits "
               "to be 128 for `wasm32`, use -vector-width=XXX to override.")
    client = FakeClient([f"==> graph\n{warning}\n{long_line}\nwarning: a real one\n".encode()])
    log = io.StringIO()  # not a terminal, as a pipe
    out = run_step(client, "img", ["x"], [], make_console(file=log), title="builder")
    assert out.lines == ["==> graph", long_line, "warning: a real one"]
    printed = log.getvalue().splitlines()
    assert "vector bits" not in log.getvalue()
    assert f"  {long_line}" in printed and "warning: a real one" in printed
    assert "\x1b[" not in log.getvalue()  # no colour codes into a pipe


def test_a_builder_failing_on_a_full_disk_names_the_host_directory(tmp_path):
    from wasmforge.container import Mount

    client = FakeClient([b"Traceback (most recent call last):\n  File ...\n"
                         b"OSError: [Errno 28] No space left on device: '/out/0/m.wasm'\n"], code=1)
    with pytest.raises(UserError) as info:
        run_step(client, "img", ["x"], [Mount(str(tmp_path), "/out/0", read_only=False)], quiet(), title="builder")
    assert str(info.value) == f"no space left on device writing {tmp_path} (builder output)"
