"""wasmtime limits: a runaway or memory-hungry module is stopped with a clear error."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import wasmtime

from tests.wasm_modules import SLEEPER, spewer, write_module
from wasmforge import runner
from wasmforge.errors import UserError
from wasmforge.paths import ROOT
from wasmforge.run import parse_limits
from wasmforge.runner import WasmModel, WasmRunError

FD_WRITE = '(import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))'


def module(tmp_path, wat: str, **limits) -> WasmModel:
    path = tmp_path / "m.wasm"
    path.write_bytes(wasmtime.wat2wasm(wat))
    return WasmModel(path, **limits)


def print_then(fd: int, text: str, then: str) -> str:
    """WAT for `_start` body: write `text` (placed at address 16) to `fd`, then `then`."""
    return f"""
        (i32.store (i32.const 0) (i32.const 16))
        (i32.store (i32.const 4) (i32.const {len(text.encode())}))
        (drop (call $fd_write (i32.const {fd}) (i32.const 0) (i32.const 1) (i32.const 8)))
        {then}"""


def test_endless_loop_hits_the_time_limit(tmp_path):
    looping = module(tmp_path, '(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))',
                     time_limit=0.5)
    started = time.monotonic()
    with pytest.raises(WasmRunError, match=r"^time limit exceeded \(0\.5 s\)$") as info:
        looping.info()
    assert time.monotonic() - started < 10
    assert info.value.exit_code == 1


def test_the_time_limit_is_a_kill_and_the_next_run_gets_a_new_sandbox(tmp_path):
    """No epoch interruption in the runner's engine (it would cost the kernels up to
    17%): a computing module is stopped by the wall clock killing its sandbox
    process, and the next run starts a new one."""
    looping = module(tmp_path, '(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))',
                     time_limit=0.5)
    first = looping._state["child"].process
    with pytest.raises(WasmRunError, match="time limit exceeded"):
        looping.info()
    assert first.poll() is not None and looping._state["child"] is None
    with pytest.raises(WasmRunError, match="time limit exceeded"):
        looping.info()
    assert looping._state["child"] is None
    looping.close()


def test_the_runner_engine_has_no_epoch_check(tmp_path):
    """With epoch interruption on, a deadline already reached would stop the loop at its
    first check; the runner's engine runs it to its end."""
    engine = runner.new_engine()
    wat = """(module (func (export "count") (result i32) (local $i i32)
        (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))
                 (br_if $l (i32.lt_u (local.get $i) (i32.const 1000))))
        (local.get $i)))"""
    store = wasmtime.Store(engine)
    instance = wasmtime.Instance(store, wasmtime.Module(engine, wasmtime.wat2wasm(wat)), [])
    assert instance.exports(store)["count"](store) == 1000
    checked = runner.new_engine(epoch_interruption=True)
    store = wasmtime.Store(checked)
    store.set_epoch_deadline(1)
    checked.increment_epoch()
    instance = wasmtime.Instance(store, wasmtime.Module(checked, wasmtime.wat2wasm(wat)), [])
    with pytest.raises(wasmtime.Trap):
        instance.exports(store)["count"](store)


def test_endless_output_hits_the_time_limit(tmp_path):
    """A loop that keeps calling WASI is stopped too."""
    body = print_then(1, "spam\n", "(br $l)")
    chatty = module(tmp_path, f"""(module {FD_WRITE} (memory (export "memory") 1)
        (data (i32.const 16) "spam\\n")
        (func (export "_start") (loop $l {body})))""", time_limit=0.5)
    with pytest.raises(WasmRunError, match="time limit exceeded"):
        chatty.info()


def test_huge_initial_memory_is_refused_before_instantiation(tmp_path):
    # 40000 pages = 2.44 GiB, above a 64 MiB limit.
    hungry = module(tmp_path, '(module (memory (export "memory") 40000) (func (export "_start")))',
                    memory_limit=64 << 20)
    with pytest.raises(WasmRunError, match=r"^memory limit exceeded: the module needs 2\.441 GiB of memory "
                                           r"to start \(limit 64 MiB\)$"):
        hungry.info()


_ABORT = print_then(2, "memory allocation of 67108864 bytes failed\n", "unreachable")
GROWER = f"""(module {FD_WRITE} (memory (export "memory") 1)
    (data (i32.const 16) "memory allocation of 67108864 bytes failed\\n")
    (data (i32.const 100) "{{}}\\n")
    (func (export "_start")
      ;; 1024 pages = 64 MiB more. On failure, do what Rust's allocator does:
      ;; print its message to stderr and abort.
      (if (i32.eq (memory.grow (i32.const 1024)) (i32.const -1))
        (then {_ABORT})
        (else (i32.store (i32.const 0) (i32.const 100)) (i32.store (i32.const 4) (i32.const 3))
              (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))))"""


def test_memory_grow_beyond_the_limit_is_refused(tmp_path):
    with pytest.raises(WasmRunError, match=r"^memory limit exceeded: an allocation of 64 MiB failed "
                                           r"\(limit 32 MiB\)$"):
        module(tmp_path, GROWER, memory_limit=32 << 20).info()
    # The same growth within the limit succeeds: it is the limit that refused it.
    assert module(tmp_path, GROWER, memory_limit=128 << 20).info() == {}


def test_other_traps_name_their_reason(tmp_path):
    trapping = module(tmp_path, '(module (memory (export "memory") 1) (func (export "_start") unreachable))')
    with pytest.raises(WasmRunError, match=r"^module trapped: wasm `unreachable` instruction executed$"):
        trapping.info()


@pytest.mark.parametrize("time_limit, memory_limit, expected", [
    ("1.5", None, {"time_limit": 1.5}),
    (None, "512M", {"memory_limit": 512 << 20}),
    ("30", "2GiB", {"time_limit": 30.0, "memory_limit": 2 << 30}),
    (None, "65536", {"memory_limit": 65536}),
])
def test_parse_limits(time_limit, memory_limit, expected):
    assert parse_limits(time_limit, memory_limit) == expected


@pytest.mark.parametrize("time_limit, memory_limit", [
    ("0", None), ("-1", None), ("nan", None), ("inf", None), ("soon", None),
    (None, "0"), (None, "5G"), (None, "lots"), (None, "-1M"),
])
def test_bad_limits(time_limit, memory_limit):
    with pytest.raises(UserError, match="--time-limit|--memory-limit"):
        parse_limits(time_limit, memory_limit)


# --- the real modules ---------------------------------------------------------------


# --- external weights (--external-params) -------------------------------------------

def wat_bytes(text: str) -> str:
    """`text` as a WAT string literal, every byte escaped."""
    return '"' + "".join(f"\\{b:02x}" for b in text.encode()) + '"'


INFO_EXTERNAL = '{"inputs": [], "outputs": [], "params": {"external": true}}\n'
# Says in --info that its weights are external; run with any other arguments, it
# requires exactly `--params PATH` (argc 3) and checks what it sees as /model
# (the second preopen, fd 4): m.params.bin opens for reading, and no file can
# be created there. Exit codes 10-12 name the check that failed.
EXTERNAL_PARAMS_WAT = f"""(module
    (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "path_open"
      (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
    {FD_WRITE}
    (memory (export "memory") 1)
    (data (i32.const 16) {wat_bytes(INFO_EXTERNAL)})
    (data (i32.const 512) "m.params.bin")
    (data (i32.const 560) "new-file")
    (func (export "_start")
      (drop (call $args_sizes_get (i32.const 1000) (i32.const 1004)))
      (if (i32.eq (i32.load (i32.const 1000)) (i32.const 2))
        (then {print_then(1, INFO_EXTERNAL, "(return)")}))
      (if (i32.ne (i32.load (i32.const 1000)) (i32.const 3)) (then (call $proc_exit (i32.const 10))))
      (if (i32.ne (call $path_open (i32.const 4) (i32.const 0) (i32.const 512) (i32.const 12) (i32.const 0)
                        (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 1008)) (i32.const 0))
        (then (call $proc_exit (i32.const 11))))
      (if (i32.eqz (call $path_open (i32.const 4) (i32.const 0) (i32.const 560) (i32.const 8) (i32.const 1)
                         (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 1008)))
        (then (call $proc_exit (i32.const 12))))))"""


def test_external_params_are_passed_read_only(tmp_path):
    model = module(tmp_path, EXTERNAL_PARAMS_WAT)
    (tmp_path / "m.params.bin").write_bytes(b"weights")
    assert model.external_params
    assert model.params_args() == (["--params", "/model/m.params.bin"], tmp_path.resolve())
    assert model.run([]).outputs == []  # the module's own checks passed (exit 0)
    assert not (tmp_path / "new-file").exists()
    # An explicit path wins over the default beside the .wasm.
    other = tmp_path / "elsewhere"
    other.mkdir()
    (tmp_path / "m.params.bin").rename(other / "m.params.bin")
    explicit = WasmModel(tmp_path / "m.wasm", params_path=other / "m.params.bin")
    assert explicit.params_args() == (["--params", "/model/m.params.bin"], other.resolve())
    assert explicit.run([]).outputs == []


def test_missing_external_params_are_one_clear_error(tmp_path):
    model = module(tmp_path, EXTERNAL_PARAMS_WAT)
    with pytest.raises(WasmRunError, match=r"^m\.wasm keeps its weights in a separate file: .*m\.params\.bin "
                                           r"is missing$") as info:
        model.run([])
    assert info.value.exit_code == 2


def test_embedded_modules_take_no_params_file(tmp_path):
    info = '{"inputs": [], "outputs": []}\n'
    embedded = module(tmp_path, f"""(module {FD_WRITE} (memory (export "memory") 1)
        (data (i32.const 16) {wat_bytes(info)}) (func (export "_start") {print_then(1, info, "")}))""")
    assert not embedded.external_params
    assert embedded.params_args() == ([], None)
    assert embedded.run([]).outputs == []
    with pytest.raises(WasmRunError, match="embeds its weights"):
        WasmModel(tmp_path / "m.wasm", params_path=tmp_path / "x.params.bin").run([])


# --- the wall clock and the output cap (the module runs in a sandbox process) -----------


def test_a_module_blocked_in_a_host_call_stops_at_the_time_limit(tmp_path):
    """poll_oneoff asked to sleep a day: no wasm code runs; the wall clock kills the
    sandbox process all the same."""
    sleeper = WasmModel(write_module(tmp_path / "sleep.wasm", SLEEPER), time_limit=1.0)
    for _ in range(2):  # and again, from a restarted sandbox (the module compiled again)
        started = time.monotonic()
        with pytest.raises(WasmRunError, match=r"^time limit exceeded \(1 s\)$") as info:
            sleeper.info()
        assert time.monotonic() - started < 1.0 + 1.0
        assert info.value.exit_code == 1
    sleeper.close()


@pytest.mark.parametrize("fd, stream", [(1, "stdout"), (2, "stderr")])
def test_a_spewing_module_is_stopped_with_the_host_under_200_mb(tmp_path, fd, stream):
    """1 MiB writes without end: read through a capped pipe, never a file; the module is
    stopped at the cap, long before its time limit."""
    write_module(tmp_path / "spew.wasm", spewer(fd))
    script = f"""
import json, sys, time
from pathlib import Path
from wasmforge.runner import WasmModel, WasmRunError
model = WasmModel(Path({str(tmp_path / 'spew.wasm')!r}), time_limit=60, memory_limit=64 << 20)
started = time.monotonic()
try:
    model.info()
    message = None
except WasmRunError as exc:
    message = str(exc)
elapsed = time.monotonic() - started
hwm = next(int(ln.split()[1]) for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:"))
print(json.dumps([message, elapsed, hwm * 1024]))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    message, elapsed, peak = json.loads(proc.stdout.splitlines()[-1])
    assert message == f"output limit exceeded: the module wrote more than 8 MiB to {stream}; stopped"
    assert elapsed < 30
    assert peak < 200 << 20, peak
    assert not list(tmp_path.glob("**/.stdout")) and not list(tmp_path.glob("**/.stderr"))


def test_the_compiled_module_and_sandbox_are_reused(tmp_path):
    info = '{"inputs": [], "outputs": []}\n'
    model = module(tmp_path, f"""(module {FD_WRITE} (memory (export "memory") 1)
        (data (i32.const 16) {wat_bytes(info)}) (func (export "_start") {print_then(1, info, "")}))""")
    first = model._state["child"].process.pid
    for _ in range(5):
        assert model.run([]).outputs == []
    assert model._state["child"].process.pid == first
    model.close()
    assert model._state.get("child") is None


def test_the_sandbox_ends_when_its_parent_is_killed(tmp_path):
    """SIGKILL to the host process while its module sleeps in a host call: the sandbox
    does not live on (it watches its parent)."""
    path = write_module(tmp_path / "sleep.wasm", SLEEPER)
    parent = subprocess.Popen([sys.executable, "-c", f"""
from wasmforge.runner import WasmModel
model = WasmModel({str(path)!r}, time_limit=3600)
print(model._state["child"].process.pid, flush=True)
model.info()
"""], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(0.5)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = open(f"/proc/{child}/status").read()
        except FileNotFoundError:
            break
        if "\nState:\tZ" in state:  # exited, not yet reaped by its new parent
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the sandbox outlived its parent")


def test_a_sandbox_killed_from_outside_is_one_error_then_restarted(tmp_path):
    info = '{"inputs": [], "outputs": []}\n'
    model = module(tmp_path, f"""(module {FD_WRITE} (memory (export "memory") 1)
        (data (i32.const 16) {wat_bytes(info)}) (func (export "_start") {print_then(1, info, "")}))""")
    model._state["child"].process.kill()
    model._state["child"].process.wait()
    with pytest.raises(WasmRunError, match=r"^the sandbox running m\.wasm died: "):
        model.info()
    assert model.info() == {"inputs": [], "outputs": []}  # a new sandbox, the module compiled again


def test_a_module_wasmtime_cannot_compile_is_refused_with_the_cause(tmp_path):
    """Not just "failed to compile: wasm[0]::function[0]": the innermost cause too."""
    path = tmp_path / "bad.wasm"
    path.write_bytes(wasmtime.wat2wasm("(module (func (result i32) i64.const 1))"))
    with pytest.raises(WasmRunError) as info:
        WasmModel(path)
    assert str(info.value) == ("cannot load bad.wasm: failed to compile: wasm[0]::function[0]: Invalid input "
                               "WebAssembly code at offset 26: type mismatch: expected i32, found i64")
