"""Image recipe tests without Docker: locks, pins, tags, the rootfs tarball.
(Building and probing the images: tests/e2e/test_images.py.)"""

import re
import shutil
import tarfile
from pathlib import Path

import pytest

from wasmforge import images
from wasmforge.errors import UserError
from wasmforge.paths import PINS_FILE, ROOT

LOCKS = ["builder", "smoke", "host"]


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
    for rel in ("docker", "requirements"):
        shutil.copytree(ROOT / rel, tmp_path / rel)
    shutil.copy(PINS_FILE, tmp_path / "pins.toml")
    return tmp_path


def _tags(root: Path, base="sha256:aaa"):
    pins = images.load_pins(root / "pins.toml" if root != ROOT else PINS_FILE)
    return {k: images.image_tag(k, pins, base, root) for k in ("builder", "smoke")}


def test_image_tags_are_stable(tree):
    first = _tags(tree)
    assert first == _tags(tree) == _tags(ROOT)
    assert re.fullmatch(r"wasmforge/builder:[0-9a-f]{12}", first["builder"])


@pytest.mark.parametrize("change, changed", [
    (lambda r: (r / "docker/builder/Dockerfile").open("a").write("# x\n"), {"builder"}),
    (lambda r: (r / "requirements/smoke.txt").open("a").write("# x\n"), {"smoke"}),
    (lambda r: _edit(r / "pins.toml", 'rustc = "1.85.1', 'rustc = "1.85.2'), {"builder"}),
    (lambda r: _edit(r / "pins.toml", "source_date_epoch = 1", "source_date_epoch = 2"),
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


def test_labels_name_no_local_path_and_no_credentials(monkeypatch):
    """org.opencontainers.image.source: a canonical remote URL, or "unknown" (issue 12)."""
    from wasmforge import checkout

    real_git = checkout.git
    pins = images.load_pins()
    for origin, expected in (("/home/me/src/wasmforge", "unknown"), ("../wasmforge.git", "unknown"),
                             ("https://ci:tok3n@github.com/o/wasmforge.git", "https://github.com/o/wasmforge.git")):
        monkeypatch.setattr(checkout, "git", lambda root, *args, origin=origin:
                            origin if args[:2] == ("remote", "get-url") else real_git(root, *args))
        labels = images.labels_for("builder", pins, "b", "i")
        assert labels["org.opencontainers.image.source"] == expected
        assert not any("/home/me" in v or "tok3n" in v or ".." in v for v in labels.values())
        assert re.fullmatch(r"[0-9a-f]{40}|unknown", labels["org.opencontainers.image.revision"])
