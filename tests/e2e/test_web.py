"""The browser demo (web/): headless Chromium loads the page from a local HTTP
server, draws a digit given as strokes, and lenet-digits classifies it through
the embedding ABI. The prediction is read from the page's DOM
(`chromium --headless --dump-dom`); no npm, no WebDriver."""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import subprocess
import threading
import urllib.parse
from pathlib import Path

import pytest

from wasmforge.paths import ROOT

WEB = ROOT / "web"
# Polylines in fractions of the drawing pad, and the digit each one is.
STROKES = {
    1: [[[0.5, 0.1], [0.5, 0.9]]],
    7: [[[0.25, 0.12], [0.72, 0.12], [0.42, 0.9]], [[0.35, 0.5], [0.68, 0.5]]],
    4: [[[0.55, 0.1], [0.25, 0.6], [0.75, 0.6]], [[0.6, 0.35], [0.6, 0.9]]],
    3: [[[0.3, 0.15], [0.65, 0.15], [0.45, 0.45], [0.68, 0.62], [0.6, 0.85], [0.3, 0.88]]],
}


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run does)")
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory, portable_artifact, built_artifact):
    """web/ and both lenet-digits modules served over HTTP on 127.0.0.1; yields the base URL."""
    root = tmp_path_factory.mktemp("site")
    shutil.copytree(WEB, root / "web")
    for directory in (portable_artifact, built_artifact("lenet-digits")):
        shutil.copyfile(directory / f"{directory.name}.wasm", root / f"{directory.name}.wasm")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def page_dom(chromium: str, url: str, profile: Path) -> str:
    """The page's DOM once its scripts are done (virtual time lets them finish)."""
    done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


SNAPSHOTS = 3  # headless Chromium dumps the DOM when virtual time runs out


def classify(chromium, site, model: str, strokes, profile: Path) -> tuple[str, str, str]:
    query = urllib.parse.urlencode({"model": f"../{model}.wasm", "strokes": json.dumps(strokes)})
    for _ in range(SNAPSHOTS):
        dom = page_dom(chromium, f"{site}/web/index.html?{query}", profile)
        # Virtual time does not wait for the asynchronous wasm compile, so now and
        # then (about 1 run in 8 here) the dump comes while the page still says
        # "loading": take the page again; any other state is the answer.
        if '<body data-state="loading"' not in dom:
            break
    state = re.search(r'<body data-state="(\w+)"', dom)
    digit = re.search(r'<output id="digit">(\d*)</output>', dom)
    assert state and digit, dom[-3000:]
    return state[1], digit[1], dom


def test_page_classifies_drawn_digits_with_the_portable_build(chromium, site, tmp_path):
    for expected, strokes in STROKES.items():
        state, digit, dom = classify(chromium, site, "lenet-digits-simd128", strokes, tmp_path)
        assert (state, digit) == ("done", str(expected)), dom[-3000:]
    # The page shows the preprocessing the module reports and the 8x8 input it made.
    assert "input = pixel / 16 as float32" in dom
    pixels = re.search(r'<pre id="pixels">([\d\s]+)</pre>', dom)[1].split()
    assert len(pixels) == 64 and all(0 <= int(p) <= 16 for p in pixels) and max(map(int, pixels)) >= 12


def test_chromium_also_runs_the_relaxed_simd_build(chromium, site, tmp_path):
    state, digit, dom = classify(chromium, site, "lenet-digits", STROKES[7], tmp_path)
    assert (state, digit) == ("done", "7"), dom[-3000:]
    assert "relaxed-simd" in re.search(r'<span id="features">([^<]*)</span>', dom)[1]
