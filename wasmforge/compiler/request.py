"""What the host asks the builder for, and what it gets back: plain data.

The host writes one `BuildRequest` as JSON (the single argument of
`python -m wasmforge.compiler build`); the compiler prints one result line per
model (`RESULT_PREFIX` + JSON) on its output stream, which the host's
`Container` collects. Nothing here imports TVM or onnx, so both sides share it.
Container paths only: the host decides what is mounted where.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

# A line starting with this carries one model's result (JSON) back to the host.
RESULT_PREFIX = "@@wasmforge-result "
# Lines starting with this mark a step; the host shows them with timings.
STEP_PREFIX = "==> "

# `invoke build --features`: the WebAssembly SIMD features the kernels may use
# (TVM's `mattr`). relaxed-simd is the fastest (the convolutions' multiply-adds
# become `f32x4.relaxed_madd`, an FMA where the host has one) but not every
# engine has it (Node 20, Safari); simd128 alone runs everywhere SIMD does.
FEATURES = {
    "relaxed-simd": ("+simd128", "+relaxed-simd"),
    "simd128": ("+simd128",),
}
DEFAULT_FEATURES = "relaxed-simd"


@dataclass(frozen=True)
class ModelJob:
    """One model to compile: the ONNX file, where the artifact goes, how."""

    name: str
    onnx: str
    out: str
    # Static shapes for inputs whose declared shape is dynamic (or to override it).
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    # Inputs baked into the graph as constants: name -> {"value": number} or
    # {"npy": container path of a .npy file}.
    frozen: dict[str, dict] = field(default_factory=dict)
    external_params: bool = False
    tuning_db: str | None = None
    features: str = DEFAULT_FEATURES  # a key of FEATURES
    # The registry's input preprocessing, baked into the module's --info.
    preprocessing: str | None = None


@dataclass(frozen=True)
class BuildRequest:
    jobs: list[ModelJob]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "BuildRequest":
        data = json.loads(text)
        return cls(jobs=[ModelJob(**job) for job in data["jobs"]])


@dataclass(frozen=True)
class JobResult:
    """One model's outcome: `graph` (the compiler's description) or `error`."""

    name: str
    graph: dict | None = None
    error: str | None = None
    # 2: the model is at fault (unsupported, malformed); 1: anything else.
    exit_code: int = 0
    stage: str | None = None
    warnings: list[str] = field(default_factory=list)

    def line(self) -> str:
        return RESULT_PREFIX + json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def parse(cls, line: str) -> "JobResult | None":
        if not line.startswith(RESULT_PREFIX):
            return None
        return cls(**json.loads(line[len(RESULT_PREFIX):]))


def parse_shape(spec: str) -> tuple[str, list[int]]:
    """`NAME=1x3x224x224` -> (NAME, [1, 3, 224, 224]); ValueError with a usable message."""
    name, sep, dims = spec.rpartition("=")
    try:
        shape = [int(d) for d in dims.split("x")]
    except ValueError:
        shape = []
    if not sep or not name or not shape or min(shape) < 1:
        raise ValueError(f"bad --input-shape '{spec}' (expected NAME=1x3x224x224)")
    return name, shape


def parse_shapes(specs) -> dict[str, list[int]]:
    return dict(parse_shape(spec) for spec in specs)
