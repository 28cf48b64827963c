"""fetch.model_path against a local HTTP server, dead endpoints, committed files and generators.

No test touches the internet: downloads come from http.server on 127.0.0.1.
"""

import hashlib
import http.server
import os
import socket
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from onnx import TensorProto, helper

from wasmforge import paths
from wasmforge.errors import UserError
from wasmforge.fetch import model_path, verify_pin
from wasmforge.hashing import sha256_bytes, sha256_file
from wasmforge.registry import FileSource, GeneratorSource, ModelSpec, TensorSpec, UrlSource

PAYLOAD = b"not really onnx, but bytes are bytes\n" * 1000
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
WRONG_SHA256 = "0" * 64


def make_spec(source, sha256=PAYLOAD_SHA256, size=None, name="tiny") -> ModelSpec:
    return ModelSpec(
        name=name, description="test", source=source, sha256=sha256, size=size,
        inputs=(TensorSpec("x", "float32", (1,)),), outputs=(TensorSpec("y", "float32", (1,)),),
        preprocessing="none", license="test", provenance="test",
    )


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/'served' on 127.0.0.1; yields (base_url, list of requested paths)."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "model.onnx").write_bytes(PAYLOAD)
    requests: list[str] = []
    handler = type("Handler", (_CountingHandler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *args: handler(*args, directory=str(served))
    )
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def free_port() -> int:
    """A localhost port nothing listens on (bound once to get it, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_cannot_download(error: UserError, spec: ModelSpec, reason_part: str):
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"cannot download {spec.name} from {spec.source.url} (")
    assert message.endswith("); download it elsewhere and pass --onnx PATH")
    assert reason_part in message
    assert error.exit_code == 1


# --- url ------------------------------------------------------------------------------


def test_download_lands_in_cache_under_its_sha256(server, cache):
    base, requests = server
    spec = make_spec(UrlSource(f"{base}/model.onnx"), size=len(PAYLOAD))
    path = model_path(spec, cache_dir=cache)
    assert path == cache / f"{PAYLOAD_SHA256}.onnx"
    assert path.read_bytes() == PAYLOAD
    assert cache_files(cache) == [path.name]  # no temp files left behind
    assert requests == ["/model.onnx"]
    # Readable by others (an unprivileged builder mounts it), as the umask says.
    mask = os.umask(0o022)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_cache_hit_does_not_download_again(server, cache):
    base, requests = server
    spec = make_spec(UrlSource(f"{base}/model.onnx"))
    first = model_path(spec, cache_dir=cache)
    # Even with the source gone, the verified cache entry is used.
    gone = make_spec(UrlSource(f"http://127.0.0.1:{free_port()}/model.onnx"))
    assert model_path(gone, cache_dir=cache) == first
    assert model_path(spec, cache_dir=cache) == first
    assert requests == ["/model.onnx"]


def test_damaged_cache_entry_is_fetched_again(server, cache):
    base, requests = server
    spec = make_spec(UrlSource(f"{base}/model.onnx"))
    path = model_path(spec, cache_dir=cache)
    path.write_bytes(b"truncated")
    assert model_path(spec, cache_dir=cache).read_bytes() == PAYLOAD
    assert len(requests) == 2


def test_sha256_mismatch_names_both_hashes_and_caches_nothing(server, cache):
    base, _ = server
    spec = make_spec(UrlSource(f"{base}/model.onnx"), sha256=WRONG_SHA256)
    with pytest.raises(UserError) as caught:
        model_path(spec, cache_dir=cache)
    message = str(caught.value)
    assert "\n" not in message
    assert f"expected {WRONG_SHA256}" in message and f"got {PAYLOAD_SHA256}" in message
    assert cache_files(cache) == []


def test_download_larger_than_pinned_size_is_cut_off(server, cache):
    base, _ = server
    spec = make_spec(UrlSource(f"{base}/model.onnx"), size=100)
    with pytest.raises(UserError, match="exceeds the pinned 100 bytes"):
        model_path(spec, cache_dir=cache)
    assert cache_files(cache) == []


def test_http_error_is_one_line(server, cache):
    base, _ = server
    spec = make_spec(UrlSource(f"{base}/missing.onnx"))
    with pytest.raises(UserError) as caught:
        model_path(spec, cache_dir=cache)
    assert_cannot_download(caught.value, spec, "(HTTP 404 ")
    assert cache_files(cache) == []


def test_connection_refused_fails_fast_in_one_line(cache):
    spec = make_spec(UrlSource(f"http://127.0.0.1:{free_port()}/resnet50-v1-7.onnx"), name="resnet50")
    started = time.monotonic()
    with pytest.raises(UserError) as caught:
        model_path(spec, cache_dir=cache)
    assert time.monotonic() - started < 5
    assert_cannot_download(caught.value, spec, "refused")
    assert cache_files(cache) == []


def test_silent_server_times_out(cache):
    # Accepts the TCP connection (kernel backlog) but never answers: only the timeout saves us.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        spec = make_spec(UrlSource(f"http://127.0.0.1:{silent.getsockname()[1]}/model.onnx"))
        started = time.monotonic()
        with pytest.raises(UserError) as caught:
            model_path(spec, cache_dir=cache, timeout=0.5)
        assert time.monotonic() - started < 5
    assert_cannot_download(caught.value, spec, "timed out after 0.5 s")
    assert cache_files(cache) == []


def test_default_cache_dir_follows_paths_cache(server, tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "CACHE", tmp_path / "elsewhere")
    base, _ = server
    path = model_path(make_spec(UrlSource(f"{base}/model.onnx")))
    assert path == tmp_path / "elsewhere" / "models" / f"{PAYLOAD_SHA256}.onnx"


# --- file -----------------------------------------------------------------------------


def test_committed_file_is_returned_in_place(tmp_path):
    committed = tmp_path / "model.onnx"
    committed.write_bytes(PAYLOAD)
    spec = make_spec(FileSource("unused"))
    assert verify_pin(spec, committed) == committed


def test_committed_lenet_verifies():
    from wasmforge.registry import get_model

    spec = get_model("lenet-digits")
    assert model_path(spec) == paths.ROOT / "models" / "lenet-digits" / "lenet-digits.onnx"


def test_changed_committed_file_is_reported(monkeypatch, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "x.onnx").write_bytes(PAYLOAD)
    monkeypatch.setattr("wasmforge.registry.ROOT", tmp_path)
    spec = make_spec(FileSource("models/x.onnx"), sha256=WRONG_SHA256)
    with pytest.raises(UserError) as caught:
        model_path(spec)
    message = str(caught.value)
    assert f"expected {WRONG_SHA256}, got {PAYLOAD_SHA256}" in message
    assert "committed file changed" in message and "\n" not in message


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        verify_pin(make_spec(FileSource("x")), tmp_path / "nope.onnx")


# --- generator ------------------------------------------------------------------------


def tiny_model(scale: int = 1):
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node], f"tiny{scale}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.fixture
def tiny_generator(monkeypatch):
    """A throwaway module under wasmforge.generators; returns the list of its calls."""
    calls = []

    def build_model(scale: int = 1):
        calls.append(scale)
        return tiny_model(scale)

    module = types.ModuleType("wasmforge.generators._tiny_for_tests")
    module.build_model = build_model
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return calls


def test_generator_output_is_cached_and_pinned(tiny_generator, cache):
    expected = sha256_bytes(tiny_model(3).SerializeToString())
    spec = make_spec(GeneratorSource("wasmforge.generators._tiny_for_tests:build_model", (("scale", 3),)),
                     sha256=expected)
    path = model_path(spec, cache_dir=cache)
    assert path == cache / f"{expected}.onnx" and sha256_file(path) == expected
    assert model_path(spec, cache_dir=cache) == path
    assert tiny_generator == [3]  # second call was a cache hit
    assert cache_files(cache) == [path.name]


def test_generator_pin_mismatch_caches_nothing(tiny_generator, cache):
    spec = make_spec(GeneratorSource("wasmforge.generators._tiny_for_tests:build_model"), sha256=WRONG_SHA256)
    with pytest.raises(UserError) as caught:
        model_path(spec, cache_dir=cache)
    message = str(caught.value)
    assert f"expected {WRONG_SHA256}" in message and "got " in message and "\n" not in message
    assert cache_files(cache) == []


def test_missing_generator_is_reported(cache):
    spec = make_spec(GeneratorSource("wasmforge.generators.no_such_module:build_model"))
    with pytest.raises(UserError, match="does not exist"):
        model_path(spec, cache_dir=cache)
