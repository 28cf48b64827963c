"""`--freeze NAME=VALUE`: inputs baked into the graph as constants.

VALUE is a number (the input's own dtype and declared shape, filled with it;
a scalar input gets a 0-d tensor) or a path to a `.npy` file holding exactly
the value. The compiler replaces the input by an initializer before import, so
shape arithmetic and `If` branches on it fold away; the reference check feeds
onnxruntime the same value.
"""

from __future__ import annotations

import math
from pathlib import Path

from .errors import UserError


def parse_freeze(specs) -> dict[str, dict]:
    """`["sr=16000", "mask=m.npy"]` -> {"sr": {"value": 16000.0}, "mask": {"npy": "/abs/m.npy"}}."""
    frozen: dict[str, dict] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name or not value:
            raise UserError(f"bad --freeze '{spec}' (expected NAME=NUMBER or NAME=FILE.npy)")
        if name in frozen:
            raise UserError(f"--freeze gives '{name}' twice")
        if value.endswith(".npy"):
            path = Path(value)
            if not path.is_file():
                raise UserError(f"--freeze {name}: no such file: {value}")
            frozen[name] = {"npy": str(path.resolve())}
            continue
        try:
            number = float(value)
        except ValueError:
            raise UserError(f"bad --freeze '{spec}': {value!r} is neither a number nor a .npy file") from None
        if not math.isfinite(number):
            raise UserError(f"bad --freeze '{spec}': the value must be finite")
        frozen[name] = {"value": number}
    return frozen


def frozen_array(entry: dict, dtype, shape):
    """The numpy value of one frozen input for an input of `dtype` and `shape`."""
    import numpy as np

    if "npy" in entry:
        try:
            array = np.load(entry["npy"], allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read {Path(entry['npy']).name}: {exc}") from None
        return array
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in (shape or [])]
    return np.full(shape, entry["value"], dtype=dtype)
