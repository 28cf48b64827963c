from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def built_artifact():
    """`built_artifact(name)` -> dist/<name>/, built once (in Docker) only if it is missing.

    For tests marked `docker`. An existing artifact is used as it is, so a stale
    one shows up as the test's failure rather than being rebuilt behind its back.
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
def client():
    """The Docker client, for tests marked `docker`; they are skipped if no daemon answers."""
    from wasmforge import images
    from wasmforge.errors import UserError

    try:
        return images.docker_client()
    except UserError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def smoke_image(client):
    """The smoke image, built (in Docker) if it is missing or out of date."""
    from wasmforge import images

    return images.ensure_smoke(client)


@pytest.fixture(scope="session", autouse=True)
def docker_left_as_found():
    """The suite leaves `docker ps -a` as it found it: no stopped container that a
    test or a build created stays behind. (Running ones are not counted: another
    build may legitimately be using the daemon at the same time.)"""
    try:
        import docker

        client = docker.from_env()
        before = {c.id for c in client.containers.list(all=True)}
    except Exception:  # no daemon: nothing to compare
        yield
        return
    yield
    left = [c.name for c in client.containers.list(all=True, filters={"status": ["created", "exited", "dead"]})
            if c.id not in before]
    assert not left, f"containers left behind by the test suite: {left}"
