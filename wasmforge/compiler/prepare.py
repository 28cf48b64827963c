"""ONNX-level preparation before TVM's frontend sees a model.

Returns the model unchanged when it needs nothing (so models that already
import cleanly compile to the same bytes as before).
"""

from __future__ import annotations

from pathlib import Path

import onnx


def prepare(model: onnx.ModelProto, base_dir: Path, shapes: dict[str, list[int]],
            frozen: dict[str, dict], warnings: list[str] | None = None) -> onnx.ModelProto:
    """Placeholder until the framework-quirk passes land: the model as it is."""
    return model
