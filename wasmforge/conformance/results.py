"""What became of a case: its status and reason, how outputs are compared, and
the on-disk cache that makes a run resumable.

Statuses:
- `pass`: every data set's outputs match (shape, dtype, and `|out - ref| <=
  atol + rtol * |ref|` element-wise, NaN equal to NaN: numpy's assert_allclose,
  which the onnx backend runner uses);
- `fail`: the module built but gave wrong numbers, or failed/trapped at run time;
- `unsupported`: the case needs an operator or feature the pipeline does not
  have (named in the reason);
- `build_error`: the builder failed on it (the reason names the stage).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

PASS, FAIL, UNSUPPORTED, BUILD_ERROR = "pass", "fail", "unsupported", "build_error"
STATUSES = (PASS, FAIL, UNSUPPORTED, BUILD_ERROR)
# Bump when classification or comparison changes: cached results then no longer apply.
RESULT_FORMAT = 1
_UNSUPPORTED_OPS = re.compile(r"uses ONNX operators the TVM frontend does not support: (.+)$")
_FRONTEND_REFUSES = re.compile(r"not supported|unsupported|not implemented", re.IGNORECASE)


@dataclass
class CaseResult:
    suite: str
    name: str
    status: str
    reason: str = ""
    operator: str = ""  # node suite: the operator the case tests
    ops: list[str] = field(default_factory=list)  # every op type in the graph
    stage: str | None = None  # build errors: the builder's stage
    error: str | None = None  # the builder's own message, kept to reclassify cached results
    build_seconds: float | None = None  # this case's share of the builder run
    link_seconds: float | None = None  # of which cargo build/link
    run_seconds: float | None = None  # load + every data set under wasmtime
    wasm_bytes: int | None = None
    frozen: list[str] = field(default_factory=list)  # attribute-like inputs baked into the build

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CaseResult":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


BUILDER_STAGES = ("import", "optimise", "plan", "compile", "link", "internal")


def reclassify(result: CaseResult) -> CaseResult:
    """A cached builder verdict judged again with today's `classify_build`: the
    classification may change without a rebuild."""
    if result.stage not in BUILDER_STAGES or result.status not in (BUILD_ERROR, UNSUPPORTED):
        return result
    error = result.error or result.reason
    if result.error is None and result.status == UNSUPPORTED:
        return result  # from before `error` was kept: nothing to judge again
    status, reason, _ = classify_build(_Job(error, result.stage))
    return CaseResult.from_dict({**result.to_dict(), "status": status, "reason": reason, "error": error})


@dataclass
class _Job:
    error: str
    stage: str | None


def classify_build(result) -> tuple[str, str, str | None]:
    """(status, reason, stage) of a failed `JobResult` (None: the builder said nothing)."""
    if result is None:
        return BUILD_ERROR, "the builder reported nothing for this case", None
    stage = result.stage or "internal"
    error = (result.error or "").strip()
    match = _UNSUPPORTED_OPS.search(error)
    if match:
        ops = ", ".join(op.strip() for op in match.group(1).split(","))
        return UNSUPPORTED, f"operator {ops}", stage
    if stage == "import" and _FRONTEND_REFUSES.search(error):
        # The frontend converts the operator but says it cannot take this use of
        # it (a runtime axis, a dynamic size, ...): a named missing feature.
        return UNSUPPORTED, error.removeprefix("import failed: ").removeprefix(
            "TVM could not import the model: "), stage
    return BUILD_ERROR, f"{stage}: {error}" if not error.startswith(f"{stage} ") else error, stage


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def compare_outputs(actual: list[np.ndarray], expected: list[np.ndarray], rtol: float,
                    atol: float) -> str | None:
    """None when `actual` matches `expected` as the onnx backend runner checks it;
    else what differs, in one line."""
    if len(actual) != len(expected):
        return f"{len(actual)} outputs, expected {len(expected)}"
    for index, (got, want) in enumerate(zip(actual, expected)):
        got, want = np.asarray(got), np.asarray(want)
        if got.shape != want.shape:
            return f"output {index}: shape {list(got.shape)}, expected {list(want.shape)}"
        if got.dtype != want.dtype:
            return f"output {index}: dtype {got.dtype}, expected {want.dtype}"
        if want.size == 0:
            continue
        # Integers and booleans too, as assert_allclose does (in float64).
        g, w = got.astype(np.float64), want.astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            close = np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
        if not close.all():
            bad = int(np.count_nonzero(~close))
            with np.errstate(invalid="ignore", over="ignore"):
                diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            worst = float(np.nanmax(diff)) if np.isfinite(diff).any() else float("nan")
            # NaN on one side only: the max abs diff above does not show those.
            nan_got = int(np.count_nonzero(np.isnan(g) & ~np.isnan(w)))
            nan_want = int(np.count_nonzero(~np.isnan(g) & np.isnan(w)))
            nans = (f"; {nan_got} NaN where a number was expected" if nan_got else "") + \
                (f"; {nan_want} number(s) where NaN was expected" if nan_want else "")
            return (f"output {index}: {bad} of {want.size} values differ, max abs diff {worst:.3g} "
                    f"(rtol {rtol:g}, atol {atol:g}){nans}")
    return None


# --- the cache ----------------------------------------------------------------------


def tree_digest(paths: list[Path], root: Path) -> str:
    """sha256 over the files' relative paths and contents (sorted)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def compiler_digest(root: Path) -> str:
    """What the builder runs from the work tree: the compiler package, the files
    it imports from the host package, and the Rust runtime's sources."""
    package = root / "wasmforge"
    files = [p for p in (package / "compiler").rglob("*.py")]
    rust = root / "rust_app"
    files += [p for p in rust.rglob("*") if p.is_file() and "target" not in p.relative_to(rust).parts]
    return tree_digest(files, root)


def toolchain_key(root: Path) -> dict:
    """The builder image's recipe, the compiler sources, the result format and wasmtime."""
    from importlib.metadata import version

    from .. import images

    recipe = images.recipe_digest("builder", images.load_pins(), root)
    compiler = compiler_digest(root)
    key = {"builder_recipe": recipe, "compiler_sources": compiler,
           "wasmtime": version("wasmtime"), "result_format": RESULT_FORMAT}
    key["id"] = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return key


class ResultCache:
    """One JSON file per case under `<root>/<toolchain id>/<suite>/`, keyed by the
    case's digest (model + data + tolerances): a rerun with the same toolchain
    skips what is done, and a changed toolchain starts afresh."""

    def __init__(self, root: Path, toolchain_id: str):
        self.root = root / toolchain_id

    def _path(self, case, digest: str) -> Path:
        return self.root / case.suite / f"{case.name}-{digest[:16]}.json"

    def get(self, case, digest: str) -> CaseResult | None:
        path = self._path(case, digest)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if data.get("digest") != digest:
            return None
        return reclassify(CaseResult.from_dict(data["result"]))

    def put(self, case, digest: str, result: CaseResult) -> None:
        path = self._path(case, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"digest": digest, "result": result.to_dict()}, sort_keys=True) + "\n")
        os.replace(tmp, path)  # a crash leaves the old entry or none, never half of one


def summarize(results: list[CaseResult]) -> dict[str, int]:
    counts = {status: 0 for status in STATUSES}
    for result in results:
        counts[result.status] += 1
    return counts


__all__ = ["CaseResult", "ResultCache", "classify_build", "compare_outputs", "summarize",
           "toolchain_key", "PASS", "FAIL", "UNSUPPORTED", "BUILD_ERROR", "STATUSES", "_short"]
