import sys
from pathlib import Path

import pytest

# `tests/onnx_models.py` is shared by tests in several folders.
sys.path.insert(0, str(Path(__file__).resolve().parent))


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
