"""Tune a model's conv kernels with MetaSchedule into a database directory.

    python scripts/tune.py --onnx M --out tuning/<model>/<target-name>/ --trials N

Tasks are the fused conv PrimFuncs that optimize.fuse() produces, so optimize()
finds the records by structural equality. Measurement runs natively on one core
of the SSE proxy target (128-bit vectors, no FMA: the closest native CPU to
wasm simd128); the records are target-independent schedules and are applied to
the wasm32 target at build time. No parallel loops are generated (wasm has no
threads). Resumable: a task that already has N records is skipped, and
`--max-tasks` bounds one invocation, so tuning can proceed in chunks. The seed
is fixed; the measured times (and so the records) still vary from run to run,
which is why the database is committed rather than regenerated.

Needs the `xgboost` package for the cost model (falls back to random sampling).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PROXY_TARGET = {"kind": "llvm", "mcpu": "x86-64", "mattr": ["+sse4.2", "-avx", "-avx2", "-fma"],
                "num-cores": 1}


def conv_tasks(onnx_path: Path, shapes: dict[str, list[int]] | None = None):
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from . import optimize
    from .frontend import graph_inputs, import_relax, load_onnx

    model = load_onnx(onnx_path)
    mod = import_relax(model, graph_inputs(model, shapes or {}))
    target = tvm.target.Target(PROXY_TARGET)
    fused = optimize.fuse(mod, target)
    tasks = ms.relax_integration.extract_tasks(fused, target)
    return [t for t in tasks if optimize.CONV_BLOCK in t.dispatched[0]["main"].script()], target


def space():
    """MetaSchedule's LLVM search space minus parallel loops."""
    from tvm.s_tir import meta_schedule as ms

    rules = [ms.schedule_rule.ParallelizeVectorizeUnroll(
                 max_jobs_per_core=-1, max_vectorize_extent=64,
                 unroll_max_steps=[0, 16, 64, 512], unroll_explicit=True)
             if isinstance(r, ms.schedule_rule.ParallelizeVectorizeUnroll) else r
             for r in ms.ScheduleRule.create("llvm")]
    return ms.space_generator.PostOrderApply(sch_rules=rules, postprocs="llvm", mutator_probs="llvm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="database directory")
    parser.add_argument("--trials", type=int, default=64, help="records wanted per task")
    parser.add_argument("--max-tasks", type=int, default=0, help="tune at most this many tasks now")
    parser.add_argument("--only", default="", help="comma-separated task names to tune")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from tvm.s_tir import meta_schedule as ms

    tasks, target = conv_tasks(args.onnx)
    args.out.mkdir(parents=True, exist_ok=True)
    database = ms.database.JSONDatabase(str(args.out / "database_workload.json"),
                                        str(args.out / "database_tuning_record.json"))
    todo = []
    for task in tasks:
        mod = task.dispatched[0]
        have = len(database.get_top_k(database.commit_workload(mod), args.trials)) \
            if database.has_workload(mod) else 0
        wanted = not args.only or task.task_name in args.only.split(",")
        if wanted and have < args.trials:
            todo.append((task, args.trials - have))
    if args.max_tasks:
        todo = todo[: args.max_tasks]
    print(f"{len(tasks)} conv tasks, tuning {len(todo)} now", flush=True)
    try:
        import xgboost  # noqa: F401
        cost_model = "xgb"
    except ImportError:
        cost_model = "random"
    for index, (task, trials) in enumerate(todo):
        print(f"[{index + 1}/{len(todo)}] {task.task_name}: {trials} trials", flush=True)
        context = ms.TuneContext(mod=task.dispatched[0], target=target, space_generator=space(),
                                 search_strategy="evolutionary", task_name=task.task_name,
                                 rand_state=args.seed, num_threads=1).clone()
        ms.tune.tune_tasks(tasks=[context], task_weights=[1.0], work_dir=str(args.out / "logs"),
                           max_trials_global=trials, num_trials_per_iter=min(trials, 32),
                           database=database, cost_model=cost_model,
                           runner=ms.runner.LocalRunner(evaluator_config=ms.runner.EvaluatorConfig(
                               number=3, repeat=1, min_repeat_ms=50, enable_cpu_cache_flush=False)))
    (args.out / "target.json").write_text(json.dumps(PROXY_TARGET, indent=1) + "\n")
    return 0

