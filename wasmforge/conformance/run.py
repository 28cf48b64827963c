"""`invoke conformance`: ONNX backend test cases through the real pipeline.

Per case: read its model and data sets on the host (non-tensor or non-plan
dtypes -> `unsupported`), vet the model as `invoke build` does, compile it in
the builder image (many cases per container run: the Rust runtime compiles once
per chunk), run every `test_data_set_*` under wasmtime with the runner's limits
and compare with the suite's outputs and tolerances. Results are cached per case
(model + data digest) under the toolchain's key, so an interrupted or repeated
run only does what is missing. Built modules live in .cache/conformance/work/
(never in dist/) and are removed once judged.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from ..errors import UserError
from ..paths import ROOT
from ..terminal import make_console
from . import cases as casemod
from .cases import CONFORMANCE_CACHE, SUITES, Case, CaseData
from .results import (BUILD_ERROR, FAIL, PASS, UNSUPPORTED, CaseResult, ResultCache, _short,
                      classify_build, compare_outputs, summarize, toolchain_key)

DEFAULT_CHUNK = 50
RUN_TIME_LIMIT = 60.0  # seconds per data set under wasmtime
RUN_MEMORY_LIMIT = 1 << 30
# The CI sample: fixed seed and size (see docs/conformance.md for its timing).
CI_LIMIT = 150
_GRAPH_MARK = re.compile(r"graph: (\S+): ")
_WASM_MARK = re.compile(r"wasm: (\S+): ")
_DONE_MARK = re.compile(r"done: (\S+)\.wasm ")


@dataclass
class SuiteRun:
    suite: str
    total: int
    selected: list[Case]
    results: list[CaseResult] = field(default_factory=list)


@dataclass
class Pending:
    case: Case
    data: CaseData
    digest: str
    label: str  # the build name inside its chunk
    model: Path  # the case's model, or its copy with attribute-like inputs frozen


class _StepClock(Console):
    """A console for the builder step that writes its log to a file and notes
    when each step line appeared (per-case build and link times)."""

    def __init__(self, log):
        super().__init__(file=log, width=200, no_color=True, soft_wrap=True, highlight=False)
        self.marks: list[tuple[float, str]] = []

    def print(self, *objects, **kwargs):  # noqa: A003 - rich's name
        self.marks.append((time.monotonic(), " ".join(str(o) for o in objects)))
        super().print(*objects, **kwargs)


INFRASTRUCTURE_RETRIES = 2


class _Infrastructure(Exception):
    def __init__(self, message: str, missing: list):
        super().__init__(message)
        self.missing = missing


def crash_reason(message: str) -> str:
    """`builder failed with exit code 136: <log tail>` -> `exit code 136 (SIGFPE)` (the tail is
    the previous jobs' output; the whole log is in .cache/conformance/logs/)."""
    import signal

    match = re.search(r"exit code (\d+)", message)
    if not match:
        return _short(message)
    code = int(match.group(1))
    name = ""
    if code > 128:
        with contextlib.suppress(ValueError):
            name = f" ({signal.Signals(code - 128).name})"
    return f"exit code {code}{name}"


class Conformance:
    def __init__(self, *, jobs: int = 1, chunk: int = DEFAULT_CHUNK, cache: Path = CONFORMANCE_CACHE,
                 console: Console | None = None, rerun: bool = False, keep: bool = False):
        self.jobs, self.chunk, self.cache = max(1, jobs), max(1, chunk), cache
        self.console = console or make_console(highlight=False)
        self.rerun, self.keep = rerun, keep
        self.toolchain = toolchain_key(ROOT)
        self.results_cache = ResultCache(cache / "results", self.toolchain["id"])
        # Per process: two runs at once must not share (or delete) each other's directories.
        self.run_tag = f"run{os.getpid()}"
        self.work = cache / "work" / self.toolchain["id"] / self.run_tag
        self._lock = threading.Lock()
        self._done = 0
        self._total = 0
        self._labels = 0
        self._client = self._builder = None
        self.chunk_overheads: list[float] = []

    # -- progress -------------------------------------------------------------------
    def say(self, text: str) -> None:
        with self._lock:
            self.console.print(text, markup=False, highlight=False)

    def _record(self, pending: Pending | None, case: Case, result: CaseResult, suite_run: SuiteRun,
                cached: bool = False, digest: str | None = None, store: bool = True) -> None:
        """Note `result` (and store it in the cache unless it came from there or `store` is off)."""
        if store and not cached:
            self.results_cache.put(case, digest or pending.digest, result)
        with self._lock:
            suite_run.results.append(result)
            self._done += 1
            timing = ""
            if result.build_seconds is not None:
                timing += f" build {result.build_seconds:.1f} s"
            if result.run_seconds is not None:
                timing += f" run {result.run_seconds:.1f} s"
            detail = f"  {_short(result.reason, 160)}" if result.reason else ""
            origin = " (cached)" if cached else ""
            self.console.print(f"[{self._done:>{len(str(self._total))}}/{self._total}] {case.key}: "
                               f"{result.status}{origin}{timing}{detail}", markup=False, highlight=False)

    # -- the run --------------------------------------------------------------------
    def run(self, suites: list[str], *, limit: int | None = None, seed: int = 0) -> list[SuiteRun]:
        runs = []
        for suite in suites:
            everything = casemod.discover(suite, self.cache)
            chosen = casemod.sample(everything, limit, seed)
            runs.append(SuiteRun(suite, len(everything), chosen))
            sampled = f", a sample of {len(chosen)} (seed {seed})" if len(chosen) < len(everything) else ""
            self.say(f"suite {suite}: {len(everything)} cases{sampled}")
        self._total = sum(len(r.selected) for r in runs)
        pending: list[tuple[Pending, SuiteRun]] = []
        for suite_run in runs:
            for case in suite_run.selected:
                item = self._prepare(case, suite_run)
                if item is not None:
                    pending.append((item, suite_run))
        if pending:
            self._build_all(pending)
        for suite_run in runs:
            order = {c.name: i for i, c in enumerate(suite_run.selected)}
            suite_run.results.sort(key=lambda r: order[r.name])
        return runs

    def _prepare(self, case: Case, suite_run: SuiteRun) -> Pending | None:
        """A cached result, a host-side verdict, or a case to build."""
        try:
            digest = case.digest()
            data = casemod.load_case(case)
            frozen = []
            if not data.unsupported:
                import onnx

                frozen = casemod.attribute_inputs(onnx.load(str(case.model), load_external_data=False), data)
        except Exception as exc:  # noqa: BLE001 - a broken case is that case's result
            result = CaseResult(case.suite, case.name, BUILD_ERROR,
                                f"host: cannot read the case: {_short(str(exc) or type(exc).__name__)}",
                                stage="host")
            self._record(None, case, result, suite_run, store=False)  # nothing stable to key it by
            return None
        if frozen:
            # What is built differs from the model as shipped: so does the key.
            digest = hashlib.sha256(f"{digest} frozen {' '.join(frozen)}".encode()).hexdigest()
        if not self.rerun:
            cached = self.results_cache.get(case, digest)
            if cached is not None:
                self._record(None, case, cached, suite_run, cached=True)
                return None
        if data.unsupported:
            result = CaseResult(case.suite, case.name, UNSUPPORTED, data.unsupported,
                                operator=data.operator, ops=data.ops)
            self._record(None, case, result, suite_run, digest=digest)
            return None
        from ..onnx_guard import inspect_onnx

        model_path = case.model
        try:
            if frozen:
                model_path = casemod.freeze_inputs(case, data, frozen, self.cache / "frozen" / digest[:24])
            inspect_onnx(model_path)  # what `invoke build` vets before any container starts
        except UserError as exc:
            result = CaseResult(case.suite, case.name, BUILD_ERROR, f"vet: {exc}", stage="vet",
                                operator=data.operator, ops=data.ops, frozen=data.frozen)
            self._record(None, case, result, suite_run, digest=digest)
            return None
        except Exception as exc:  # noqa: BLE001 - a broken case is that case's result
            result = CaseResult(case.suite, case.name, BUILD_ERROR,
                                f"host: {type(exc).__name__}: {_short(str(exc))}", stage="host",
                                operator=data.operator, ops=data.ops, frozen=data.frozen)
            self._record(None, case, result, suite_run, digest=digest)
            return None
        self._labels += 1
        return Pending(case, data, digest, f"c{self._labels:05d}", model_path)

    def _build_all(self, pending: list[tuple[Pending, SuiteRun]]) -> None:
        from .. import images

        self._client = images.docker_client()
        self._builder = images.ensure_builder(self._client, self.console)
        chunks = [pending[i:i + self.chunk] for i in range(0, len(pending), self.chunk)]
        self.say(f"building {len(pending)} cases in {len(chunks)} builder run(s) of up to {self.chunk}, "
                 f"{self.jobs} at a time")
        try:
            if self.jobs == 1:
                for index, chunk in enumerate(chunks):
                    self._chunk(index, chunk)
                return
            with ThreadPoolExecutor(self.jobs) as pool:
                for future in [pool.submit(self._chunk, i, c) for i, c in enumerate(chunks)]:
                    future.result()
        finally:
            if not self.keep:
                shutil.rmtree(self.work, ignore_errors=True)

    def _chunk(self, index: int, chunk: list[tuple[Pending, SuiteRun]]) -> None:
        """Build the chunk in one builder run, judging each case as soon as its
        result line arrives (wasmtime on the host overlaps the builder). If the
        container itself dies (a crash or OOM in one job), the job that reported
        nothing is that crash's case; the ones after it go into a new builder run."""
        remaining = list(chunk)
        attempt = failures = 0
        while remaining:
            try:
                remaining = self._builder_run(f"chunk{index}-{attempt}", remaining)
            except _Infrastructure as exc:
                # Docker, not a case (e.g. the container removed under us by
                # another process): what was reported stays; retry the rest.
                failures += 1
                if failures > INFRASTRUCTURE_RETRIES:
                    raise UserError(str(exc), 1) from None
                self.say(f"builder run chunk{index}-{attempt} broke off ({_short(str(exc), 200)}); "
                         f"retrying its {len(exc.missing)} unreported case(s)")
                remaining = exc.missing
            attempt += 1

    def _builder_run(self, tag: str, remaining: list[tuple[Pending, SuiteRun]]) -> list:
        from ..build import compile_sources
        from ..container import StepOutput
        from ..source import Source

        work = self.work / tag
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        sources, out_dirs = [], {}
        for item, _ in remaining:
            out_dirs[item.label] = work / item.label
            out_dirs[item.label].mkdir()
            sources.append(Source(item.label, item.model.resolve(), {"file": "model.onnx"},
                                  input_shapes=item.data.input_shapes))
        log_path = self.cache / "logs" / f"{self.run_tag}-{tag}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        output = StepOutput()
        failure: list[str] = []
        started = time.monotonic()
        with open(log_path, "w") as log:
            clock = _StepClock(log)

            def build() -> None:
                try:
                    compile_sources(sources, out_dirs, client=self._client, builder=self._builder,
                                    console=clock, step_output=output)
                except UserError as exc:
                    failure.append(str(exc))
                except Exception as exc:  # noqa: BLE001 - reported below, after the judged cases
                    failure.append(f"{type(exc).__name__}: {exc}")
                    failure.append("infrastructure")

            builder = threading.Thread(target=build, name=f"builder-{tag}", daemon=True)
            builder.start()
            judged = 0
            while True:
                finished = not builder.is_alive()
                arrived = list(output.results)
                for result in arrived[judged:]:
                    position = next((i for i, (p, _) in enumerate(remaining) if p.label == result.name), None)
                    if position is None:
                        continue
                    item, suite_run = remaining[position]
                    verdict = self._judge(item, result, out_dirs[item.label])
                    self._add_times(verdict, self._times(clock.marks, item.label, time.monotonic()))
                    self._record(item, item.case, verdict, suite_run)
                    if not self.keep:
                        shutil.rmtree(out_dirs[item.label], ignore_errors=True)
                judged = len(arrived)
                if finished:
                    break
                builder.join(0.2)
        first = next((t for t, text in clock.marks if _GRAPH_MARK.search(text)), None)
        if first is not None:
            with self._lock:
                self.chunk_overheads.append(first - started)
        if not self.keep:
            shutil.rmtree(work, ignore_errors=True)
        reported = {r.name for r in output.results}
        missing = [(item, run) for item, run in remaining if item.label not in reported]
        if not missing:
            return []
        if not failure or "infrastructure" in failure:
            # Ended without reporting every case and without a failing exit: the
            # builder or Docker is broken, not a case.
            raise _Infrastructure(f"the builder run stopped without results for {len(missing)} case(s)"
                                  + (f": {failure[0]}" if failure else ""), missing)
        started_labels = {m.group(1) for _, text in clock.marks if (m := _GRAPH_MARK.search(text))}
        culprit, suite_run = missing[0]
        if culprit.label not in started_labels:
            raise UserError(f"the builder run failed before its case {culprit.case.key} began: {failure[0]}")
        verdict = CaseResult(culprit.case.suite, culprit.case.name, BUILD_ERROR,
                             f"builder crashed: {crash_reason(failure[0])}", stage="crash",
                             operator=culprit.data.operator, ops=culprit.data.ops, frozen=culprit.data.frozen)
        self._add_times(verdict, self._times(clock.marks, culprit.label, time.monotonic()))
        self._record(culprit, culprit.case, verdict, suite_run)
        return missing[1:]

    @staticmethod
    def _times(marks: list[tuple[float, str]], label: str, now: float) -> dict | None:
        """`build`: from the case's graph step to its done line (or the next case's
        graph step, or now); `link`: from its wasm step to the same end."""
        start = wasm = end = None
        for t, text in list(marks):
            if (m := _GRAPH_MARK.search(text)):
                if start is not None and end is None:
                    end = t
                if m.group(1) == label:
                    start = t
            elif start is not None and end is None:
                if (m := _WASM_MARK.search(text)) and m.group(1) == label:
                    wasm = t
                elif (m := _DONE_MARK.search(text)) and m.group(1) == label:
                    end = t
        if start is None:
            return None
        end = end if end is not None else now
        times = {"build": end - start}
        if wasm is not None:
            times["link"] = end - wasm
        return times

    @staticmethod
    def _add_times(result: CaseResult, times: dict | None) -> None:
        if times:
            result.build_seconds = round(times["build"], 2)
            if "link" in times:
                result.link_seconds = round(times["link"], 2)

    def _judge(self, item: Pending, job, out_dir: Path) -> CaseResult:
        from ..runner import WasmModel, WasmRunError

        case, data = item.case, item.data
        base = dict(suite=case.suite, name=case.name, operator=data.operator, ops=data.ops, frozen=data.frozen)
        if job is None or job.error is not None:
            status, reason, stage = classify_build(job)
            return CaseResult(status=status, reason=reason, stage=stage,
                              error=job.error if job is not None else None, **base)
        wasm = out_dir / f"{item.label}.wasm"
        if not wasm.is_file():
            return CaseResult(status=BUILD_ERROR, reason="the builder wrote no .wasm", stage="link", **base)
        started = time.monotonic()
        size = wasm.stat().st_size
        try:
            module = WasmModel(wasm, memory_limit=RUN_MEMORY_LIMIT, time_limit=RUN_TIME_LIMIT)
            foreign = sorted(f"{m}::{n}" for m, n in module.imports() if m != "wasi_snapshot_preview1")
            if foreign:  # `invoke build` refuses such a module too
                return CaseResult(status=BUILD_ERROR, stage="link", wasm_bytes=size,
                                  reason=f"the module imports {', '.join(foreign)} (only WASI is allowed)",
                                  **base)
            for number, (inputs, expected) in enumerate(data.data_sets):
                try:
                    outputs = module.run(inputs).outputs
                except WasmRunError as exc:
                    return CaseResult(status=FAIL, reason=f"run: {_short(str(exc))}", wasm_bytes=size,
                                      run_seconds=round(time.monotonic() - started, 2), **base)
                problem = compare_outputs(outputs, expected, case.rtol, case.atol)
                if problem is not None:
                    where = f"data set {number}: " if len(data.data_sets) > 1 else ""
                    return CaseResult(status=FAIL, reason=where + problem, wasm_bytes=size,
                                      run_seconds=round(time.monotonic() - started, 2), **base)
        except Exception as exc:  # noqa: BLE001 - whatever goes wrong is this case's failure
            return CaseResult(status=FAIL, reason=f"run: {type(exc).__name__}: {_short(str(exc))}",
                              wasm_bytes=size, run_seconds=round(time.monotonic() - started, 2), **base)
        return CaseResult(status=PASS, wasm_bytes=size, run_seconds=round(time.monotonic() - started, 2),
                          **base)


def suite_record(run: SuiteRun, *, limit: int | None, seed: int, toolchain: dict) -> dict:
    """One suite's section of the results JSON."""
    return {
        "total": run.total,
        "selected": len(run.selected),
        "limit": limit,
        "seed": seed,
        "onnx": casemod.onnx_version(),
        "toolchain": {k: v for k, v in toolchain.items()},
        "run_at": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "counts": summarize(run.results),
        "cases": [r.to_dict() for r in run.results],
    }


def conformance(suite: str = "all", *, jobs: int = 1, limit: int | None = None, seed: int = 0,
                chunk: int = DEFAULT_CHUNK, json_path: str | None = None, docs: bool = False,
                rerun: bool = False, keep: bool = False, min_pass: float | None = None,
                console: Console | None = None) -> dict:
    """Run the suites; print a summary; write `json_path` and (with `docs`) merge
    into docs/conformance.json and regenerate docs/conformance.md. With
    `min_pass` (percent), fail if a suite's pass rate is lower (CI's bar)."""
    from . import report

    if suite == "all":
        suites = list(SUITES)
    elif suite in SUITES:
        suites = [suite]
    else:
        raise UserError(f"unknown suite '{suite}' (one of {', '.join(SUITES)}, all)")
    if limit is not None and limit < 1:
        raise UserError("--limit must be at least 1")
    runner = Conformance(jobs=jobs, chunk=chunk, console=console, rerun=rerun, keep=keep)
    started = time.monotonic()
    runs = runner.run(suites, limit=limit, seed=seed)
    elapsed = time.monotonic() - started
    doc = {"format": report.DOC_FORMAT,
           "suites": {r.suite: suite_record(r, limit=limit, seed=seed, toolchain=runner.toolchain)
                      for r in runs}}
    for line in report.summary_lines(doc):
        runner.say(line)
    if runner.chunk_overheads:
        runner.say(f"builder container start to first case: "
                   f"{sum(runner.chunk_overheads) / len(runner.chunk_overheads):.1f} s per run")
    runner.say(f"done in {elapsed:.0f} s")
    if json_path:
        report.write_json(doc, Path(json_path) if json_path != "-" else None)
    if docs:
        merged = report.merge(report.load(report.DOCS_JSON), doc)
        report.write_docs(merged)
        runner.say(f"wrote {report.DOCS_JSON.relative_to(ROOT)} and {report.DOCS_MD.relative_to(ROOT)}")
    if min_pass is not None:
        low = [f"{name} {100.0 * section['counts'][PASS] / section['selected']:.1f}%"
               for name, section in doc["suites"].items()
               if section["selected"] and 100.0 * section["counts"][PASS] / section["selected"] < min_pass]
        if low:
            raise UserError(f"pass rate below {min_pass:g}%: {', '.join(low)}", 1)
    return doc


if __name__ == "__main__":
    sys.exit("run `invoke conformance`")
