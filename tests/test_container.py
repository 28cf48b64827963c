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
