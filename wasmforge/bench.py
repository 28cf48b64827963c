"""`invoke bench`: the .wasm against onnxruntime and native TVM, on the same input.

Engines, each measured in its own process (wasmforge/bench_worker.py) so that
its peak RSS is its own:

- `wasm`: the artifact under wasmtime-py, one thread, precompiled (Cranelift
  compile and instantiation are reported separately, not timed as inference);
  per-inference times come from inside the module (`--repeat`);
- `tract_wasm`: the peer, tract's ONNX runtime built for wasm32-wasip1 with
  simd128 (wasmforge/peers.py), under the same engine configuration, timed
  inside its module too;
- `wasm_epoch` / `tract_wasm_epoch`: both again with wasmtime's epoch
  interruption on (the runner does without it: its time limit is a wall-clock
  kill; what an in-process deadline would cost differs between the two kinds
  of code, so both settings are shown);
- `ort_1t` / `ort_all`: onnxruntime's CPU provider with 1 intra-op thread and
  with every usable core;
- `tvm_native`: the same Relax lowering and plan as the wasm build, kernels
  compiled for the host CPU (scripts/native_plan.py); skipped with a note when
  TVM is not importable.

The engines take turns in `rounds` rounds; in each, every engine gets one
warm-up run and its share of the `runs` timed runs on
`reference.seeded_inputs(manifest inputs, seed=0)`; the statistics are over
all its timed runs. Every engine's output is
compared with onnxruntime (1 thread); a disagreement is reported loudly and
makes the command fail after the report is written.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from . import __version__, artifact, reference
from .bench_worker import EVENT_PREFIX, summary
from .errors import UserError
from .fetch import model_path
from .hashing import sha256_file
from .paths import DIST, PACKAGE
from .registry import get_model
from .terminal import make_console
from .run import artifact_dir

DEFAULT_RUNS = 10
DEFAULT_ROUNDS = 3
SEED = 0
SLOW_RUN, NOISY_SHARE = 1.2, 0.25  # a quarter of the runs 1.2x slower than the fastest: not quiet
# The order of one round: the engines take turns, so a noisy stretch of the
# machine is spread over all of them instead of landing on one.
ENGINES = ("wasm", "tract_wasm", "ort_1t", "ort_all", "tvm_native", "wasm_epoch", "tract_wasm_epoch")
LABELS = {
    "wasm": "wasm",
    "wasm_epoch": "wasm, epoch",
    "tract_wasm": "tract wasm",
    "tract_wasm_epoch": "tract wasm, epoch",
    "ort_1t": "ORT 1 thread",
    "ort_all": "ORT all cores",
    "tvm_native": "TVM native",
}
# The wasm engines: which module, and whether wasmtime's epoch interruption
# is on (off in the runner). Everything else is runner.new_engine's config.
WASM_ENGINES = {
    "wasm": ("wasmforge", False),
    "wasm_epoch": ("wasmforge", True),
    "tract_wasm": ("tract", False),
    "tract_wasm_epoch": ("tract", True),
}
TRACT_VERSION = "tract-onnx 0.22.5"
# Fields every engine entry has (None where they do not apply or the engine did not run).
ENGINE_FIELDS = ("available", "note", "threads", "min_ms", "median_ms", "max_ms", "times_ms", "warmup_ms",
                 "load_ms", "peak_rss_bytes", "baseline_rss_bytes", "max_abs_diff", "agrees", "version", "error")


@dataclass
class Step:
    """A worker's answer: result.json plus its outputs, or why there is none."""

    result: dict
    outputs: list[np.ndarray]
    error: str | None = None
    skipped: str | None = None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def host_info() -> dict:
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {
            "wasmforge": __version__,
            "wasmtime": _package_version("wasmtime"),
            "onnxruntime": _package_version("onnxruntime"),
            "tvm": _package_version("apache-tvm") or _package_version("tvm"),
            "numpy": np.__version__,
        },
    }


def resolve_onnx(manifest: artifact.Manifest, model: str, onnx: str | None) -> Path:
    """The ONNX file the artifact was built from, checked against the manifest's sha256."""
    source = manifest.source
    expected = source.sha256
    if onnx:
        path = Path(onnx)
        if not path.is_file():
            raise UserError(f"no such file: {onnx}")
        if expected and sha256_file(path) != expected:
            raise UserError(f"{path.name} is not the ONNX file dist/{model} was built from (sha256 differs)")
        return path.resolve()
    if source.registry is None:
        raise UserError(f"dist/{model} was built from the file {source.file}; "
                        f"pass it with --onnx PATH")
    path = model_path(get_model(source.registry))
    if expected and sha256_file(path) != expected:
        raise UserError(f"the registry's {source.registry} changed since dist/{model} was built; "
                        f"rebuild it with `invoke build --model {source.registry}`", 1)
    return path


# --- running the workers --------------------------------------------------------


def run_step(step: str, key: str, request: dict, work: Path, progress: Progress, task, label: str,
             runs_total: int | None, runs_before: int = 0) -> Step:
    """Run one worker step in `work/key`, feeding its events into `task`; never raises for a failed step."""
    out_dir = work / key
    out_dir.mkdir(parents=True, exist_ok=True)
    request = {**request, "step": step, "out_dir": str(out_dir)}
    request_path = out_dir / "request.json"
    request_path.write_text(json.dumps(request))
    stderr_path = out_dir / "stderr.txt"
    # The worker imports this very package (first on its path, whether checked out or installed).
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE.parent), os.environ.get("PYTHONPATH")]))}
    with open(stderr_path, "wb") as stderr:
        worker = subprocess.Popen([sys.executable, "-m", "wasmforge.bench_worker", str(request_path)],
                                  stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=PACKAGE.parent, text=True)
        try:
            for line in worker.stdout:
                if not line.startswith(EVENT_PREFIX):
                    continue
                event = json.loads(line[len(EVENT_PREFIX):])
                if event.get("kind") == "phase":
                    progress.update(task, description=f"{label}: {event['text']}")
                elif event.get("kind") == "run" and runs_total:
                    progress.update(task, completed=min(runs_before + event["done"], runs_total))
            code = worker.wait()
        except BaseException:
            worker.kill()
            worker.wait()
            raise
    result_path = out_dir / "result.json"
    if not result_path.is_file():
        lines = [ln for ln in stderr_path.read_text(errors="replace").splitlines() if ln.strip()]
        return Step({}, [], error=f"{step} worker died (exit {code}): {lines[-1] if lines else 'no output'}")
    result = json.loads(result_path.read_text())
    if "skipped" in result:
        return Step(result, [], skipped=result["skipped"])
    if "error" in result or code != 0:
        return Step(result, [], error=result.get("error", f"{step} worker exited with {code}"))
    outputs = sorted(out_dir.glob("output*.npy"), key=lambda p: int(p.stem[len("output"):]))
    return Step(result, [np.load(p, allow_pickle=False) for p in outputs])


def round_sizes(runs: int, rounds: int) -> list[int]:
    """`runs` timed runs spread over `rounds` rounds as evenly as possible (no empty round)."""
    rounds = min(rounds, runs)
    return [runs // rounds + (1 if index < runs % rounds else 0) for index in range(rounds)]


def merge_rounds(steps: list[Step]) -> Step:
    """One engine's rounds as one result: every timed run, the first round's warm-up,
    the median load time and the highest peak RSS; the first failure wins."""
    for step in steps:
        if step.error or step.skipped:
            return step
    first = steps[0].result
    times = [t for step in steps for t in step.result["times_ms"]]
    loads = [step.result["load_ms"] for step in steps if step.result.get("load_ms") is not None]
    peaks = [step.result["peak_rss_bytes"] for step in steps if step.result.get("peak_rss_bytes") is not None]
    result = {**first, **summary(times), "rounds": len(steps),
              "load_ms": statistics.median(loads) if loads else None,
              "peak_rss_bytes": max(peaks) if peaks else None}
    return Step(result, steps[-1].outputs)


def engine_flags(engine: str) -> dict | None:
    """What wasmtime was asked for (runner.new_engine), for a wasm engine."""
    if engine not in WASM_ENGINES:
        return None
    return {"engine": "wasmtime", "cranelift_opt_level": "speed", "relaxed_simd": True,
            "epoch_interruption": WASM_ENGINES[engine][1]}


def empty_engine(note: str | None = None) -> dict:
    entry = dict.fromkeys(ENGINE_FIELDS)
    entry["available"] = False
    entry["note"] = note
    return entry


def engine_entry(step: Step, extra: dict | None = None) -> dict:
    entry = empty_engine()
    entry.update(extra or {})
    if step.skipped or step.error:
        entry["note"] = step.skipped or step.error
        entry["error"] = step.error
        return entry
    result = {k: v for k, v in step.result.items() if k != "python"}
    entry.update(result)
    entry["available"] = True
    return entry


def check_outputs(entry: dict, outputs: list[np.ndarray], expected: list[np.ndarray],
                  rule: artifact.ReferenceRule | None = None) -> None:
    """The build's rule (the manifest's `reference`) or the defaults."""
    if not entry["available"]:
        return
    comparison = reference.compare(
        outputs, expected,
        relative_tolerance=rule.relative_tolerance if rule else reference.RELATIVE_TOLERANCE,
        absolute_floor=rule.absolute_floor if rule else reference.ABSOLUTE_FLOOR)
    entry["max_abs_diff"] = comparison.max_abs_diff
    entry["tolerance"] = comparison.tolerance
    entry["agrees"] = comparison.ok


def ratio(a: dict, b: dict, key: str = "median_ms") -> float | None:
    """a's time over b's (medians; `key="min_ms"`: fastest runs), None unless both ran."""
    if a.get("available") and b.get("available") and a.get(key) and b.get(key):
        return a[key] / b[key]
    return None


def ratios(report: dict) -> dict:
    wasm, ort_1t, ort_all, native = (report[e] for e in ("wasm", "ort_1t", "ort_all", "tvm_native"))
    empty = empty_engine()
    tract, tract_on, wasm_on = (report.get(e, empty) for e in ("tract_wasm", "tract_wasm_epoch", "wasm_epoch"))
    return {
        "wasm_vs_ort_1t": ratio(wasm, ort_1t),
        "wasm_vs_ort_1t_fastest": ratio(wasm, ort_1t, "min_ms"),  # the least disturbed runs of each
        "wasm_vs_ort_all": ratio(wasm, ort_all),
        "wasm_vs_tvm_native": ratio(wasm, native),
        "tvm_native_vs_ort_1t": ratio(native, ort_1t),
        "ort_1t_vs_ort_all": ratio(ort_1t, ort_all),
        # > 1: tract is slower; same engine configuration on both sides
        "tract_wasm_vs_wasm": ratio(tract, wasm),
        "tract_wasm_vs_wasm_epoch": ratio(tract_on, wasm_on),
        "tract_wasm_vs_ort_1t": ratio(tract, ort_1t),
        # what an epoch deadline would cost each kind of code (> 1: slower with it)
        "epoch_cost_wasm": ratio(wasm_on, wasm),
        "epoch_cost_tract_wasm": ratio(tract_on, tract),
    }


def noise_note(report: dict) -> str | None:
    """One line when the runs behind the headline ratio (wasm, onnxruntime 1 thread)
    were not steady: at least NOISY_SHARE of an engine's runs took more than SLOW_RUN
    times its fastest. Ratios of medians then move with how many runs caught a slow
    stretch (on cloud hosts: bursts of a fraction of a second, docs/performance-notes.md).
    Sub-millisecond models are left out: there the timer and the call are the noise."""
    slow = []
    for engine in ("wasm", "ort_1t"):
        entry = report.get(engine) or {}
        times = [t for t in entry.get("times_ms") or [] if t and t > 0]
        if not entry.get("available") or len(times) < 3 or (entry.get("median_ms") or 0) < 1:
            continue
        late = sum(t > SLOW_RUN * min(times) for t in times)
        if late >= NOISY_SHARE * len(times):
            slow.append(f"{late} of {len(times)} {LABELS[engine]} runs over {SLOW_RUN}x the fastest "
                        f"({_ms(min(times))}-{_ms(max(times))} ms)")
    if not slow:
        return None
    fastest = report.get("ratios", {}).get("wasm_vs_ort_1t_fastest")
    by_fastest = f"; wasm / ORT-1T by fastest runs: {fastest:.2f}x" if fastest else ""
    return f"not a quiet machine: {', '.join(slow)}, so the ratio of medians moves from run to run{by_fastest}"


def problems(report: dict) -> list[str]:
    """Why the numbers cannot be trusted: disagreeing outputs or failed engines (not skips)."""
    found = []
    for engine in ENGINES:
        entry = report.get(engine, empty_engine())
        if entry.get("error"):
            found.append(f"{LABELS[engine]} failed: {entry['error']}")
        elif entry["available"] and entry["agrees"] is False:
            found.append(f"{LABELS[engine]} DISAGREES with onnxruntime: max abs diff "
                         f"{entry['max_abs_diff']:.3g} > tolerance {entry['tolerance']:.3g} "
                         f"(or a different top-1)")
    return found


# --- the bench ------------------------------------------------------------------


def bench(model: str, runs: int = DEFAULT_RUNS, json_path: str | None = None, onnx: str | None = None, *,
          rounds: int = DEFAULT_ROUNDS, tract: bool = True, dist: Path = DIST, console: Console | None = None,
          out: Console | None = None) -> dict:
    """Measure every engine and report; returns the report (also written to `json_path`)."""
    if runs < 1:
        raise UserError(f"--runs must be at least 1, got {runs}")
    if rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {rounds}")
    console = console or make_console()  # progress and notes
    out = out or (console if json_path == "-" else make_console(stderr=False))  # the table
    directory = artifact_dir(model, dist)
    manifest = artifact.verify_artifact(directory)
    onnx_path = resolve_onnx(manifest, model, onnx)
    wasm_path = directory / manifest.wasm
    params_name = manifest.params_file  # weights beside the .wasm (--external-params)
    params_path = directory / params_name if params_name else None
    inputs = reference.seeded_inputs(manifest.inputs, seed=SEED)
    cores = usable_cores()
    sizes = round_sizes(runs, rounds)

    report: dict = {
        "model": model,
        "runs": runs,
        "rounds": len(sizes),
        "seed": SEED,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "onnx": {**manifest.source.to_dict(), "file": onnx_path.name},
        "host": host_info(),
        "notes": [],
    }
    notes = report["notes"]
    notes.extend(_reference_input_notes(directory, inputs))
    if params_path is not None:
        notes.append("wasm, epoch: skipped for an --external-params module")
    tract_wasm, tract_note = _tract_peer(tract, console)
    if tract_note:
        notes.append(tract_note)
    started = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="wasmforge-bench-") as tmp:
        work = Path(tmp)
        input_paths = []
        for index, array in enumerate(inputs):
            path = work / f"input{index}.npy"
            np.save(path, array, allow_pickle=False)
            input_paths.append(str(path))
        common = {"inputs": input_paths, "onnx": str(onnx_path), "name": model,
                  "graph_inputs": [t.to_dict() for t in manifest.inputs], "outputs": len(manifest.outputs)}
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            def prepare(name: str, key: str, label: str, extra: dict) -> Step:
                task = progress.add_task(label, total=None)
                result = run_step(name, key, {**common, "runs": runs, **extra}, work, progress, task, label, None)
                done = "skipped" if result.skipped else "FAILED" if result.error else "done"
                progress.update(task, description=f"{label}: {done}", completed=1, total=1)
                return result

            compiled = {}
            for engine, (flavor, epoch) in WASM_ENGINES.items():
                module = str(wasm_path) if flavor == "wasmforge" else tract_wasm
                if module is None or (engine == "wasm_epoch" and params_path is not None):
                    continue
                compiled[engine] = prepare("wasm-compile", f"{engine}-compile", f"{LABELS[engine]}: precompile",
                                           {"wasm": module, "epoch": epoch})
            native_build = prepare("tvm-compile", "tvm-compile", "TVM native: compile",
                                   {"artifact_plan": str(directory / "plan.json")})
            peak = prepare("roofline", "roofline", "wasm SIMD peak (roofline)", {})

            requests = _engine_requests(compiled, native_build, params_path, cores)
            tasks = {engine: progress.add_task(label, total=runs + len(sizes))
                     for engine, (label, _, _) in requests.items()}
            measured: dict[str, list[Step]] = {engine: [] for engine in requests}
            for number, size in enumerate(sizes):
                for engine, (label, step_name, extra) in requests.items():
                    before = sum(sizes[:number]) + number
                    result = run_step(step_name, f"{engine}-{number}", {**common, "runs": size, **extra}, work,
                                      progress, tasks[engine], label, runs + len(sizes), before)
                    measured[engine].append(result)
                    if result.error or result.skipped:
                        progress.update(tasks[engine], description=f"{label}: FAILED")
            for engine, task in tasks.items():
                merged = merge_rounds(measured[engine])
                done = ("skipped" if merged.skipped else "FAILED" if merged.error else
                        f"median {_ms(merged.result['median_ms'])} ms")
                progress.update(task, description=f"{requests[engine][0]}: {done}", completed=runs + len(sizes))
            steps = {engine: merge_rounds(found) for engine, found in measured.items()}
            for engine, step in compiled.items():  # a failed precompile is the engine's failure
                if step.error:
                    steps[engine] = step
            if native_build.error or native_build.skipped:
                steps["tvm_native"] = native_build

    for engine in ENGINES:
        step = steps.get(engine)
        entry = engine_entry(step) if step is not None else empty_engine(_absent_note(engine, tract_note))
        entry["engine_flags"] = engine_flags(engine)
        report[engine] = entry
    report["wasm"] = {"instantiate_ms": None, "linear_memory_bytes": None, **report["wasm"],
                      "wasm_bytes": wasm_path.stat().st_size, "compile_ms": compiled["wasm"].result.get("compile_ms")}
    for engine in ("tract_wasm", "tract_wasm_epoch"):
        if report[engine]["available"]:
            report[engine]["version"] = f"{TRACT_VERSION} (wasm32-wasip1, simd128) on wasmtime {report[engine]['version']}"
            report[engine]["compile_ms"] = compiled[engine].result.get("compile_ms")
    report["tvm_native"].update(compile_s=native_build.result.get("compile_s"),
                                target=native_build.result.get("target"))
    if native_build.skipped:
        notes.append(f"TVM native skipped: {native_build.skipped}")
    elif not native_build.error:
        report["tvm_native"].update(_native_notes(native_build.result, manifest, notes))
    if native_build.result.get("export_error"):
        notes.append("TVM native: the kernel library could not be exported "
                     f"({native_build.result['export_error']}); its peak RSS includes compiling")

    report["roofline"] = None if peak.error else {**peak.result, "unit": "GFLOP/s",
                                                  "kernel": "wasmforge/roofline.py"}
    report["model_flops"] = _model_flops(onnx_path, manifest, notes)
    for engine in ENGINES:
        report[engine].update(throughput(report[engine], engine, report["model_flops"], report["roofline"]))

    # onnxruntime, 1 thread, is the reference for everyone; it is itself checked
    # against the outputs recorded at build time.
    ort_1t = steps["ort_1t"]
    expected, rule = ort_1t.outputs, manifest.reference
    if report["ort_1t"]["available"]:
        recorded = reference.load_case(directory, 0)[1]
        if recorded:
            check_outputs(report["ort_1t"], expected, recorded, rule)
        else:
            report["ort_1t"].update(max_abs_diff=0.0, agrees=True)
        for engine, step in steps.items():
            if engine != "ort_1t":
                check_outputs(report[engine], step.outputs, expected, rule)
    report["ratios"] = ratios(report)
    noisy = noise_note(report)
    report["noisy"] = noisy is not None
    if noisy:
        notes.append(noisy)
    report["ok"] = not problems(report)
    report["bench_seconds"] = time.monotonic() - started

    if json_path == "-":
        print(json.dumps(report, indent=2))
    elif json_path:
        write_json(Path(json_path), report)
    render(report, out)
    found = problems(report)
    if found:
        console.print(Panel("\n".join(found) + "\nThese timings are not comparable.",
                            title="BENCH FAILED", style="bold red"))
        raise UserError(f"bench of {model}: {found[0]}", 1)
    return report


def throughput(entry: dict, engine: str, model_flops: int | None, roofline: dict | None) -> dict:
    """GFLOP/s at the median time and, for a wasm engine, its share of the wasm SIMD
    peak measured under the same engine configuration."""
    if not (entry.get("available") and entry.get("median_ms") and model_flops):
        return {"gflops": None, "percent_of_peak": None}
    gflops = model_flops / entry["median_ms"] / 1e6
    percent = None
    if roofline and engine in WASM_ENGINES:
        config = "epoch_on" if WASM_ENGINES[engine][1] else "epoch_off"
        percent = 100 * gflops / roofline[config]["relaxed_madd"]
    return {"gflops": gflops, "percent_of_peak": percent}


def _model_flops(onnx_path: Path, manifest: artifact.Manifest, notes: list[str]) -> int | None:
    from . import flops

    try:
        counted = flops.count(onnx_path, {t.name: list(t.shape) for t in manifest.inputs})
    except Exception as exc:  # noqa: BLE001 - onnx's shape inference raises many kinds
        notes.append(f"model FLOPs not counted: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}")
        return None
    if counted.unknown:
        notes.append(f"model FLOPs: {len(counted.unknown)} Conv/Gemm/MatMul nodes without inferred shapes "
                     "are not counted")
    return counted.flops or None


def _tract_peer(wanted: bool, console: Console) -> tuple[str | None, str | None]:
    """The tract peer's .wasm (built once per machine), or why it is not measured."""
    if not wanted:
        return None, "tract wasm: not measured (--no-tract)"
    from . import peers
    from .images import docker_client

    try:
        return str(peers.ensure_tract_wasm(docker_client(), console)), None
    except UserError as exc:
        return None, f"tract wasm: not measured: {exc}"


def _absent_note(engine: str, tract_note: str | None) -> str:
    if engine.startswith("tract_wasm"):
        return tract_note or "not measured"
    return "not measured"


def _engine_requests(compiled: dict[str, Step], native_build: Step, params_path: Path | None,
                     cores: int) -> dict[str, tuple[str, str, dict]]:
    """{engine: (progress label, worker step, request fields)} for every engine that can run, in round order."""
    requests: dict[str, tuple[str, str, dict]] = {}
    for engine in ENGINES:
        if engine in WASM_ENGINES:
            step = compiled.get(engine)
            if step is None or step.error:
                continue
            flavor, epoch = WASM_ENGINES[engine]
            if engine == "wasm":
                extra = {"cwasm": step.result["cwasm"], "params": params_path and str(params_path)}
                requests[engine] = (LABELS[engine] + " (wasmtime)", "wasm", extra)
            else:
                requests[engine] = (LABELS[engine], "wasi", {"cwasm": step.result["cwasm"], "flavor": flavor,
                                                             "epoch": epoch})
        elif engine in ("ort_1t", "ort_all"):
            threads = 1 if engine == "ort_1t" else cores
            requests[engine] = (f"onnxruntime {threads} thread{'s' if threads > 1 else ''}", "ort",
                                {"threads": threads})
        elif engine == "tvm_native" and not (native_build.error or native_build.skipped):
            requests[engine] = (LABELS[engine], "tvm-native",
                                {k: native_build.result[k] for k in ("library", "plan", "params")})
    return requests


def write_json(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(report, stream, indent=2)
            stream.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _reference_input_notes(directory: Path, inputs: list[np.ndarray]) -> list[str]:
    recorded = reference.load_case(directory, 0)[0]
    if not recorded or (len(recorded) == len(inputs) and all(map(np.array_equal, recorded, inputs))):
        return []
    return ["the seeded input differs from reference/case0 recorded at build time (numpy's generator changed?)"]


def _native_notes(result: dict, manifest: artifact.Manifest, notes: list[str]) -> dict:
    built_with = manifest.toolchain.get("tvm")
    if built_with and result.get("version") and built_with != result["version"]:
        notes.append(f"TVM native uses the host's TVM {result['version']}; the .wasm was built with {built_with}")
    same = result.get("same_plan_as_wasm")
    calls = manifest.kernel_calls
    if same is False:
        notes.append("TVM native executes a different plan than the one embedded in the .wasm")
    elif same is None and calls is not None and calls != result.get("kernel_calls"):
        same = False
        notes.append(f"TVM native plan has {result.get('kernel_calls')} kernel calls, the .wasm {calls}")
    return {"kernel_calls": result.get("kernel_calls"), "same_plan_as_wasm": same}


# --- output -----------------------------------------------------------------------


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value:.4f}"
    return f"{value:.3f}" if value < 100 else f"{value:.1f}"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _engine_label(engine: str, entry: dict) -> str:
    if engine == "ort_all" and entry.get("threads"):
        return f"ORT {entry['threads']} threads"
    return LABELS[engine]


def render(report: dict, out: Console) -> None:
    host, versions = report["host"], report["host"]["versions"]
    rounds = report.get("rounds", 1)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False,
                  title=f"{report['model']}: {report['runs']} timed runs per engine in {rounds} alternating "
                        f"round{'s' if rounds > 1 else ''} (1 warm-up each), same input (seed {report['seed']})",
                  caption=f"{host['cpu_model']}, {host['usable_cores']}/{host['cores']} cores; wasmtime "
                          f"{versions['wasmtime']}, onnxruntime {versions['onnxruntime']}, TVM {versions['tvm']}")
    for header in ("engine", "min ms", "median ms", "/ORT-1T", "GFLOP/s", "% peak", "load ms", "RSS MiB",
                   "max diff"):
        table.add_column(header, justify="left" if header == "engine" else "right", no_wrap=True)
    base = report["ort_1t"]
    for engine in ENGINES:
        entry = report.get(engine, empty_engine())
        name = _engine_label(engine, entry)
        if not entry["available"]:
            text = "[bold red]FAILED[/bold red]" if entry.get("error") else "[dim]skipped[/dim]"
            table.add_row(name, "-", "-", "-", "-", "-", "-", "-", text)
            continue
        diff = "-" if entry["max_abs_diff"] is None else f"{entry['max_abs_diff']:.1e}"
        if entry["agrees"] is False:
            diff = f"[bold red]{diff} DISAGREES[/bold red]"
        table.add_row(name, _ms(entry["min_ms"]), _ms(entry["median_ms"]), _times(ratio(entry, base)),
                      _num(entry.get("gflops"), "{:.1f}"), _num(entry.get("percent_of_peak"), "{:.0f}%"),
                      _ms(entry["load_ms"]), _mib(entry["peak_rss_bytes"]), diff)
    out.print(table)

    wasm, ratios_, native = report["wasm"], report["ratios"], report["tvm_native"]
    facts = [f".wasm {wasm['wasm_bytes'] / 1e6:.2f} MB"]
    if wasm["available"]:
        facts.append(f"linear memory {_mib(wasm['linear_memory_bytes'])} MiB")
        facts.append(f"instantiate {_ms(wasm['instantiate_ms'])} ms")
    if wasm.get("compile_ms") is not None:
        facts.append(f"Cranelift compile {_ms(wasm['compile_ms'])} ms")
    if native.get("compile_s") is not None:
        facts.append(f"TVM native compile {native['compile_s']:.1f} s")
    out.print(", ".join(facts))
    out.print(f"[bold]wasm / ORT-1T {_times(ratios_['wasm_vs_ort_1t'])}[/bold], wasm / TVM native "
              f"{_times(ratios_['wasm_vs_tvm_native'])}, wasm / ORT all cores {_times(ratios_['wasm_vs_ort_all'])}, "
              f"TVM native / ORT-1T {_times(ratios_['tvm_native_vs_ort_1t'])}")
    if ratios_.get("tract_wasm_vs_wasm") is not None or ratios_.get("tract_wasm_vs_wasm_epoch") is not None:
        out.print(f"[bold]tract wasm / wasm {_times(ratios_['tract_wasm_vs_wasm'])}[/bold] (epoch interruption "
                  f"off for both, as the runner runs; on for both: {_times(ratios_['tract_wasm_vs_wasm_epoch'])}); "
                  f"epoch interruption would cost wasm {_times(ratios_['epoch_cost_wasm'])}, tract wasm "
                  f"{_times(ratios_['epoch_cost_tract_wasm'])}")
    out.print("[dim]wasm engines: wasmtime (Cranelift opt speed, relaxed SIMD on; epoch interruption off, as in "
              "the runner, unless 'epoch'), 1 thread, precompiled, timed inside the module; tract wasm loads the "
              "ONNX inside its module (load = its model optimisation). The others are timed "
              "around the call in Python. TVM native: the same plan, kernels compiled for the host CPU, 1 thread. "
              "load: instantiate / session creation / library + plan setup. RSS: peak of the engine's own "
              "process. max abs diff: against ORT 1 thread, itself checked against the build's recorded "
              "reference.[/dim]")
    roof = report.get("roofline")
    if roof:
        out.print(f"wasm SIMD peak (roofline microkernel): relaxed_madd {roof['epoch_off']['relaxed_madd']:.1f} "
                  f"GFLOP/s, mul+add {roof['epoch_off']['mul_add']:.1f} GFLOP/s (epoch interruption on: "
                  f"{roof['epoch_on']['relaxed_madd']:.1f} / {roof['epoch_on']['mul_add']:.1f}); model "
                  f"{(report.get('model_flops') or 0) / 1e9:.3g} GFLOP per inference (Conv/Gemm/MatMul)")
    for engine in ENGINES:
        if report.get(engine, {}).get("error"):
            out.print(f"[bold red]{_engine_label(engine, report[engine])} failed:[/bold red] {report[engine]['error']}")
    for note in report["notes"]:
        out.print(f"[yellow]note:[/yellow] {note}")
