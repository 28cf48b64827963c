"""Image recipe tests. The unmarked ones need no Docker; the `docker` ones build
base, builder and smoke for real (minutes the first time, seconds once cached)."""

import hashlib
import re
import shutil
import tarfile
from pathlib import Path

import pytest

from wasmforge import images
from wasmforge.errors import UserError
from wasmforge.paths import ROOT

LOCKS = ["builder", "smoke", "host"]
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
MOZILLA_CAS = Path("/usr/share/ca-certificates/mozilla")


# --- no docker ----------------------------------------------------------------

def _requirements(path: Path) -> list[str]:
    """Requirement entries with their continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


@pytest.mark.parametrize("name", LOCKS)
def test_lock_is_fully_hash_pinned(name):
    path = ROOT / "requirements" / f"{name}.txt"
    assert "uv pip compile" in path.read_text().splitlines()[1], "header must record the lock command"
    entries = _requirements(path)
    assert entries
    for entry in entries:
        assert re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*==\S+ ", entry), entry
        assert re.search(r"--hash=sha256:[0-9a-f]{64}\b", entry), entry
    locked = images.lock_versions(path)
    for line in (ROOT / "requirements" / f"{name}.in").read_text().splitlines():
        if (top := re.match(r"^([A-Za-z0-9._-]+)", line)):
            assert re.sub(r"[-_.]+", "-", top[1]).lower() in locked, f"{top[1]} missing from {name}.txt"


def test_builder_lock_has_the_required_tvm():
    locked = images.lock_versions(ROOT / "requirements" / "builder.txt")
    assert locked["apache-tvm"] == "0.27.0.post1"
    assert locked["apache-tvm-ffi"] == "0.1.14.post0"  # 0.1.15.x segfaults in MetaSchedule


def test_pins_parse_and_labels_resolve():
    pins = images.load_pins()
    assert pins["base"]["suite"] == "trixie" and pins["base"]["variant"] == "minbase"
    for kind in ("builder", "smoke"):
        spec = pins[kind]
        assert (ROOT / spec["dockerfile"]).is_file() and (ROOT / spec["requirements"]).is_file()
        for pkg, version in {**spec["apt"], **spec["pydeps_apt"]}.items():
            assert re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", pkg) and re.fullmatch(r"[0-9][\w.+:~-]*", version)
        labels = images.labels_for(kind, pins, "base:x", "inputs")
        assert all(labels[images.LABEL_PREFIX + key] for key in spec["labels"])
    assert images.labels_for("builder", pins, "b", "i")["io.wasmforge.rustc"].startswith("1.85.1")
    assert "python3" in pins["smoke"]["apt"] and "rustc" not in pins["smoke"]["apt"]


@pytest.fixture
def tree(tmp_path):
    """A copy of the files the tags hash, to change one at a time."""
    for rel in ("docker", "requirements", "resources/pins.toml"):
        src, dst = ROOT / rel, tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    return tmp_path


def _tags(root: Path, base="sha256:aaa"):
    pins = images.load_pins(root / "resources" / "pins.toml")
    return {k: images.image_tag(k, pins, base, root) for k in ("builder", "smoke")}


def test_image_tags_are_stable(tree):
    first = _tags(tree)
    assert first == _tags(tree) == _tags(ROOT)
    assert re.fullmatch(r"wasmforge/builder:[0-9a-f]{12}", first["builder"])


@pytest.mark.parametrize("change, changed", [
    (lambda r: (r / "docker/builder/Dockerfile").open("a").write("# x\n"), {"builder"}),
    (lambda r: (r / "requirements/smoke.txt").open("a").write("# x\n"), {"smoke"}),
    (lambda r: _edit(r / "resources/pins.toml", 'rustc = "1.85.1', 'rustc = "1.85.2'), {"builder"}),
    (lambda r: _edit(r / "resources/pins.toml", "source_date_epoch = 1", "source_date_epoch = 2"),
     {"builder", "smoke"}),
], ids=["dockerfile", "lock", "apt-pin", "epoch"])
def test_image_tag_follows_its_inputs(tree, change, changed):
    before = _tags(tree)
    change(tree)
    after = _tags(tree)
    assert {k for k in before if before[k] != after[k]} == changed


def test_image_tag_follows_the_base():
    assert _tags(ROOT, "sha256:aaa") != _tags(ROOT, "sha256:bbb")


def _edit(path: Path, old: str, new: str):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_base_tag_follows_the_recipe_only():
    pins = images.load_pins()
    tag = images.base_tag(pins)
    assert re.fullmatch(r"wasmforge/base:trixie-[0-9a-f]{12}", tag)
    other = {**pins, "base": {**pins["base"], "default_image": "debian:other"}}
    assert images.base_tag(other) == tag  # only the Dockerfile default, not bootstrapped
    other = {**pins, "base": {**pins["base"], "mirror": "http://example.invalid/debian"}}
    assert images.base_tag(other) != tag


def test_rootfs_tar_is_deterministic(tmp_path):
    rootfs = tmp_path / "rootfs"
    for rel in ("etc/os-release", "usr/bin/tool", "dev/null", "proc/1/status"):
        (rootfs / rel).parent.mkdir(parents=True, exist_ok=True)
        (rootfs / rel).write_text(rel)
    (rootfs / "usr/bin/alias").symlink_to("tool")
    images._write_tar(rootfs, tmp_path / "a.tar", epoch=1000)
    (rootfs / "etc/os-release").touch()  # a new mtime must not matter
    images._write_tar(rootfs, tmp_path / "b.tar", epoch=1000)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tar:
        names = tar.getnames()
        assert "./dev" in names and "./dev/null" not in names and "./proc/1" not in names
        assert names == sorted(names, key=lambda n: n.split("/"))
        assert {m.mtime for m in tar} == {1000} and {m.uname for m in tar} == {""}


def test_build_failure_names_the_step(tmp_path):
    stream = [{"stream": "Step 1/3 : FROM base\n"}, {"stream": "Step 2/3 : RUN apt-get install x\n"},
              {"stream": "E: Unable to locate package x\n"},
              {"error": "returned a non-zero code: 100",
               "errorDetail": {"message": "returned a non-zero code: 100"}}]
    with pytest.raises(UserError) as e:
        images._follow_build(iter(stream), images._console(None), "wasmforge/x:1", tmp_path / "x.log")
    assert "step 2/3: RUN apt-get install x" in str(e.value) and "Unable to locate" in str(e.value)


def test_unreachable_daemon_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    message = r"^Docker daemon not reachable \(.*\); start Docker or set DOCKER_HOST$"
    with pytest.raises(UserError, match=message) as e:
        images.docker_client()
    assert e.value.exit_code == 1


# --- docker ------------------------------------------------------------------------
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


@pytest.mark.docker
def test_builder_toolchain(client, builder):
    out = run(client, builder, "rustc --print target-list; wasm-ld --version; llvm-ar --version;"
                               "python -c 'import tvm, tvm_ffi, onnx, numpy;"
                               "print(tvm.__version__, tvm_ffi.__version__)'; id -u; echo $HOME; pwd")
    lines = out.splitlines()
    assert "wasm32-wasip1" in lines
    assert re.search(r"^(Debian )?LLD 19\.", out, re.MULTILINE) and "LLVM version 19." in out
    assert "0.27.0.post1 0.1.14.post0" in lines
    assert lines[-3:] == ["1000", "/home/builder", "/work"]


@pytest.mark.docker
def test_builder_labels(builder):
    versions = images.image_versions(builder)
    for key in ("rustc", "cargo", "llvm", "python", "tvm", "tvm-ffi", "onnx", "numpy", "inputs"):
        assert versions.get(key), key
    assert versions["tvm"] == "0.27.0.post1" and versions["inputs"] == builder.tags[0].split(":")[1]
    for key in ("title", "source", "revision", "version"):
        assert builder.labels.get(f"org.opencontainers.image.{key}")
    assert builder.attrs["Config"]["User"] == "builder"


@pytest.mark.docker
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


@pytest.mark.docker
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


@pytest.mark.docker
def test_smoke_runs_wasmtime_and_has_no_compiler(client, smoke_image):
    out = run(client, smoke_image, "/opt/venv/bin/python -c 'import wasmtime, numpy; print(\"ok\")';"
                             "for t in rustc cargo cc gcc wasm-ld llvm-ar; do command -v $t; done;"
                             "python -c 'import tvm' 2>&1 | tail -1; python -m pip 2>&1 | tail -1; id -un")
    lines = out.splitlines()
    assert lines[0] == "ok" and lines[-1] == "smoke"
    assert "No module named 'tvm'" in out and "No module named pip" in out
    assert len(lines) == 4, f"unexpected tools in the smoke image: {out}"
    assert {"wasmtime", "numpy", "python"} <= set(images.image_versions(smoke_image))


@pytest.mark.docker
def test_failed_build_is_a_user_error_naming_the_step(client, monkeypatch):
    pins = images.load_pins()
    pins["smoke"]["apt"]["python3"] = "0.0-no-such-version"
    monkeypatch.setattr(images, "load_pins", lambda: pins)
    base = client.images.get(images.ensure_base(client))
    tag = images.image_tag("smoke", pins, images.base_fingerprint(base))
    with pytest.raises(UserError, match=r"(?s)failed at step 5/\d+: RUN .*python3") as e:
        images.ensure_smoke(client)
    assert e.value.exit_code == 1 and not client.images.list(name=tag)


@pytest.mark.docker
def test_unchanged_tree_reuses_the_images(client, builder, smoke_image):
    assert images.ensure_builder(client).id == builder.id
    assert images.ensure_smoke(client).id == smoke_image.id
