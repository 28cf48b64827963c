"""Where things live: a checkout and an installed package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from wasmforge import paths


def test_a_checkout_reads_and_writes_in_place():
    assert paths.CHECKOUT
    assert paths.DIST == paths.ROOT / "dist" and paths.CACHE == paths.ROOT / ".cache"
    for needed in (paths.REGISTRY_FILE, paths.PINS_FILE, paths.ROOT / "rust_app" / "Cargo.lock",
                   paths.ROOT / "docker" / "builder" / "Dockerfile", paths.ROOT / "requirements" / "builder.txt",
                   paths.MODELS_DIR / "lenet-digits" / "lenet-digits.onnx"):
        assert needed.is_file(), needed


def test_an_installed_package_writes_under_the_working_and_cache_directories(tmp_path):
    package = tmp_path / "site-packages" / "wasmforge"
    package.mkdir(parents=True)
    shutil.copy(paths.PACKAGE / "paths.py", package / "paths.py")
    (package / "__init__.py").write_text("")
    work = tmp_path / "somedir"
    work.mkdir()
    script = ("import json; from wasmforge import paths as p; print(json.dumps({k: str(getattr(p, k)) for k in "
              "('CHECKOUT', 'ROOT', 'DIST', 'CACHE', 'TUNING', 'REGISTRY_FILE')}))")
    env = {**os.environ, "PYTHONPATH": str(package.parent), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    proc = subprocess.run([sys.executable, "-c", script], cwd=work, env=env, capture_output=True, text=True,
                          check=True)
    found = json.loads(proc.stdout)
    assert found == {"CHECKOUT": "False", "ROOT": str(package / "data"), "DIST": str(work / "dist"),
                     "CACHE": str(tmp_path / "xdg" / "wasmforge"), "TUNING": str(work / "tuning"),
                     "REGISTRY_FILE": str(package / "resources" / "models.toml")}
