"""onnxruntime as the numerical oracle: seeded inputs, reference outputs, comparison."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Max abs difference allowed, relative to max |reference output| (at least 1e-4
# absolute for tiny outputs). TVM and onnxruntime sum in different orders, so
# bit equality is not expected; 1e-3 is what the core issue asks of ResNet50.
RELATIVE_TOLERANCE = 1e-3
ABSOLUTE_FLOOR = 1e-4


def session(onnx_path: Path, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def seeded_inputs(inputs, seed: int) -> list[np.ndarray]:
    """Deterministic inputs for input specs: the manifest's `TensorRecord`s, or
    the compiler's dicts with the same fields (name, shape, dtype)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in inputs:
        dtype, shape = (spec["dtype"], spec["shape"]) if isinstance(spec, dict) else (spec.dtype, spec.shape)
        dtype, shape = np.dtype(dtype), list(shape)
        if dtype.kind == "f":
            # Noise with a random scale and offset per channel (axis 1): plain
            # noise averages out in pooling networks, and every input would then
            # get nearly the same answer, which makes a poor test.
            channel_shape = [1] * len(shape)
            if len(shape) >= 2:
                channel_shape[1] = shape[1]
            scale = rng.uniform(0.5, 2.0, channel_shape)
            offset = rng.uniform(-1.0, 1.0, channel_shape)
            arrays.append((rng.standard_normal(shape) * scale + offset).astype(dtype))
        elif dtype.kind == "b":
            arrays.append(rng.integers(0, 2, shape).astype(dtype))
        else:
            arrays.append(rng.integers(0, 10, shape).astype(dtype))
    return arrays


def run_reference(sess, inputs: list[np.ndarray], frozen: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
    """onnxruntime's outputs for `inputs` (in the session's input order, skipping the
    `frozen` ones, which are fed by name: the inputs a build baked into the graph)."""
    frozen = frozen or {}
    names = [i.name for i in sess.get_inputs() if i.name not in frozen]
    return sess.run(None, {**dict(zip(names, inputs)), **frozen})


def load_case(directory: Path, case: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The recorded inputs and onnxruntime outputs of `reference/case<case>/`, in order."""
    case_dir = directory / "reference" / f"case{case}"

    def load(prefix: str) -> list[np.ndarray]:
        paths = sorted(case_dir.glob(f"{prefix}*.npy"), key=lambda p: int(p.stem[len(prefix):]))
        return [np.load(p, allow_pickle=False) for p in paths]

    return load("input"), load("output")


@dataclass
class Comparison:
    max_abs_diff: float
    max_abs_ref: float
    tolerance: float
    same_top1: bool

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.same_top1


def compare(actual: list[np.ndarray], expected: list[np.ndarray], *,
            relative_tolerance: float = RELATIVE_TOLERANCE,
            absolute_floor: float = ABSOLUTE_FLOOR) -> Comparison:
    """Element-wise closeness and, per output, identical argmax (top-1).

    The build checks with the defaults and records them in the manifest; the
    smoke test passes the manifest's values, so both apply the same rule.
    """
    if len(actual) != len(expected):  # a wrong output count is a mismatch, not a crash
        return Comparison(float("inf"), 0.0, 0.0, False)
    max_diff, max_ref, same_top1 = 0.0, 0.0, True
    for got, want in zip(actual, expected, strict=True):
        if got.shape != want.shape:
            return Comparison(float("inf"), 0.0, 0.0, False)
        got64, want64 = got.astype(np.float64), want.astype(np.float64)
        max_diff = max(max_diff, float(np.max(np.abs(got64 - want64), initial=0.0)))
        max_ref = max(max_ref, float(np.max(np.abs(want64), initial=0.0)))
        if want.size > 1 and want.dtype.kind == "f":
            same_top1 &= bool(np.array_equal(np.argmax(got.reshape(got.shape[0], -1), axis=-1),
                                             np.argmax(want.reshape(want.shape[0], -1), axis=-1)))
    tolerance = max(relative_tolerance * max_ref, absolute_floor)
    return Comparison(max_diff, max_ref, tolerance, same_top1)
