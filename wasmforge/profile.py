"""Where the time goes: the per-kernel profile of a built module (`invoke profile`).

The module itself times every call of its plan when run with `--profile`
(rust_app/runtime/src/profile.rs: kernel, operator kind, argument shapes, the
FLOPs the compiler estimated, ms per run and their median, GFLOP/s). Here it
runs in the runner's sandbox on the bench's seeded input, `runs` times in one
instance; the machine's wasm SIMD peak is measured under the same engine
configuration (roofline.py), and every call gets its share of it:

    percent_of_peak = 100 * (flops / median ms) / peak GFLOP/s

The peak is that of `f32x4.relaxed_madd` for a module built with relaxed-simd
(the default build), of `f32x4.mul` + `f32x4.add` for a plain simd128 one.
Totals compare the sum of the kernels' medians with the median of whole
inferences (which adds copying the input in and the clock reads themselves).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path

from .errors import UserError, WasmRunError
from .paths import DIST

PROFILE_FORMAT = 1  # the module's document (`"profile": 1`) this reads
REPORT_FORMAT = 1  # what `--json` writes
DEFAULT_RUNS = 5
DEFAULT_TOP = 15
SEED = 0  # the bench's seeded input (reference.seeded_inputs)
# Every call's time is read to the nanosecond's thousandth: per run, the sum of the
# calls can exceed the run by rounding only.
ROUNDING_MS = 1e-6


class ProfileError(WasmRunError):
    """The module's profile is not what a wasmforge module writes."""

    def __init__(self, message: str):
        super().__init__(f"bad profile from the module: {message}", exit_code=1)


def check_document(document: dict) -> dict:
    """`document` (the module's --profile JSON) checked: the fields this reads, with
    their types, one record per call in order, one time per run in each."""
    if not isinstance(document, dict) or document.get("profile") != PROFILE_FORMAT:
        raise ProfileError(f"expected \"profile\": {PROFILE_FORMAT}, got {str(document)[:60]}")
    runs, run_ms, calls = document.get("runs"), document.get("run_ms"), document.get("calls")
    if not (isinstance(runs, int) and runs >= 1 and _numbers(run_ms) and len(run_ms) == runs):
        raise ProfileError("runs / run_ms missing or inconsistent")
    if not isinstance(calls, list):
        raise ProfileError("calls is not a list")
    for position, call in enumerate(calls):
        where = f"calls[{position}]"
        if not isinstance(call, dict) or call.get("index") != position:
            raise ProfileError(f"{where}: not the record of call {position}")
        if not isinstance(call.get("kernel"), str) or not isinstance(call.get("op"), (str, type(None))):
            raise ProfileError(f"{where}: kernel / op missing")
        flops = call.get("flops")
        if not (flops is None or (isinstance(flops, int) and flops >= 0)):
            raise ProfileError(f"{where}: flops is not a count")
        if not (_numbers([call.get("ms")]) and _numbers(call.get("ms_runs")) and len(call["ms_runs"]) == runs):
            raise ProfileError(f"{where}: ms / ms_runs missing or not one per run")
        if not isinstance(call.get("args"), list):
            raise ProfileError(f"{where}: args is not a list")
    return document


def _numbers(values) -> bool:
    return isinstance(values, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in values)


def peak_kind(features: list[str]) -> str:
    """Which roofline kernel bounds a module built with these wasm features."""
    return "relaxed_madd" if "relaxed-simd" in features else "mul_add"


def gflops(flops: int | None, ms: float | None) -> float | None:
    if not flops or not ms:
        return None
    return flops / ms / 1e6


def percent(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None
    return 100 * part / whole


def summarize(document: dict, *, peak: float | None, peak_name: str | None = None,
              peaks: dict | None = None, engine: dict | None = None) -> dict:
    """The report: every call with its GFLOP/s, share of the time and of the peak
    (`peak` GFLOP/s), the same per operator kind, and the totals."""
    check_document(document)
    calls = document["calls"]
    kernel_ms = sum(call["ms"] for call in calls)
    inference_ms = statistics.median(document["run_ms"])
    records = []
    for call in calls:
        rate = gflops(call.get("flops"), call["ms"])
        records.append({**call, "gflops": rate, "percent_of_peak": percent(rate, peak),
                        "percent_of_time": percent(call["ms"], kernel_ms)})
    by_op: dict[str, dict] = {}
    for call in records:
        entry = by_op.setdefault(call["op"] or "unknown", {"op": call["op"] or "unknown", "calls": 0,
                                                           "ms": 0.0, "flops": 0, "flops_known": True})
        entry["calls"] += 1
        entry["ms"] += call["ms"]
        if call.get("flops") is None:
            entry["flops_known"] = False
        else:
            entry["flops"] += call["flops"]
    ops = []
    for entry in sorted(by_op.values(), key=lambda e: (-e["ms"], e["op"])):
        flops = entry.pop("flops") if entry.pop("flops_known") else None
        rate = gflops(flops, entry["ms"])
        ops.append({**entry, "flops": flops, "gflops": rate, "percent_of_peak": percent(rate, peak),
                    "percent_of_time": percent(entry["ms"], kernel_ms)})
    total_flops = sum(call["flops"] for call in calls if call.get("flops") is not None)
    rate = gflops(total_flops, inference_ms)
    shares = [percent(sum(call["ms_runs"][run] for call in calls), total)
              for run, total in enumerate(document["run_ms"])]
    return {
        "format": REPORT_FORMAT,
        "model": document.get("model"),
        "runs": document["runs"],
        "engine": engine or {},
        "peak": {"kind": peak_name, "gflops": peak, "measured": peaks or {}},
        "run_ms": document["run_ms"],
        "inference_ms": inference_ms,
        "kernel_ms": kernel_ms,
        # per run: the kernels' sum as a share of that run (medians do not add up)
        "kernel_percent_of_run": shares,
        "flops": total_flops,
        "calls_without_flops": sum(1 for call in calls if call.get("flops") is None),
        "gflops": rate,
        "percent_of_peak": percent(rate, peak),
        "kernel_gflops": gflops(total_flops, kernel_ms),
        "calls": records,
        "ops": ops,
    }


def consistent(document: dict) -> list[str]:
    """Where the module's times contradict each other: in every run the calls (timed
    inside the run) cannot add up to more than the run."""
    problems = []
    for run, total in enumerate(document["run_ms"]):
        kernels = sum(call["ms_runs"][run] for call in document["calls"])
        if kernels > total + ROUNDING_MS * (len(document["calls"]) + 1):
            problems.append(f"run {run}: the kernels took {kernels:.6f} ms of a {total:.6f} ms run")
    return problems


# --- running ------------------------------------------------------------------------


def profile(model: str, *, runs: int = DEFAULT_RUNS, json_path: str | None = None, top: int = DEFAULT_TOP,
            dist: Path | None = None, console=None, out=None) -> dict:
    """Profile dist/<model>/, print the table, write the report to `json_path`; return it."""
    from .run import artifact_dir

    if runs < 1:
        raise UserError(f"--runs must be at least 1, got {runs}")
    if top < 1:
        raise UserError(f"--top must be at least 1, got {top}")
    from .terminal import make_console

    console = console or make_console()
    out = out or (console if json_path == "-" else make_console(stderr=False))
    directory = artifact_dir(model, DIST if dist is None else dist)

    from . import reference, roofline
    from .model import load
    from .runner import new_engine

    loaded = load(directory)
    try:
        features = list(loaded.wasm.info().get("features") or [])
        feeds = dict(zip((t.name for t in loaded.inputs), reference.seeded_inputs(loaded.inputs, seed=SEED)))
        console.print(f"profiling {model}: {runs} run(s) with --profile in the sandbox ...")
        try:
            result = loaded.wasm.run(loaded.check_feeds(feeds), repeat=runs, profile=True)
        except WasmRunError as exc:
            if "unknown argument '--profile'" in str(exc):
                raise UserError(f"dist/{model} was built before --profile existed; rebuild it "
                                f"(invoke build --model {model})") from None
            raise
    finally:
        loaded.close()
    document = check_document(result.profile)
    problems = consistent(document)
    if problems:
        raise ProfileError(problems[0])
    console.print("measuring the wasm SIMD peak (roofline microkernel, same engine configuration) ...")
    peaks = roofline.measure(new_engine())
    kind = peak_kind(features)
    report = summarize(document, peak=peaks[kind], peak_name=kind, peaks=peaks,
                       engine={"runtime": "wasmtime (the runner's sandbox)", "epoch_interruption": False,
                               "features": features})
    show(report, out, top)
    if json_path is not None:
        text = json.dumps(report, indent=1) + "\n"
        if json_path == "-":
            print(text, end="")
        else:
            write_json(Path(json_path), text)
            console.print(f"wrote {json_path}")
    return report


def write_json(path: Path, text: str) -> None:
    """Whole or not at all: a temporary file beside it, then renamed."""
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- output -------------------------------------------------------------------------


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _ms(value: float) -> str:
    return f"{value:.5f}" if value < 0.1 else f"{value:.3f}"


def _shape(call: dict) -> str:
    """The output's shape: TVM kernels take their outputs last."""
    args = call.get("args") or []
    shape = args[-1].get("shape") if args and isinstance(args[-1], dict) else None
    return "x".join(map(str, shape)) if isinstance(shape, list) else "-"


def show(report: dict, out, top: int = DEFAULT_TOP) -> None:
    from rich import box
    from rich.table import Table

    calls = sorted(report["calls"], key=lambda c: (-c["ms"], c["index"]))
    table = Table(title=f"{report['model']}: top {min(top, len(calls))} of {len(calls)} kernel calls by time "
                        f"(median of {report['runs']} run(s))", box=box.SIMPLE)
    for name, justify in (("#", "right"), ("kernel", "left"), ("op", "left"), ("output", "left"),
                          ("ms", "right"), ("% time", "right"), ("MFLOP", "right"), ("GFLOP/s", "right"),
                          ("% peak", "right")):
        table.add_column(name, justify=justify)
    for call in calls[:top]:
        table.add_row(str(call["index"]), call["kernel"], call["op"] or "-", _shape(call), _ms(call["ms"]),
                      _num(call["percent_of_time"], "{:.1f}"),
                      _num(None if call.get("flops") is None else call["flops"] / 1e6, "{:.4g}"),
                      _num(call["gflops"], "{:.2f}"), _num(call["percent_of_peak"], "{:.1f}"))
    out.print(table)
    ops = Table(title="by operator kind", box=box.SIMPLE)
    for name, justify in (("op", "left"), ("calls", "right"), ("ms", "right"), ("% time", "right"),
                          ("GFLOP/s", "right"), ("% peak", "right")):
        ops.add_column(name, justify=justify)
    for entry in report["ops"]:
        ops.add_row(entry["op"], str(entry["calls"]), _ms(entry["ms"]), _num(entry["percent_of_time"], "{:.1f}"),
                    _num(entry["gflops"], "{:.2f}"), _num(entry["percent_of_peak"], "{:.1f}"))
    out.print(ops)
    peak = report["peak"]
    shares = [s for s in report["kernel_percent_of_run"] if s is not None]
    within = f"; in each run the kernels are {min(shares):.1f}-{max(shares):.1f}% of it" if shares else ""
    out.print(f"kernels: {report['kernel_ms']:.3f} ms (sum of the per-call medians); whole inference "
              f"{report['inference_ms']:.3f} ms (median){within}, the rest is copying the input in "
              "and the clock reads")
    amount = (f"{report['flops'] / 1e9:.4g} GFLOP" if report["flops"] >= 1e8
              else f"{report['flops'] / 1e6:.4g} MFLOP")
    out.print(f"model: {amount} (TVM's estimate per kernel; "
              f"{report['calls_without_flops']} call(s) without one) -> {_num(report['gflops'], '{:.2f}')} GFLOP/s "
              f"= {_num(report['percent_of_peak'], '{:.1f}')}% of the wasm SIMD peak "
              f"({peak['kind']}: {_num(peak['gflops'], '{:.1f}')} GFLOP/s, measured now)")
