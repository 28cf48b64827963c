"""The builder and smoke images themselves, built and probed in Docker
(minutes the first time, seconds once cached)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from wasmforge import checkout, images
from wasmforge.errors import UserError

pytestmark = pytest.mark.e2e

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
MOZILLA_CAS = Path("/usr/share/ca-certificates/mozilla")


# (The `client` and `smoke_image` fixtures are in conftest.py.)

@pytest.fixture(scope="module")
def builder(client):
    return images.ensure_builder(client)


def run(client, image, script: str, **kw) -> str:
    """Run `sh -c script` without network; raises ContainerError on failure."""
    out = client.containers.run(image.id, ["sh", "-c", script], remove=True, network_disabled=True,
                                stderr=True, **kw)
    return out.decode()


def _pem_blocks(text: str) -> set[str]:
    return set(re.findall(r"-----BEGIN CERTIFICATE-----\n.*?-----END CERTIFICATE-----", text, re.DOTALL))


def test_builder_toolchain(client, builder):
    out = run(client, builder, "rustc --print target-list; wasm-ld --version; llvm-ar --version;"
                               "python -c 'import tvm, tvm_ffi, onnx, numpy;"
                               "print(tvm.__version__, tvm_ffi.__version__)'; id -u; echo $HOME; pwd")
    lines = out.splitlines()
    assert "wasm32-wasip1" in lines
    assert re.search(r"^(Debian )?LLD 19\.", out, re.MULTILINE) and "LLVM version 19." in out
    assert "0.27.0.post1 0.1.14.post0" in lines
    assert lines[-3:] == ["1000", "/home/builder", "/work"]


def test_builder_labels(builder):
    versions = images.image_versions(builder)
    for key in ("rustc", "cargo", "llvm", "python", "tvm", "tvm-ffi", "onnx", "numpy", "inputs"):
        assert versions.get(key), key
    assert versions["tvm"] == "0.27.0.post1" and versions["inputs"] == builder.tags[0].split(":")[1]
    for key in ("title", "source", "revision", "version"):
        assert builder.labels.get(f"org.opencontainers.image.{key}")
    # A canonical remote URL, or "unknown" when origin is a local path (issue 12).
    source = builder.labels["org.opencontainers.image.source"]
    assert source == "unknown" or checkout.canonical_remote(source) == source, source
    assert builder.attrs["Config"]["User"] == "builder"


@pytest.mark.parametrize("fixture", ["builder", "smoke_image"], ids=["builder", "smoke"])
def test_no_host_secrets_or_wheels_baked_in(client, request, fixture):
    """No pip config, wheels, host CA bundle or local CA certificate anywhere in the image."""
    image = request.getfixturevalue(fixture)
    env = " ".join(image.attrs["Config"]["Env"])
    assert not re.search(r"PIP_|SSL_CERT|REQUESTS_CA|CURL_CA", env)
    host_ca = HOST_CA.read_bytes()
    # The host's local (proxy) CAs: what it trusts beyond Debian's public set.
    public = "".join(p.read_text() for p in MOZILLA_CAS.glob("*.crt"))
    local = _pem_blocks(host_ca.decode()) - _pem_blocks(public)
    patterns = "\n".join(block.splitlines()[3] for block in local)  # a base64 line of each
    script = (f"ls /etc/pip.conf /tmp/wheels /tmp/requirements.txt /root/.config/pip 2>/dev/null;"
              f"find / -xdev -type f -size {len(host_ca)}c -exec sha256sum {{}} + 2>/dev/null;"
              "[ -z \"$P\" ] || printf '%s\\n' \"$P\" > /tmp/p && grep -rlF -f /tmp/p "
              "--exclude-dir=proc --exclude-dir=sys --exclude-dir=dev / 2>/dev/null; true")
    out = run(client, image, script, environment={"P": patterns}, user="root")
    assert hashlib.sha256(host_ca).hexdigest() not in out
    assert out.replace("/tmp/p\n", "").strip() == "", out


def test_hello_world_builds_for_wasm32_wasip1(client, builder, tmp_path):
    import wasmtime

    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)  # the container writes as uid 1000
    run(client, builder, "cd /tmp && cargo new -q hello && cd hello && "
                         "cargo build -q --release --target wasm32-wasip1 --offline && "
                         "cp target/wasm32-wasip1/release/hello.wasm /out/",
        volumes={str(out): {"bind": "/out", "mode": "rw"}})
    module = wasmtime.Module.from_file(wasmtime.Engine(), str(out / "hello.wasm"))
    assert {imp.module for imp in module.imports} == {"wasi_snapshot_preview1"}


def test_smoke_runs_wasmtime_and_has_no_compiler(client, smoke_image):
    out = run(client, smoke_image, "/opt/venv/bin/python -c 'import wasmtime, numpy; print(\"ok\")';"
                             "for t in rustc cargo cc gcc wasm-ld llvm-ar; do command -v $t; done;"
                             "python -c 'import tvm' 2>&1 | tail -1; python -m pip 2>&1 | tail -1; id -un")
    lines = out.splitlines()
    assert lines[0] == "ok" and lines[-1] == "smoke"
    assert "No module named 'tvm'" in out and "No module named pip" in out
    assert len(lines) == 4, f"unexpected tools in the smoke image: {out}"
    assert {"wasmtime", "numpy", "python"} <= set(images.image_versions(smoke_image))


def test_failed_build_is_a_user_error_naming_the_step(client, monkeypatch):
    pins = images.load_pins()
    pins["smoke"]["apt"]["python3"] = "0.0-no-such-version"
    monkeypatch.setattr(images, "load_pins", lambda: pins)
    base = client.images.get(images.ensure_base(client))
    tag = images.image_tag("smoke", pins, images.base_fingerprint(base))
    with pytest.raises(UserError, match=r"(?s)failed at step 5/\d+: RUN .*python3") as e:
        images.ensure_smoke(client)
    assert e.value.exit_code == 1 and not client.images.list(name=tag)


def test_unchanged_tree_reuses_the_images(client, builder, smoke_image):
    assert images.ensure_builder(client).id == builder.id
    assert images.ensure_smoke(client).id == smoke_image.id


def test_builder_container_is_locked_down_and_bounded(client, builder):
    """The settings every build's builder container gets, as docker and the container itself see them."""
    from wasmforge.container import Container, builder_profile, builder_user

    script = ("id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; "
              "touch /work/x /tmp/y && echo scratch writable")
    with Container(client, builder.id, ["sh", "-c", script], profile=builder_profile(),
                   title="builder-probe") as container:
        host = client.api.inspect_container(container._container.id)["HostConfig"]
        lines = list(container.lines())
    assert host["Memory"] == host["MemorySwap"] == 6 << 30
    assert host["NanoCpus"] == 2_000_000_000 and host["PidsLimit"] == 1024
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges"]
    assert host["NetworkMode"] == "none"
    uid, _ = builder_user()
    assert lines == [str(uid), "CapEff:\t0000000000000000", "NoNewPrivs:\t1", "scratch writable"], lines
    assert uid != 0 and container.exit_code == 0
