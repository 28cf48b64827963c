import sys
from pathlib import Path

# `tests/onnx_models.py` is shared by tests in several folders.
sys.path.insert(0, str(Path(__file__).resolve().parent))
