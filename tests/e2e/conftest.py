"""End-to-end tests: everything here builds or runs the Docker images.

Every module is marked `e2e` (`pytest -m "not e2e"` runs the fast unit tests
only). Without a Docker daemon they are skipped, with the reason, instead of
failing one by one."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """Every test under tests/e2e/ is e2e, whether or not its module says so."""
    for item in items:
        if HERE in Path(item.fspath).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def docker_daemon():
    """The Docker client, or a skip naming why there is none (checked once per session)."""
    from wasmforge import images
    from wasmforge.errors import UserError

    try:
        return images.docker_client()
    except UserError as exc:
        pytest.skip(f"e2e tests need a Docker daemon: {exc}")


@pytest.fixture(autouse=True)
def _needs_docker(docker_daemon):
    """Every e2e test needs the daemon: skipped, not failed, without one."""


@pytest.fixture(scope="session")
def client(docker_daemon):
    return docker_daemon


@pytest.fixture(scope="session")
def built_artifact(docker_daemon):
    """`built_artifact(name)` -> dist/<name>/, built once (in Docker) only if it is missing.

    An existing artifact is used as it is, so a stale one shows up as the test's
    failure rather than being rebuilt behind its back.
    """
    from wasmforge.paths import DIST

    def get(name: str) -> Path:
        directory = DIST / name
        if not (directory / "SHA256SUMS").is_file():
            from wasmforge.build import build

            build(model=name)
        return directory

    return get


@pytest.fixture(scope="module")
def smoke_image(client):
    """The smoke image, built (in Docker) if it is missing or out of date."""
    from wasmforge import images

    return images.ensure_smoke(client)


@pytest.fixture(scope="session", autouse=True)
def docker_left_as_found(docker_daemon):
    """The e2e tests leave `docker ps -a` as they found it: no stopped container that
    a test or a build created stays behind. (Running ones are not counted: another
    build may legitimately be using the daemon at the same time.)"""
    before = {c.id for c in docker_daemon.containers.list(all=True)}
    yield
    left = [c.name for c in docker_daemon.containers.list(all=True, filters={"status": ["created", "exited", "dead"]})
            if c.id not in before]
    assert not left, f"containers left behind by the test suite: {left}"


PORTABLE = "lenet-digits-simd128"


@pytest.fixture(scope="session")
def portable_artifact(docker_daemon):
    """dist/lenet-digits-simd128/: lenet-digits built with `--features simd128` (no
    relaxed SIMD: Node 20, Firefox, Safari), built once only if it is missing."""
    from wasmforge.paths import DIST

    directory = DIST / PORTABLE
    if not (directory / "SHA256SUMS").is_file():
        from wasmforge.build import build

        build(model="lenet-digits", name=PORTABLE, features="simd128")
    return directory
