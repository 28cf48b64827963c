"""One row per model: the summary of several `invoke bench` reports.

`invoke bench --model A --model B ...` benches each model in turn (each with
its own alternating rounds) and ends with this table: median times of every
engine, the ratios the project is judged by (wasm / onnxruntime 1 thread,
tract wasm / wasm, both with epoch interruption off, as in the runner), and
the wasm module's throughput against the wasm SIMD peak measured in the same
model's run. The README's performance table is this table's Markdown form
(`markdown`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from .errors import UserError

# (key, header, engine): the median times taken from each report
TIMES = (
    ("wasm_ms", "wasm ms", "wasm"),
    ("tract_wasm_ms", "tract wasm ms", "tract_wasm"),
    ("ort_1t_ms", "ORT 1T ms", "ort_1t"),
    ("ort_all_ms", "ORT all ms", "ort_all"),
    ("tvm_native_ms", "TVM native ms", "tvm_native"),
)


def _median(report: dict, engine: str) -> float | None:
    entry = report.get(engine) or {}
    return entry.get("median_ms") if entry.get("available") else None


def row(report: dict) -> dict:
    """The summary of one model's report (None where an engine did not run)."""
    ratios, wasm, roof = report.get("ratios", {}), report.get("wasm") or {}, report.get("roofline")
    out = {"model": report["model"]}
    for key, _, engine in TIMES:
        out[key] = _median(report, engine)
    out.update(
        wasm_vs_ort_1t=ratios.get("wasm_vs_ort_1t"),
        wasm_vs_ort_1t_fastest=ratios.get("wasm_vs_ort_1t_fastest"),
        tract_wasm_vs_wasm=ratios.get("tract_wasm_vs_wasm"),
        ort_all_threads=(report.get("ort_all") or {}).get("threads"),
        gflop=report["model_flops"] / 1e9 if report.get("model_flops") else None,
        wasm_gflops=wasm.get("gflops"),
        wasm_percent_of_peak=wasm.get("percent_of_peak"),
        peak_gflops=roof["epoch_off"]["relaxed_madd"] if roof else None,
        ok=report.get("ok", False),
        noisy=report.get("noisy", False),
    )
    return out


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


HEADERS = ("model", *(header for _, header, _ in TIMES), "wasm/ORT-1T", "fastest runs", "tract/wasm", "GFLOP",
           "wasm GFLOP/s", "peak GFLOP/s", "% peak")


def cells(summary: dict) -> list[str]:
    return [summary["model"], *(_ms(summary[key]) for key, _, _ in TIMES), _x(summary["wasm_vs_ort_1t"]),
            _x(summary["wasm_vs_ort_1t_fastest"]), _x(summary["tract_wasm_vs_wasm"]),
            _num(summary["gflop"], "{:.3g}"),
            _num(summary["wasm_gflops"], "{:.1f}"), _num(summary["peak_gflops"], "{:.1f}"),
            _num(summary["wasm_percent_of_peak"], "{:.0f}%")]


def render(rows: list[dict], out: Console) -> None:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="summary: medians per model (epoch interruption "
                  "off for both wasm engines, as in the runner; % peak against the wasm SIMD peak of the same run)")
    for header in HEADERS:
        table.add_column(header, justify="left" if header == "model" else "right", no_wrap=True)
    for summary in rows:
        table.add_row(*cells(summary))
    noisy = [summary["model"] for summary in rows if summary.get("noisy")]
    if noisy:
        table.caption = (f"not a quiet run (each one's note says which engine's runs spread): {', '.join(noisy)}; "
                         "their medians' ratios move with the machine, the fastest runs' less")
    out.print(table)


def markdown(rows: list[dict]) -> str:
    """The same table as GitHub Markdown (what the README shows)."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|---" + "|---:" * (len(HEADERS) - 1) + "|"]
    lines += ["| " + " | ".join(cells(summary)) + " |" for summary in rows]
    return "\n".join(lines) + "\n"


def bench_models(models: list[str], *, json_path: str | None = None, console: Console | None = None,
                 out: Console | None = None, **options) -> list[dict]:
    """`bench.bench` each model in turn, then the summary table. A model whose bench
    fails is reported and the others still run; the task fails at the end. With
    `json_path`: {"models": [report, ...], "summary": [row, ...]}."""
    from .bench import bench, write_json
    from .terminal import make_console

    console = console or make_console()
    out = out or (console if json_path == "-" else make_console(stderr=False))
    reports, failed = [], []
    for number, model in enumerate(models, 1):
        console.print(f"[bold]bench {number}/{len(models)}: {model}[/bold]")
        try:
            reports.append(bench(model, console=console, out=out, **options))
        except UserError as exc:
            console.print(f"[bold red]error:[/bold red] {exc}")
            failed.append(model)
    rows = [row(report) for report in reports]
    if rows:
        render(rows, out)
    document = {"models": reports, "summary": rows}
    if json_path == "-":
        json.dump(document, sys.stdout, indent=2)
        print()
    elif json_path:
        write_json(Path(json_path), document)
    if failed:
        raise UserError(f"bench failed for {len(failed)} of {len(models)} model(s): {', '.join(failed)}", 1)
    return rows
