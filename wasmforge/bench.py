"""`invoke bench`: the .wasm against onnxruntime and native TVM, on the same input.

Engines, each measured in its own process (wasmforge/bench_worker.py) so that
its peak RSS is its own:

- `wasm`: the artifact under wasmtime-py, one thread, precompiled (Cranelift
  compile and instantiation are reported separately, not timed as inference);
  per-inference times come from inside the module (`--repeat`);
- `ort_1t` / `ort_all`: onnxruntime's CPU provider with 1 intra-op thread and
  with every usable core;
- `tvm_native`: the same Relax lowering and plan as the wasm build, kernels
  compiled for the host CPU (scripts/native_plan.py); skipped with a note when
  TVM is not importable.

Every engine gets one warm-up run and then `runs` timed runs on
`reference.seeded_inputs(manifest inputs, seed=0)`. Every engine's output is
compared with onnxruntime (1 thread); a disagreement is reported loudly and
makes the command fail after the report is written.
"""

from __future__ import annotations

import json
import os
import platform
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
from .bench_worker import EVENT_PREFIX
from .errors import UserError
from .fetch import model_path
from .hashing import sha256_file
from .paths import DIST, PACKAGE
from .registry import get_model
from .run import artifact_dir

DEFAULT_RUNS = 10
SEED = 0
ENGINES = ("wasm", "ort_1t", "ort_all", "tvm_native")
LABELS = {
    "wasm": "wasm",
    "ort_1t": "ORT 1 thread",
    "ort_all": "ORT all cores",
    "tvm_native": "TVM native",
}
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
             runs_total: int | None) -> Step:
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
                    progress.update(task, completed=min(event["done"], runs_total))
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


def ratio(a: dict, b: dict) -> float | None:
    if a.get("available") and b.get("available") and a.get("median_ms") and b.get("median_ms"):
        return a["median_ms"] / b["median_ms"]
    return None


def ratios(report: dict) -> dict:
    wasm, ort_1t, ort_all, native = (report[e] for e in ENGINES)
    return {
        "wasm_vs_ort_1t": ratio(wasm, ort_1t),
        "wasm_vs_ort_all": ratio(wasm, ort_all),
        "wasm_vs_tvm_native": ratio(wasm, native),
        "tvm_native_vs_ort_1t": ratio(native, ort_1t),
        "ort_1t_vs_ort_all": ratio(ort_1t, ort_all),
    }


def problems(report: dict) -> list[str]:
    """Why the numbers cannot be trusted: disagreeing outputs or failed engines (not skips)."""
    found = []
    for engine in ENGINES:
        entry = report[engine]
        if entry.get("error"):
            found.append(f"{LABELS[engine]} failed: {entry['error']}")
        elif entry["available"] and entry["agrees"] is False:
            found.append(f"{LABELS[engine]} DISAGREES with onnxruntime: max abs diff "
                         f"{entry['max_abs_diff']:.3g} > tolerance {entry['tolerance']:.3g} "
                         f"(or a different top-1)")
    return found


# --- the bench ------------------------------------------------------------------


def bench(model: str, runs: int = DEFAULT_RUNS, json_path: str | None = None, onnx: str | None = None, *,
          dist: Path = DIST, console: Console | None = None, out: Console | None = None) -> dict:
    """Measure every engine and report; returns the report (also written to `json_path`)."""
    if runs < 1:
        raise UserError(f"--runs must be at least 1, got {runs}")
    console = console or Console(stderr=True)  # progress and notes
    out = out or (console if json_path == "-" else Console())  # the table
    directory = artifact_dir(model, dist)
    manifest = artifact.verify_artifact(directory)
    onnx_path = resolve_onnx(manifest, model, onnx)
    wasm_path = directory / manifest.wasm
    params_name = manifest.params_file  # weights beside the .wasm (--external-params)
    params_path = directory / params_name if params_name else None
    inputs = reference.seeded_inputs(manifest.inputs, seed=SEED)
    cores = usable_cores()

    report: dict = {
        "model": model,
        "runs": runs,
        "seed": SEED,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "onnx": {**manifest.source.to_dict(), "file": onnx_path.name},
        "host": host_info(),
        "notes": [],
    }
    notes = report["notes"]
    notes.extend(_reference_input_notes(directory, inputs))
    started = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="wasmforge-bench-") as tmp:
        work = Path(tmp)
        input_paths = []
        for index, array in enumerate(inputs):
            path = work / f"input{index}.npy"
            np.save(path, array, allow_pickle=False)
            input_paths.append(str(path))
        common = {"inputs": input_paths, "runs": runs, "onnx": str(onnx_path), "name": model,
                  "graph_inputs": [t.to_dict() for t in manifest.inputs]}
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            def step(name: str, key: str, label: str, extra: dict, total: int | None = runs + 1) -> Step:
                task = progress.add_task(label, total=total)
                result = run_step(name, key, {**common, **extra}, work, progress, task, label, total)
                done = ("skipped" if result.skipped else "FAILED" if result.error else
                        f"median {_ms(result.result['median_ms'])} ms" if "median_ms" in result.result else "done")
                progress.update(task, description=f"{label}: {done}", completed=total or 1, total=total or 1)
                return result

            compiled = step("wasm-compile", "wasm-compile", "wasm: precompile", {"wasm": str(wasm_path)}, total=None)
            native_build = step("tvm-compile", "tvm-compile", "TVM native: compile",
                                {"artifact_plan": str(directory / "plan.json")}, total=None)
            ort_1t = step("ort", "ort_1t", "onnxruntime 1 thread", {"threads": 1})
            ort_all = step("ort", "ort_all", f"onnxruntime {cores} threads", {"threads": cores})
            if compiled.error:
                wasm = compiled
            else:
                wasm = step("wasm", "wasm", "wasm (wasmtime)", {"cwasm": compiled.result["cwasm"],
                                                                 "params": params_path and str(params_path)})
            if native_build.error or native_build.skipped:
                native = native_build
            else:
                native = step("tvm-native", "tvm_native", "TVM native", {
                    k: native_build.result[k] for k in ("library", "plan", "params")})

    report["wasm"] = engine_entry(wasm, {
        "wasm_bytes": wasm_path.stat().st_size,
        "compile_ms": compiled.result.get("compile_ms"),
        "instantiate_ms": None,
        "linear_memory_bytes": None,
    })
    report["ort_1t"] = engine_entry(ort_1t)
    report["ort_all"] = engine_entry(ort_all)
    report["tvm_native"] = engine_entry(native, {
        "compile_s": native_build.result.get("compile_s"),
        "target": native_build.result.get("target"),
    })
    if native_build.skipped:
        notes.append(f"TVM native skipped: {native_build.skipped}")
    elif not native_build.error:
        report["tvm_native"].update(_native_notes(native_build.result, manifest, notes))
    if native_build.result.get("export_error"):
        notes.append("TVM native: the kernel library could not be exported "
                     f"({native_build.result['export_error']}); its peak RSS includes compiling")

    # onnxruntime, 1 thread, is the reference for everyone; it is itself checked
    # against the outputs recorded at build time.
    expected, rule = ort_1t.outputs, manifest.reference
    if report["ort_1t"]["available"]:
        recorded = reference.load_case(directory, 0)[1]
        if recorded:
            check_outputs(report["ort_1t"], expected, recorded, rule)
        else:
            report["ort_1t"].update(max_abs_diff=0.0, agrees=True)
        for engine, result in (("wasm", wasm), ("ort_all", ort_all), ("tvm_native", native)):
            check_outputs(report[engine], result.outputs, expected, rule)
    report["ratios"] = ratios(report)
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
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=f"{report['model']}: {report['runs']} timed runs per engine after 1 warm-up, "
                        f"same input (seed {report['seed']})",
                  caption=f"{host['cpu_model']}, {host['usable_cores']}/{host['cores']} cores; wasmtime "
                          f"{versions['wasmtime']}, onnxruntime {versions['onnxruntime']}, TVM {versions['tvm']}")
    for header in ("engine", "min ms", "median ms", "/ORT-1T", "load ms", "RSS MiB", "max diff"):
        table.add_column(header, justify="left" if header == "engine" else "right", no_wrap=True)
    base = report["ort_1t"]
    for engine in ENGINES:
        entry = report[engine]
        name = _engine_label(engine, entry)
        if not entry["available"]:
            text = "[bold red]FAILED[/bold red]" if entry.get("error") else "[dim]skipped[/dim]"
            table.add_row(name, "-", "-", "-", "-", "-", text)
            continue
        diff = "-" if entry["max_abs_diff"] is None else f"{entry['max_abs_diff']:.1e}"
        if entry["agrees"] is False:
            diff = f"[bold red]{diff} DISAGREES[/bold red]"
        table.add_row(name, _ms(entry["min_ms"]), _ms(entry["median_ms"]), _times(ratio(entry, base)),
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
    out.print("[dim]wasm: wasmtime, 1 thread, precompiled, timed inside the module; the others are timed "
              "around the call in Python. TVM native: the same plan, kernels compiled for the host CPU, 1 thread. "
              "load: instantiate / session creation / library + plan setup. RSS: peak of the engine's own "
              "process. max abs diff: against ORT 1 thread, itself checked against the build's recorded "
              "reference.[/dim]")
    for engine in ENGINES:
        if report[engine].get("error"):
            out.print(f"[bold red]{_engine_label(engine, report[engine])} failed:[/bold red] {report[engine]['error']}")
    for note in report["notes"]:
        out.print(f"[yellow]note:[/yellow] {note}")
