"""`python -m wasmforge.smoke DIR`: the release gate for a built artifact.

It runs inside the smoke image (no compiler, no TVM, no network), so it and
everything it imports (artifact, runner, reference) use only the standard
library, numpy and wasmtime. `invoke smoke` (smoke_host.py) starts it there.

Order matters: every file is checked against SHA256SUMS and the manifest
before any of it is loaded as wasm or numpy, so a tampered artifact is refused
without running a byte of it. Then the module runs every recorded reference
case under a memory cap and a time limit and must match onnxruntime's outputs
within the manifest's tolerances, with the same top-1.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from dataclasses import dataclass
from pathlib import Path

from .artifact import MANIFEST_NAME, ArtifactError, Manifest, verify_artifact
from .errors import UserError, WasmRunError
from .model import Model
from .reference import compare, load_case

EXIT_FAILED = 1  # the module ran but disagreed, failed or hit a limit
EXIT_REFUSED = 2  # the artifact does not match its hashes or manifest: nothing ran

# Linear memory per run; the container's own cap (smoke_host) sits above it, so
# a greedy module is stopped here with a message rather than by the OOM killer.
DEFAULT_MEMORY_MIB = 1024  # ResNet50 needs ~230 MiB
DEFAULT_TIME_LIMIT = 120.0  # seconds per run; ResNet50 takes 4-7 s in the container


@dataclass
class CaseResult:
    case: int
    ok: bool
    max_abs_diff: float | None = None
    tolerance: float | None = None
    same_top1: bool | None = None
    wall_ms: float | None = None
    note: str = ""


def run_cases(directory: Path, manifest: Manifest, memory_limit: int, time_limit: float) -> list[CaseResult]:
    """Every reference case the manifest records, checked with its tolerances.

    `manifest` comes from `verify_artifact`, which has validated it and checked
    every file it lists (the module and any weights file among them)."""
    model = Model(directory, manifest, memory_limit=memory_limit, time_limit=time_limit)
    rule = manifest.reference
    results = []
    try:
        for case in range(rule.cases):
            inputs, expected = load_case(directory, case)
            try:
                run = model.wasm.run(model.check_feeds({t.name: a for t, a in zip(model.inputs, inputs)}))
            except (WasmRunError, UserError) as exc:  # a trap or a limit fails this case; the others still run
                results.append(CaseResult(case, False, note=str(exc)))
                continue
            comparison = compare(run.outputs, expected, relative_tolerance=rule.relative_tolerance,
                                 absolute_floor=rule.absolute_floor)
            results.append(CaseResult(case, comparison.ok, comparison.max_abs_diff, comparison.tolerance,
                                      comparison.same_top1, run.wall_s * 1000))
    finally:
        model.close()
    return results


def format_table(results: list[CaseResult]) -> list[str]:
    def num(value, fmt):
        return f"{'-':>9}" if value is None else format(value, fmt)

    lines = [f"{'case':>4}  {'result':6}  {'max|diff|':>9}  {'tolerance':>9}  {'top-1':5}  {'time':>9}"]
    for r in results:
        top1 = "-" if r.same_top1 is None else ("same" if r.same_top1 else "DIFF")
        wall = "-" if r.wall_ms is None else f"{r.wall_ms:.1f} ms"
        line = (f"{r.case:>4}  {'pass' if r.ok else 'FAIL':6}  {num(r.max_abs_diff, '9.2e')}  "
                f"{num(r.tolerance, '9.2e')}  {top1:5}  {wall:>9}")
        lines.append(f"{line}  {r.note}" if r.note else line)
    return lines


def _fail(message: str, code: int) -> int:
    sys.stdout.flush()  # keep the table above the error in the container's merged log
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wasmforge.smoke", description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="the artifact directory (dist/<name>/)")
    parser.add_argument("--memory-limit-mib", type=int, default=DEFAULT_MEMORY_MIB,
                        help=f"linear memory cap per run (default {DEFAULT_MEMORY_MIB})")
    parser.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT,
                        help=f"seconds per run (default {DEFAULT_TIME_LIMIT:g})")
    args = parser.parse_args(argv)
    directory = args.artifact

    try:
        manifest = verify_artifact(directory)
    except ArtifactError as exc:
        return _fail(f"artifact refused: {exc}", EXIT_REFUSED)
    except OSError as exc:  # e.g. unreadable files: refused as well, nothing has run
        return _fail(f"artifact refused: cannot read {exc.filename or directory}: {exc.strerror}", EXIT_REFUSED)
    name = manifest.name or directory.name
    print(f"{name}: every file matches SHA256SUMS and {MANIFEST_NAME}")
    print(f"{name}: {manifest.reference.cases} reference cases on wasmtime {importlib.metadata.version('wasmtime')}, "
          f"memory cap {args.memory_limit_mib} MiB, time limit {args.time_limit:g} s per run")

    try:
        results = run_cases(directory, manifest, args.memory_limit_mib << 20, args.time_limit)
    except (OSError, ValueError, WasmRunError) as exc:  # module or .npy unloadable
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return _fail(f"{name}: cannot run the reference cases: {first}", EXIT_FAILED)
    for line in format_table(results):
        print(line)
    failed = sum(not r.ok for r in results)
    if failed:
        return _fail(f"{name}: {failed} of {len(results)} reference cases failed", EXIT_FAILED)
    print(f"{name}: all {len(results)} reference cases pass", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
