"""tune.py: MetaSchedule searching with the wasm builder/runner, hand vs tuned as wasm,
and a database holding only the tasks where tuning wins."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from wasmforge.compiler import tune, wasm_measure

from .test_wasm_measure import conv_func


def test_winners_keep_only_tasks_that_beat_the_hand_schedule():
    rows = [{"task": "faster", "hand_ms": 1.0, "tuned_ms": 0.9},
            {"task": "just-faster", "hand_ms": 1.0, "tuned_ms": 0.95},
            {"task": "within-noise", "hand_ms": 1.0, "tuned_ms": 0.96},
            {"task": "slower", "hand_ms": 1.0, "tuned_ms": 1.5},
            {"task": "failed", "hand_ms": 1.0, "tuned_ms": None},
            {"task": "no-hand-schedule", "hand_ms": None, "tuned_ms": 2.0}]
    assert tune.winners(rows, 0.05) == ["faster", "just-faster", "no-hand-schedule"]
    assert tune.winners(rows, 0.0) == ["faster", "just-faster", "within-noise", "no-hand-schedule"]
    assert tune.winners(rows, -1.0) == ["faster", "just-faster", "within-noise", "slower", "no-hand-schedule"]


def test_table_names_every_task_and_the_kept_ones():
    rows = [{"task": "a", "weight": 2, "hand_ms": 1.0, "tuned_ms": 0.5, "ratio": 2.0},
            {"task": "b", "weight": 1, "hand_ms": 1.0, "tuned_ms": None}]
    lines = tune.table(rows, ["a"]).splitlines()
    assert lines[1].split() == ["a", "2", "1.000", "0.500", "2.00x", "yes"]
    assert lines[2].split() == ["b", "1", "1.000", "-", "-", "no"]


@pytest.mark.skipif(wasm_measure.wasm_linker() is None, reason="needs wasm-ld or rust-lld")
def test_wasm_tuning_compares_and_writes_only_kept_tasks(tmp_path):
    """Two small conv tasks, a few trials each, measured as wasm; the database written
    holds exactly the kept task, and the build's lookup finds it there only."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from wasmforge.compiler import wasm_measure

    target = tvm.target.Target(tune.wasm_tune_target())
    tasks = [SimpleNamespace(task_name=name, weight=1, dispatched=[tvm.IRModule({"main": func})])
             for name, func in (("small", conv_func(h=6, w=8)), ("wide", conv_func(h=4, w=16, ic=1)))]
    search = ms.database.JSONDatabase(str(tmp_path / "w.json"), str(tmp_path / "r.json"))
    builder, runner = wasm_measure.builder(), wasm_measure.make_runner(5.0, 2)
    for task in tasks:  # replay-trace: random samples of tune.space(), cheaper than evolving them
        context = ms.TuneContext(mod=task.dispatched[0], target=target, space_generator=tune.space(),
                                 search_strategy="replay-trace", task_name=task.task_name,
                                 rand_state=0, num_threads=1).clone()
        ms.tune.tune_tasks(tasks=[context], task_weights=[1.0], work_dir=str(tmp_path / "logs"),
                           max_trials_global=3, num_trials_per_iter=3, database=search, cost_model="random",
                           builder=builder, runner=runner)
    records = search.get_all_tuning_records()
    assert records and all(r.run_secs and 0 < float(r.run_secs[0]) < 1 for r in records)

    rows = tune.compare(tasks, search, target)
    assert [r["task"] for r in rows] == ["small", "wide"]
    assert all(r["hand_ms"] > 0 and r["tuned_ms"] > 0 and r["ratio"] > 0 for r in rows)

    out = tmp_path / "out"
    out.mkdir()
    tune.write_database(out, tasks, search, ["wide"])
    kept = ms.database.JSONDatabase(*(str(out / f) for f in tune.DATABASE_FILES), allow_missing=False)
    assert len(kept.get_all_tuning_records()) == 1
    assert not kept.has_workload(tasks[0].dispatched[0]) and kept.has_workload(tasks[1].dispatched[0])

    tune.write_database(out, tasks, search, [])
    assert not any((out / f).exists() for f in tune.DATABASE_FILES)


@pytest.mark.skipif(wasm_measure.wasm_linker() is None, reason="needs wasm-ld or rust-lld")
def test_hand_space_times_every_variant_and_the_best_replays(tmp_path):
    """--space hand: one record per variant of the hand schedule, each timed as wasm; the
    best record is what the build would apply, and it computes what the hand schedule does."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from wasmforge.compiler import conv_variants

    target = tvm.target.Target(tune.wasm_tune_target())
    func = conv_func(h=4, w=8)
    task = SimpleNamespace(task_name="small", weight=1, dispatched=[tvm.IRModule({"main": func})])
    search = ms.database.JSONDatabase(str(tmp_path / "w.json"), str(tmp_path / "r.json"))
    tune.search_hand([(task, 1)], target, search)
    records = search.get_all_tuning_records()
    assert len(records) == len(conv_variants.variants(func)) > 1
    assert all(0 < float(r.run_secs[0]) < 1 for r in records)
    best = search.query_schedule(task.dispatched[0], target, "main")
    (fastest,) = search.get_top_k(search.commit_workload(task.dispatched[0]), 1)
    assert float(fastest.run_secs[0]) == min(float(r.run_secs[0]) for r in records)
    tvm.ir.assert_structural_equal(best.mod["main"].without_attr("global_symbol"),
                                   _replayed(func, fastest.trace).without_attr("global_symbol"))
    (row,) = tune.compare([task], search, target)
    assert row["hand_ms"] > 0 and row["tuned_ms"] > 0


def _replayed(func, trace):
    import tvm
    from tvm import s_tir

    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    trace.apply_to_schedule(sch, remove_postproc=False)
    return sch.mod["main"]
