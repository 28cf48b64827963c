"""Fast conv2d kernels without tuning: blocked layout + one hand-written TIR schedule.

TVM 0.27 has no CPU schedule for conv2d (dlight's CPU rules cover GEMV and
reductions only, TOPI's x86 strategies are gone), so untuned convolutions are
scalar loops. This module lowers a Relax module like `relax.get_default_pipeline`
does, with three changes:

1. `ConvertLayout` puts every conv2d into NCHW{B}c activations and OIHW{b}i{B}o
   weights (B = 8 output channels = two 128-bit vectors). FoldConstant then
   pre-transforms the weights at build time; only the network input and the
   final feature map get a (cheap) layout_transform kernel.
2. A custom legalization turns those convs into a TE compute whose innermost
   axis is the output-channel block, so it vectorizes for any stride/padding.
3. Every fused conv PrimFunc gets the same schedule: a register tile of
   `ow_tile` output pixels x B channels, accumulated in a local buffer (LLVM
   keeps it in SIMD registers), epilogue (bias/residual/relu) applied per tile.
   Blocked 3x3 stride-1 convs become Winograd kernels instead (winograd.py:
   F(4x4) or F(2x2), weights transformed at build time, own schedule); if that
   schedule fails anywhere, the module is fused again with direct convs only.

4. `TIR_PIPELINE` ("wasmforge", registered on import; graph_lib passes it
   to `tvm.tirx.build`) is TVM's default TIR lowering plus one rewrite: the
   per-channel broadcast of an input pixel becomes a lane shuffle of one
   4-channel vector load (see `_splat_from_vector_load`).

5. Matmuls and softmax/erf have their own modules (gemm.py: packed weights and a
   register-tiled GEMM schedule; fastmath.py: vectorizable exp/erf): their
   legalizations join the conv's in `fuse`, their schedules are tried after the
   conv's in `_fast_path`, with the same per-PrimFunc fallback.

Beside this module: depthwise.py (depthwise convs, blocked and scheduled),
clip_ops.py (Clip as Relax ops, so layouts flow through ReLU6), ragged.py
(convs with a prime output width computed a few columns wider) and matvec.py
(the batch-1 dense layer) and topk.py (TopK as TE compute instead of a runtime
call); each is a small hook below.

The schedule has no parallel loops (the wasm build is single-threaded) and no
randomness, so the kernels are byte-for-byte reproducible. When a MetaSchedule
database directory is given (see tune.py), its records take precedence for the
PrimFuncs they cover.
"""

from __future__ import annotations

from pathlib import Path

import tvm
from tvm import relax, s_tir, te, tirx
from tvm.relax.backend.cpu_generic import pipeline as cpu
from tvm.tirx import compilation_pipeline as tir_pipelines

from . import clip_ops, depthwise, fastmath, gemm, half, matvec, pool, ragged, topk, winograd
from .tiling import (first_divisor, pad_nchwc, root_block_names, schedule_if, unroll_steps,
                     unroll_tile_store, window_extent)

OC_BLOCK = 8  # output channels per vector tile: two f32x4 registers
CONV_BLOCK = "conv2d_NCHWc"
PACKED_BLOCK = "packed_input"  # see _conv2d_nchwc


def _ic_block(channels: int) -> int:
    return OC_BLOCK if channels % OC_BLOCK == 0 else channels  # the RGB stem: one block of 3


def _layout_cb(call):
    """Per-conv desired layouts (ConvertLayout's callback form)."""
    if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv2d":
        return {}
    grouped = depthwise.layout(call)  # depthwise convs: their own blocked layout
    if grouped is not None:
        return grouped
    weight = call.args[1]
    oc, ic = [int(d) for d in weight.ty.shape.values[:2]]
    if call.attrs.groups != 1 or call.attrs.data_layout != "NCHW" or oc % OC_BLOCK:
        return {"relax.nn.conv2d": ["NCHW", "OIHW"]}
    b = _ic_block(ic)
    # The output layout is explicit: by default it would follow the data's (3c for RGB).
    return {"relax.nn.conv2d": [f"NCHW{b}c", f"OIHW{b}i{OC_BLOCK}o", f"NCHW{OC_BLOCK}c"]}


def _conv2d_nchwc(data, weight, strides, padding, dilation):
    """data [N, IC/b, H, W, b], weight [OC/B, IC/b, KH, KW, b, B] -> [N, OC/B, OH, OW, B]."""
    n, _, h, w, _ = [int(d) for d in data.shape]
    oco, ico, kh, kw, icb, ocb = [int(d) for d in weight.shape]
    (sh, sw), (dh, dw) = strides, dilation
    pt, pl, pb, pr = padding
    oh, ow = window_extent(h, pt, pb, kh, sh, dh), window_extent(w, pl, pr, kw, sw, dw)
    data = pad_nchwc(data, padding)

    if kh == kw == 1 and (ico > 1 or (sh, sw) != (1, 1)):
        # A 1x1 conv reads its input once per output-channel block. In NCHWc its
        # reduction steps from one channel plane to the next (H x W x b floats
        # apart), so a tile's few pixels come from as many pages as the input has
        # channel blocks. One pass copies the pixels it reads (every sh-th row and
        # sw-th column when strided) pixel-major, [N, OH, OW, IC/b, b]: a tile then
        # reads a few contiguous runs. Same products, same order: bit-identical.
        packed = te.compute((n, oh, ow, ico, icb), lambda b, y, x, c, i: data[b, c, y * sh, x * sw, i],
                            name=PACKED_BLOCK)

        def pixel(b, c, y, x, i, ry, rx):
            return packed[b, y + ry, x + rx, c, i]
    else:
        def pixel(b, c, y, x, i, ry, rx):
            return data[b, c, y * sh + ry * dh, x * sw + rx * dw, i]

    rco = te.reduce_axis((0, ico), "rco")
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    rci = te.reduce_axis((0, icb), "rci")
    return te.compute(
        (n, oco, oh, ow, ocb),
        lambda b, o, y, x, c: te.sum(
            pixel(b, rco, y, x, rci, ry, rx) * weight[o, rco, ry, rx, rci, c], axis=[rco, ry, rx, rci]),
        name=CONV_BLOCK,
    )


_default_conv_legalize = tvm.ir.Op.get("relax.nn.conv2d").get_attr("FLegalize")


def _legalize_conv2d(bb, call, use_winograd: bool = True):
    a = call.attrs
    if a.groups != 1 and a.data_layout != "NCHW":
        blocked = depthwise.legalize(bb, call)
        if blocked is not None:
            return blocked
    if a.data_layout == "NCHW" or a.groups != 1:
        return _default_conv_legalize(bb, call)
    fast = winograd.legalize(bb, call) if use_winograd else None  # 3x3 stride 1, else direct
    if fast is not None:
        return fast
    pad = [int(p) for p in a.padding]
    return bb.call_te(ragged.wrap(_conv2d_nchwc, _ow_tile), call.args[0], call.args[1],
                      [int(s) for s in a.strides], pad, [int(d) for d in a.dilation],
                      primfunc_name_hint="conv2d_nchwc")


def _ow_tile(ow: int) -> int:
    # Pixels per register tile (2 accumulator vectors each): 8 where the row allows,
    # else 7, else 4. Timed as wasm in the runner's engine (no epoch check: the 16
    # accumulators of an 8-pixel tile stay in registers) every 56-wide 1x1 conv of
    # ResNet50 was fastest with 8 pixels, every 28/14/7-wide one with 7 (then with
    # whole 8-channel steps; tiling.STEP_CHANNELS says why steps are 4 since); whole
    # models 0.95x (ResNet50), 0.98x (SqueezeNet), 0.99x (MobileNetV2) against the
    # old order 4, 6, 7, 8.
    return first_divisor(ow, (8, 7, 4, 6, 5, 3, 2))


def schedule_conv(func: tirx.PrimFunc) -> tirx.PrimFunc | None:
    """The register-tiled schedule for a PrimFunc with one conv2d_NCHWc block, else None."""
    def recognise(sch):
        names = root_block_names(sch)
        return names.index(CONV_BLOCK) if CONV_BLOCK in names else None

    return schedule_if(func, recognise, _schedule)


def _schedule(sch: s_tir.Schedule, index: int, pixels: int | None = None, blocks: int = 1,
              unroll: int | None = None) -> None:
    """The register-tiled schedule. A tile is `pixels` output pixels (default `_ow_tile`) x
    `blocks` output-channel blocks x OC_BLOCK channels; `unroll` input channels per
    unrolled step (default: tiling.unroll_steps's rule). The defaults are the hand schedule;
    conv_variants.py measures the others per workload for `invoke tune`."""
    conv = sch.get_sblock(CONV_BLOCK)
    epilogue = sch.get_child_blocks(sch.get_sblock("root"))[index + 1:]
    for block in sch.get_child_blocks(sch.get_sblock("root"))[:index]:
        if sch.get(block).name_hint == PACKED_BLOCK:
            sch.vectorize(sch.get_loops(block)[-1])
    # Bias add / residual add / relu: fold the chain into its last block, which
    # is then computed tile by tile right after the accumulation.
    for block in epilogue[:-1]:
        sch.compute_inline(block)
    n, o, y, x, c, rco, ry, rx, rci = sch.get_loops(conv)
    pixels = pixels or _ow_tile(int(sch.get(x).extent))
    xo, xi = sch.split(x, [None, pixels])
    steps = unroll_steps(sch, rci, unroll)
    # Output-channel block outermost: its weights stay in cache while the
    # input streams past. Innermost: a tile of pixels x 8 channels.
    if blocks > 1:
        o, oi = sch.split(o, [None, blocks])
        sch.reorder(n, o, y, xo, rco, ry, rx, *steps, oi, xi, c)
    else:
        sch.reorder(n, o, y, xo, rco, ry, rx, *steps, xi, c)
    if epilogue:
        # The accumulator tile becomes a small local array; unrolled with
        # constant indices, LLVM promotes it to vector registers.
        sch.set_scope(conv, 0, "local")
        store = epilogue[-1]
    else:
        store = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(store, xo)
    unroll_tile_store(sch, store, xo)
    sch.unroll(xi)
    if blocks > 1:
        sch.unroll(oi)
    # The input-channel step is unrolled by unroll_steps. Unrolling rx as well
    # made the wasm 30% slower (wasmtime spills on the big body).
    sch.vectorize(c)
    init = sch.decompose_reduction(conv, rco)  # after unroll/vectorize, which need the reduction form
    sch.vectorize(sch.get_loops(init)[-1])


def _apply_database(mod, target, database_dir: Path):
    from tvm.s_tir import meta_schedule as ms

    database = ms.database.JSONDatabase(
        str(database_dir / "database_workload.json"),
        str(database_dir / "database_tuning_record.json"), allow_missing=False)
    with target, database:
        return relax.transform.MetaScheduleApplyDatabase()(mod)


def _convert_layout(mod: tvm.IRModule, allowed: set[int] | None) -> tvm.IRModule:
    """ConvertLayout blocking the convs numbered in `allowed` (in the order the pass
    meets them; None: all); the others keep NCHW."""
    seen = iter(range(1 << 30))

    def layout_cb(call):
        desired = _layout_cb(call)
        if desired and desired["relax.nn.conv2d"][0] != "NCHW" and allowed is not None \
                and next(seen) not in allowed:
            return {"relax.nn.conv2d": ["NCHW", "OIHW"]}
        return desired

    return relax.transform.ConvertLayout({}, layout_cb=layout_cb)(mod)


def _blockable_convs(mod: tvm.IRModule) -> int:
    count = 0

    def cb(call):  # counts, and asks for no change (so it cannot fail where blocking does)
        nonlocal count
        desired = _layout_cb(call)
        count += bool(desired) and desired["relax.nn.conv2d"][0] != "NCHW"
        return {"relax.nn.conv2d": ["NCHW", "OIHW"]} if desired else desired

    relax.transform.ConvertLayout({}, layout_cb=cb)(mod)
    return count


def blocked_layout(mod: tvm.IRModule, notes: list[str] | None = None) -> tvm.IRModule:
    """Every conv in the blocked layout if TVM's ConvertLayout takes that; else the
    largest set of convs it takes, found by splitting the rest in halves (per
    operator: a conv whose neighbourhood the pass cannot convert stays NCHW)."""
    try:
        return _convert_layout(mod, None)
    except Exception:  # noqa: BLE001 - a layout-inference error somewhere in the graph
        pass
    try:
        total = _blockable_convs(mod)
    except Exception:  # noqa: BLE001 - the pass fails even when asked to change nothing
        if notes is not None:
            notes.append("TVM's layout conversion fails on this graph: every convolution keeps NCHW")
        return mod
    good: set[int] = set()
    pending = [list(range(total))]
    while pending:
        chunk = pending.pop(0)
        try:
            _convert_layout(mod, good | set(chunk))
            good |= set(chunk)
        except Exception:  # noqa: BLE001
            if len(chunk) > 1:
                pending += [chunk[: len(chunk) // 2], chunk[len(chunk) // 2:]]
    if notes is not None:
        notes.append(f"{total - len(good)} of {total} convolutions keep the NCHW layout "
                     f"(TVM's layout conversion fails around them)")
    return _convert_layout(mod, good) if good else mod


def fuse(mod: tvm.IRModule, target, notes: list[str] | None = None,
         use_winograd: bool = True) -> tvm.IRModule:
    """Blocked layout, legalization and fusion: the PrimFuncs that get scheduled or tuned."""
    def legalize(bb, call):
        return _legalize_conv2d(bb, call, use_winograd)

    with target:
        try:
            mod = clip_ops.as_relax_ops(mod)  # Clip as R.maximum/R.minimum: layouts flow through
        except Exception:  # noqa: BLE001 - keep the call_tirs (correct; transforms around them)
            if notes is not None:
                notes.append("Clip kept as opaque kernels (layout transforms around them)")
        mod = blocked_layout(mod, notes)
        passes = [relax.transform.FoldConstant(), relax.transform.DeadCodeElimination()]
        passes += cpu.library_dispatch_passes(target)
        passes += [relax.transform.LegalizeOps({"relax.nn.conv2d": legalize, **gemm.LEGALIZE,
                                                **fastmath.LEGALIZE, **half.LEGALIZE})]
        passes += [relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(),
                   relax.transform.FuseOps(), relax.transform.FuseTIR()]
        return tvm.transform.Sequential(passes)(mod)


def optimize(mod: tvm.IRModule, target, database_dir: Path | None = None,
             warnings: list[str] | None = None) -> tvm.IRModule:
    """Lower `mod` (after the inference passes) with scheduled conv kernels.

    Replaces `relax.get_default_pipeline(target)(mod)`; the result has the same
    shape (VM builtins + PrimFuncs), so plan derivation is unchanged. The fast
    path never breaks a build: a PrimFunc the hand schedule cannot handle keeps
    TVM's default schedule, and if the blocked-layout path fails as a whole the
    module goes through TVM's default pipeline (correct, slower), with one line
    appended to `warnings` saying so.
    """
    target = tvm.target.Target(target)
    notes: list[str] = []
    try:  # before either pipeline: TVM's own TopK is a runtime library call
        mod = topk.as_te(mod)
    except Exception as exc:  # noqa: BLE001 - keep relax.topk (its build then names the import)
        lines = str(exc).strip().splitlines()
        notes.append(f"TopK kept as TVM's runtime call ({lines[-1] if lines else type(exc).__name__})")
    try:
        lowered = _fast_path(mod, target, database_dir, notes)
        if warnings is not None:
            warnings.extend(notes)
        return lowered
    except Exception as exc:  # noqa: BLE001 - any TVM error in the fast path
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        message = f"optimiser fell back to TVM's default pipeline (slower kernels): {reason}"
        if warnings is not None:
            warnings.append(message)
    with target:
        return relax.get_default_pipeline(target)(mod)


def schedules() -> tuple:
    """Tried in order on every unscheduled PrimFunc; the first that recognises it wins
    (looked up at each call, so each module's function can be replaced in tests)."""
    return (schedule_conv, winograd.schedule, depthwise.schedule, gemm.schedule_gemm, matvec.schedule,
            fastmath.schedule_softmax, pool.schedule)


def hand_schedule(func: tirx.PrimFunc) -> tirx.PrimFunc | None:
    """`func` with the first of schedules() that recognises it (None: none does, TVM's
    default applies); what the build does to a PrimFunc no tuning record covers."""
    for schedule in schedules():
        scheduled = schedule(func)
        if scheduled is not None:
            return scheduled
    return None


def _fast_path(mod, target, database_dir: Path | None, notes: list[str]) -> tvm.IRModule:
    try:
        scheduled = _schedule_all(fuse(mod, target, notes), target, database_dir)
    except winograd.ScheduleFailed as exc:
        notes.append(f"Winograd schedule failed ({exc}): every conv uses the direct schedule")
        scheduled = _schedule_all(fuse(mod, target, None, use_winograd=False), target, database_dir)
    with target:
        rest = cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target)
        return tvm.transform.Sequential(rest)(scheduled)


def _schedule_all(mod, target, database_dir: Path | None) -> tvm.IRModule:
    if database_dir is not None:
        mod = _apply_database(mod, target, Path(database_dir))
    updates = {}
    for gv, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc) and not func.attrs.get("tirx.is_scheduled", False):
            scheduled = hand_schedule(func)
            if scheduled is not None:
                updates[gv] = scheduled
    for gv, func in updates.items():
        mod[gv] = func
    return mod


# --- TIR lowering for the wasm build ------------------------------------------------

SPLAT_GROUP = 4  # f32 lanes per v128


def _splat_from_vector_load(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """Broadcast(A[i]) -> Shuffle(A[i-k : i-k+4], [k, k, ...]) where i % 4 == k is provable.

    The conv's input pixel is broadcast once per input channel. As
    `v128.load32_splat`, wasmtime (Cranelift, x86-64) emits a scalar load, a
    GPR->XMM move and a broadcast, because it cannot fold the load into the
    broadcast once the loads are grouped. Loading the channel group once
    (LLVM merges the identical vector loads) and splatting lanes with
    `i8x16.shuffle` gives one `pshufd` per channel instead (ResNet50 wasm: -12%).

    In bounds: the group starts at a multiple of 4 below i, and the rewrite
    only fires for buffers whose size is a multiple of 4.
    """
    import tvm_ffi
    from tvm.sym.analyzer import Analyzer

    analyzer = Analyzer()

    def bind(node):
        # CommonSubexprElim has hoisted parts of the indices into let-bound variables.
        if str(node.var.ty) in ("int32", "int64"):
            try:
                analyzer.bind(node.var, node.value)
            except TypeError:  # not an index expression (e.g. a handle-valued call)
                pass
        return node

    tvm_ffi.structural_map(func, ((tirx.LetStmt, tirx.Let), bind), order="pre")

    def rewrite(node):
        load, lanes = node.value, int(node.lanes)
        if (not isinstance(load, tvm.ir.expr.TensorLoad) or str(load.ty) != "float32"
                or len(load.indices) != 1 or lanes % SPLAT_GROUP):
            return node
        (idx,) = load.indices
        if str(idx.ty) not in ("int32", "int64") or not _size_multiple_of(load.source, SPLAT_GROUP):
            return node
        mod_set = analyzer.modular_set(idx)
        if int(mod_set.coeff) % SPLAT_GROUP:
            return node
        k = int(mod_set.base) % SPLAT_GROUP
        group = tirx.BufferLoad(load.source, [tirx.Ramp(analyzer.simplify(idx - k),
                                                        tirx.const(1, str(idx.ty)), SPLAT_GROUP)])
        # A Shuffle cannot have more lanes than its inputs: repeat the group.
        return tirx.Shuffle([group] * (lanes // SPLAT_GROUP), [tirx.const(k, "int32")] * lanes)

    return tvm_ffi.structural_map(func, (tirx.Broadcast, rewrite))


def _size_multiple_of(buffer, n: int) -> bool:
    try:
        size = 1
        for dim in buffer.shape:
            size *= int(dim)
    except (TypeError, ValueError, AttributeError):  # symbolic shape
        return False
    return size % n == 0


@tvm.transform.module_pass(opt_level=0, name="wasmforge.SplatFromVectorLoad")
def _splat_pass(mod, _ctx):
    updates = {}
    for gv, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc):
            try:
                updates[gv] = _splat_from_vector_load(func)
            except Exception:  # noqa: BLE001 - an unexpected shape: keep the kernel as it is
                continue
    for gv, func in updates.items():
        mod[gv] = func
    return mod


def _wasm_tir_pipeline():
    base, finalize_host, finalize_device = tir_pipelines.get_tir_pipeline("default")

    @tvm.transform.module_pass(opt_level=0, name="wasmforge.TIRPipeline")
    def _pipeline(mod, _ctx):
        return _splat_pass(base(mod))

    return _pipeline, finalize_host, finalize_device


TIR_PIPELINE = "wasmforge"  # for tvm.tirx.build(mod, target, pipeline=TIR_PIPELINE)
tir_pipelines.register_tir_pipeline(TIR_PIPELINE, _wasm_tir_pipeline)
