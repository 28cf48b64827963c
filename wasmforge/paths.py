"""Where things live, relative to the repository root."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESOURCES = ROOT / "resources"
MODELS_DIR = ROOT / "models"
DIST = ROOT / "dist"
# Downloads, generated models and bootstrapped rootfs tarballs; safe to delete.
CACHE = ROOT / ".cache"
