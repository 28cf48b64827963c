"""The in-container scripts are not a package; make them importable for their tests."""

import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

# These tests compile with the pinned TVM on the host (requirements/host.txt).
pytest.importorskip("tvm")
