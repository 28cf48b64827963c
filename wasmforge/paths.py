"""Where things live: the one module that knows, in a checkout and in an installed package.

- `RESOURCES` (`wasmforge/resources/`): pinned data the code reads, in both
  cases: the model registry `models.toml` and the image pins `pins.toml`.
- `ROOT`: the data the host mounts or copies into containers (`docker/`,
  `requirements/`, `rust_app/`) and the committed models (`models/`). In a
  checkout that is the checkout itself; an installed package carries copies
  under `wasmforge/data/` (see pyproject.toml's package-dir mapping).
- `DIST`, `CACHE`, `TUNING`: what wasmforge writes. In a checkout: `dist/`,
  `.cache/` and `tuning/` in it. Installed: `./dist` and `./tuning` under the
  current directory, and the user's cache directory (`$XDG_CACHE_HOME/wasmforge`,
  by default `~/.cache/wasmforge`).

Standard library only (the smoke image imports the package).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
RESOURCES = PACKAGE / "resources"


def _is_checkout(root: Path) -> bool:
    return all((root / name).exists() for name in ("pyproject.toml", "tasks.py", "rust_app", "docker"))


CHECKOUT = _is_checkout(PACKAGE.parent)

if CHECKOUT:
    ROOT = PACKAGE.parent
    DIST = ROOT / "dist"
    # Downloads, generated models and bootstrapped rootfs tarballs; safe to delete.
    CACHE = ROOT / ".cache"
    TUNING = ROOT / "tuning"
else:
    ROOT = PACKAGE / "data"
    DIST = Path.cwd() / "dist"
    CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wasmforge"
    TUNING = Path.cwd() / "tuning"

MODELS_DIR = ROOT / "models"
REGISTRY_FILE = RESOURCES / "models.toml"
PINS_FILE = RESOURCES / "pins.toml"
