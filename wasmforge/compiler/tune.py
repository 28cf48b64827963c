"""Tune a model's conv kernels with MetaSchedule into a database directory.

    python -m wasmforge.compiler tune --onnx M --out tuning/<model>/wasm32-simd128/ --trials N
        [--max-tasks K] [--only NAMES] [--measure wasm|native] [--min-gain 0.05]

Tasks are the fused conv PrimFuncs that optimize.fuse() produces, so optimize()
finds the records by structural equality. By default each candidate is measured
as wasm under wasmtime (wasm_measure.py: built for the wasm32 target with the
build's TIR pipeline, linked with wasm-ld, timed in the project's engine
config); `--measure native` keeps the old SSE proxy (128-bit vectors, no FMA,
timed natively), which misjudges wasm by 1.6-2.2x (docs/performance-notes.md).
No parallel loops are generated (wasm has no threads).

The search records go to `<out>/search/` (resumable: a task that already has N
records is skipped, `--max-tasks` bounds one invocation). Then every task with
records is measured in the wasm harness twice, with the hand schedule
(optimize.schedules()) and with its best record; `<out>/database_*.json` (what
the build applies) is rewritten to hold only the tasks whose record beats the
hand schedule by at least `--min-gain`, and `<out>/report.json` holds the table.
The seed is fixed; measured times (and so records) vary from run to run, which
is why the database is committed rather than regenerated.

Needs the `xgboost` package for the cost model (falls back to random sampling).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PROXY_TARGET = {"kind": "llvm", "mcpu": "x86-64", "mattr": ["+sse4.2", "-avx", "-avx2", "-fma"],
                "num-cores": 1}
# MetaSchedule asks every target for a core count; one core: the wasm build has no threads.
def wasm_tune_target() -> dict:
    from .graph_lib import WASM_TARGET

    return {**WASM_TARGET, "num-cores": 1}


DATABASE_FILES = ("database_workload.json", "database_tuning_record.json")
REPORT = "report.json"


def conv_tasks(onnx_path: Path, target_dict: dict, shapes: dict[str, list[int]] | None = None):
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from . import optimize
    from .frontend import graph_inputs, import_relax, load_onnx

    model = load_onnx(onnx_path)
    mod = import_relax(model, graph_inputs(model, shapes or {}))
    target = tvm.target.Target(target_dict)
    fused = optimize.fuse(mod, target)
    tasks = ms.relax_integration.extract_tasks(fused, target)
    return [t for t in tasks if _is_conv(t.dispatched[0]["main"].script())], target


def _is_conv(script: str) -> bool:
    from . import optimize, winograd

    return optimize.CONV_BLOCK in script or winograd.GEMM in script


def space():
    """MetaSchedule's LLVM search space minus parallel loops and weight layout rewrites
    (the build's plan passes weights as they are)."""
    from tvm.s_tir import meta_schedule as ms

    rules = [ms.schedule_rule.ParallelizeVectorizeUnroll(
                 max_jobs_per_core=-1, max_vectorize_extent=64,
                 unroll_max_steps=[0, 16, 64, 512], unroll_explicit=True)
             if isinstance(r, ms.schedule_rule.ParallelizeVectorizeUnroll) else r
             for r in ms.ScheduleRule.create("llvm")]
    postprocs = [p for p in ms.Postproc.create("llvm") if not isinstance(p, ms.postproc.RewriteLayout)]
    return ms.space_generator.PostOrderApply(sch_rules=rules, postprocs=postprocs, mutator_probs="llvm")


def winners(rows: list[dict], min_gain: float) -> list[str]:
    """Names of the tasks whose tuned kernel beats the hand schedule by at least `min_gain`
    (0.05: 5% less time); a task without a hand schedule wins whenever it has a tuned time."""
    keep = []
    for row in rows:
        tuned, hand = row.get("tuned_ms"), row.get("hand_ms")
        if tuned is not None and (hand is None or tuned <= hand * (1.0 - min_gain)):
            keep.append(row["task"])
    return keep


def compare(tasks, search, target, rounds: int = 7) -> list[dict]:
    """Per task with records: hand and best tuned kernel, both timed as wasm, in turns."""
    from . import optimize
    from .wasm_measure import measure_func, measure_funcs

    rows = []
    for task in tasks:
        mod = task.dispatched[0]
        if not search.has_workload(mod):
            continue
        row = {"task": task.task_name, "weight": int(task.weight), "hand_ms": None, "tuned_ms": None}
        records = search.get_top_k(search.commit_workload(mod), 1 << 20)
        if not records:
            continue
        row["records"] = len(records)
        hand = optimize.hand_schedule(mod["main"])
        tuned = search.query_schedule(mod, target, "main").mod["main"]
        funcs = {key: func for key, func in (("hand_ms", hand), ("tuned_ms", tuned)) if func is not None}
        try:  # in turns: on a shared machine, load changes between two separate runs flip the verdict
            seconds = measure_funcs(list(funcs.values()), target, rounds=rounds)
            row.update({key: round(s * 1e3, 4) for key, s in zip(funcs, seconds)})
        except Exception:  # noqa: BLE001 - one of them fails as wasm: time each alone
            for key, func in funcs.items():
                try:
                    row[key] = round(measure_func(func, target) * 1e3, 4)
                except Exception as exc:  # noqa: BLE001 - a kernel that fails as wasm: no time, no win
                    text = str(exc).strip()
                    row[f"{key[:-3]}_error"] = f"{type(exc).__name__}: {text.splitlines()[-1] if text else ''}"
        if row["hand_ms"] and row["tuned_ms"]:
            row["ratio"] = round(row["hand_ms"] / row["tuned_ms"], 3)
        rows.append(row)
    return rows


def write_database(out: Path, tasks, search, keep: list[str]) -> None:
    """Rewrite out/database_*.json with the best record of each task in `keep`; none kept:
    no database (the build then uses the hand schedules alone)."""
    from tvm.s_tir import meta_schedule as ms

    for name in DATABASE_FILES:
        (out / name).unlink(missing_ok=True)
    if not keep:
        return
    database = ms.database.JSONDatabase(*(str(out / f) for f in DATABASE_FILES))
    for task in tasks:
        if task.task_name in keep:
            mod = task.dispatched[0]
            (best,) = search.get_top_k(search.commit_workload(mod), 1)
            database.commit_tuning_record(ms.database.TuningRecord(
                best.trace, database.commit_workload(mod), best.run_secs, best.target, best.args_info))


def table(rows: list[dict], keep: list[str]) -> str:
    def ms_text(value):
        return "-" if value is None else f"{value:.3f}"

    lines = [f"{'task':44} {'calls':>5} {'hand ms':>9} {'tuned ms':>9} {'hand/tuned':>10}  kept"]
    for row in rows:
        ratio = f"{row['ratio']:.2f}x" if "ratio" in row else "-"
        lines.append(f"{row['task']:44} {row['weight']:>5} {ms_text(row['hand_ms']):>9} "
                     f"{ms_text(row['tuned_ms']):>9} {ratio:>10}  {'yes' if row['task'] in keep else 'no'}")
    return "\n".join(lines)


SEARCH_ROUNDS = 3  # --space hand: every variant timed once per round, in turns


def search_hand(tasks_todo, target, search) -> None:
    """`--space hand`: every variant of each task's hand schedule (conv_variants.py) timed
    as wasm, all in turns (SEARCH_ROUNDS rounds), each committed to `search` as a tuning
    record (its trace and time)."""
    from tvm.s_tir import meta_schedule as ms

    from .conv_variants import variants
    from .wasm_measure import measure_funcs

    for index, (task, _) in enumerate(tasks_todo):
        mod = task.dispatched[0]
        found = variants(mod["main"])
        print(f"[{index + 1}/{len(tasks_todo)}] {task.task_name}: {len(found)} variants", flush=True)
        times = measure_funcs([sch.mod["main"] for _, sch in found], target, rounds=SEARCH_ROUNDS,
                              min_repeat_ms=50.0)
        workload = search.commit_workload(mod)
        args_info = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
        for (_, sch), seconds in zip(found, times):
            search.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, [seconds], target, args_info))


def _tune(tasks_todo, target, search, args) -> None:
    if args.space == "hand":
        search_hand(tasks_todo, target, search)
        return
    from tvm.s_tir import meta_schedule as ms

    from . import wasm_measure

    try:
        import xgboost  # noqa: F401
        cost_model = "xgb"
    except ImportError:
        cost_model = "random"
    if args.measure == "wasm":
        builder, runner = wasm_measure.builder(), wasm_measure.make_runner()
    else:
        builder = "local"
        runner = ms.runner.LocalRunner(evaluator_config=ms.runner.EvaluatorConfig(
            number=3, repeat=1, min_repeat_ms=50, enable_cpu_cache_flush=False))
    for index, (task, trials) in enumerate(tasks_todo):
        print(f"[{index + 1}/{len(tasks_todo)}] {task.task_name}: {trials} trials", flush=True)
        context = ms.TuneContext(mod=task.dispatched[0], target=target, space_generator=space(),
                                 search_strategy="evolutionary", task_name=task.task_name,
                                 rand_state=args.seed, num_threads=1).clone()
        ms.tune.tune_tasks(tasks=[context], task_weights=[1.0], work_dir=str(args.out / "search" / "logs"),
                           max_trials_global=trials, num_trials_per_iter=min(trials, 32),
                           database=search, cost_model=cost_model, builder=builder, runner=runner)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="database directory")
    parser.add_argument("--trials", type=int, default=64, help="records wanted per task")
    parser.add_argument("--max-tasks", type=int, default=0, help="tune at most this many tasks now")
    parser.add_argument("--only", default="", help="comma-separated task names to tune")
    parser.add_argument("--space", choices=("hand", "generic"), default="hand",
                        help="the hand schedules' variants, all timed (default), or MetaSchedule's generic "
                             "LLVM space searched for --trials records")
    parser.add_argument("--measure", choices=("wasm", "native"), default="wasm",
                        help="time candidates as wasm under wasmtime (default) or natively on the SSE proxy")
    parser.add_argument("--min-gain", type=float, default=0.05,
                        help="a task's record is kept when it takes at least this fraction less time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.space == "hand" and args.measure != "wasm":
        print("error: --space hand is measured as wasm only (drop --measure native)")
        return 2

    from tvm.s_tir import meta_schedule as ms

    from .graph_lib import WASM_TARGET

    tasks, target = conv_tasks(args.onnx, wasm_tune_target() if args.measure == "wasm" else PROXY_TARGET)
    (args.out / "search").mkdir(parents=True, exist_ok=True)
    search = ms.database.JSONDatabase(*(str(args.out / "search" / f) for f in DATABASE_FILES))
    only = [name for name in args.only.split(",") if name]
    unknown = sorted(set(only) - {t.task_name for t in tasks})
    if unknown:
        print(f"error: no conv task named {', '.join(unknown)}")
        return 1
    todo = []
    for task in tasks:
        mod = task.dispatched[0]
        have = len(search.get_top_k(search.commit_workload(mod), args.trials)) \
            if search.has_workload(mod) else 0
        wanted = 1 if args.space == "hand" else args.trials  # hand: every variant, once
        if (not only or task.task_name in only) and have < wanted:
            todo.append((task, wanted - have))
    if args.max_tasks:
        todo = todo[: args.max_tasks]
    print(f"{len(tasks)} conv tasks, tuning {len(todo)} now (measured {args.measure})", flush=True)
    _tune(todo, target, search, args)

    import tvm

    wasm_target = tvm.target.Target(WASM_TARGET)
    rows = compare(tasks, search, wasm_target)
    keep = winners(rows, args.min_gain)
    write_database(args.out, tasks, search, keep)
    from importlib.metadata import version

    report = {"space": args.space, "measure": args.measure, "min_gain": args.min_gain,
              "timed_as": f"wasm under wasmtime-py {version('wasmtime')} (sandbox.new_engine), hand and "
                          "tuned in turns",
              "target": WASM_TARGET if args.measure == "wasm" else PROXY_TARGET, "tasks": rows, "kept": keep}
    (args.out / REPORT).write_text(json.dumps(report, indent=1) + "\n")
    print(table(rows, keep), flush=True)
    print(f"{len(keep)} of {len(rows)} tuned tasks beat the hand schedule by >= {args.min_gain:.0%}: "
          f"{args.out / DATABASE_FILES[1]}", flush=True)
    return 0
