"""Interleave the multiply-add chains of the kernels' loop bodies in the linked .wasm.

LLVM's wasm stackifier writes each accumulator's multiply-adds of an unrolled
step as one nested expression, so the module computes one accumulator's
dependency chain after another (4 cycles per FMA each), with the step's loads
first (docs/performance-notes.md, "Why the direct and GEMM kernels stop at
60-70% of the wasm peak"). This pass reorders the straight-line code of such
bodies: the floating-point vector operations by their depth in the dependency
graph (first every accumulator's first multiply-add, then every second one,
...), each one preceded just in time by what it needs that has not been
computed yet (loads included), in the original order. Every value goes
through a fresh local; Cranelift turns locals into SSA values, so this costs
no memory traffic. Cranelift (`speed`) keeps the loads in the order given and
mostly the multiply-adds too (seen in the x86 of ResNet50's 1x1 convs: the
chains interleaved after the rewrite, one after another before it); what a
kernel gains depends on its register pressure (docs/performance-notes.md).

The rewrite is a pure function of the module's bytes (the build stays
reproducible) and changes no arithmetic: the same operations on the same
operands, so the outputs are bit-identical. It only touches stretches of code
with at least `MIN_MULTIPLIES` vector multiplies and whose dependencies it can
see completely: straight-line code of pure operators, loads, stores and local
accesses, with loads never moved across a store; anything else (calls,
branches, traps other than memory access, globals written, code that starts
by consuming values pushed before it) ends a stretch and stays where it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .wasm_code import F32, F64, I32, I64, SIMD, V128, Function, Instr, Module, local_op

MIN_MULTIPLIES = 8  # a stretch with fewer vector multiplies is left alone


def _s(sub: int) -> int:
    return (SIMD << 16) | sub


# f32x4 / f64x2 arithmetic: the operations whose chains are interleaved.
MULTIPLIES = {_s(230), _s(242), _s(261), _s(262), _s(263), _s(264)}  # mul, relaxed (n)madd
ANCHORS = MULTIPLIES | {_s(s) for s in (228, 229, 231, 232, 233, 234, 235, 240, 241, 243, 244, 245,
                                         246, 247, 269, 270, 271, 272)}

_TRAPPING = {0x6D, 0x6E, 0x6F, 0x70, 0x7F, 0x80, 0x81, 0x82, 0xA8, 0xA9, 0xAA, 0xAB, 0xAE, 0xAF, 0xB0, 0xB1}
_UNARY = {0x45, 0x50, 0x67, 0x68, 0x69, 0x79, 0x7A, 0x7B} | set(range(0x8B, 0x92)) | set(range(0x99, 0xA0)) \
    | set(range(0xA7, 0xC5))
_LOAD_TYPES = {0x28: I32, 0x29: I64, 0x2A: F32, 0x2B: F64} | {op: I32 for op in range(0x2C, 0x30)} \
    | {op: I64 for op in range(0x30, 0x36)}


def _numeric_type(op: int) -> int:
    if op <= 0x78 or op in (0xA7, 0xA8, 0xA9, 0xAA, 0xAB, 0xBC, 0xC0, 0xC1):
        return I32
    if op <= 0x8A or op in (0xAC, 0xAD, 0xAE, 0xAF, 0xB0, 0xB1, 0xBD, 0xC2, 0xC3, 0xC4):
        return I64
    if op <= 0x98 or 0xB2 <= op <= 0xB6 or op == 0xBE:
        return F32
    return F64


# SIMD: which sub-opcodes pop how many values, and which do not give a v128.
_SIMD_UNARY = {15, 16, 17, 18, 19, 20, 21, 22, 24, 25, 27, 29, 31, 33, 77, 83, 94, 95, 96, 97, 98, 99, 100,
               103, 104, 105, 106, 116, 117, 122, 124, 125, 126, 127, 128, 129, 131, 132, 135, 136, 137, 138,
               148, 160, 161, 163, 164, 167, 168, 169, 170, 192, 193, 195, 196, 199, 200, 201, 202, 224, 225,
               227, 236, 237, 239} | set(range(248, 256)) | {257, 258, 259, 260}
_SIMD_TERNARY = {82, 261, 262, 263, 264, 265, 266, 267, 268, 275}
_SIMD_NULLARY = {12}
_SIMD_SCALAR = {21: I32, 22: I32, 24: I32, 25: I32, 27: I32, 29: I64, 31: F32, 33: F64, 83: I32, 99: I32,
                100: I32, 131: I32, 132: I32, 163: I32, 164: I32, 195: I32, 196: I32}
_SIMD_RESERVED = {154, 162, 165, 166, 175, 176, 178, 179, 180, 187, 194, 197, 198, 207, 208, 210, 211, 212,
                  226, 238}
_SIMD_LOADS = set(range(0, 11)) | {92, 93}
_SIMD_LANE_LOADS = {84, 85, 86, 87}
_SIMD_STORES = {11, 88, 89, 90, 91}


@dataclass(frozen=True)
class Effect:
    pops: int
    result: int | None  # value type, None for none
    memory: str = ""  # "r" reads memory, "w" writes it


def effect(instr: Instr, global_types: list[int]) -> Effect | None:
    """What a schedulable instruction does to the stack and memory; None ends a stretch.
    (local.* are handled by the caller.)"""
    op = instr.op
    if op == 0x1A:
        return Effect(1, None)
    if op == 0x23:
        return Effect(0, global_types[instr.index]) if instr.index < len(global_types) else None
    if op in _LOAD_TYPES:
        return Effect(1, _LOAD_TYPES[op], "r")
    if 0x36 <= op <= 0x3E:
        return Effect(2, None, "w")
    if op in (0x41, 0x42, 0x43, 0x44):
        return Effect(0, {0x41: I32, 0x42: I64, 0x43: F32, 0x44: F64}[op])
    if 0x45 <= op <= 0xC4:
        if op in _TRAPPING:
            return None
        return Effect(1 if op in _UNARY else 2, _numeric_type(op))
    if op >> 16 == SIMD:
        sub = op & 0xFFFF
        if sub in _SIMD_RESERVED or sub > 275:
            return None
        if sub in _SIMD_LOADS:
            return Effect(1, V128, "r")
        if sub in _SIMD_LANE_LOADS:
            return Effect(2, V128, "r")
        if sub in _SIMD_STORES:
            return Effect(2, None, "w")
        pops = 0 if sub in _SIMD_NULLARY else 1 if sub in _SIMD_UNARY else 3 if sub in _SIMD_TERNARY else 2
        return Effect(pops, _SIMD_SCALAR.get(sub, V128))
    return None  # control, calls, globals written, memory.size/grow, bulk memory, references, select


@dataclass
class Node:
    order: int
    instr: Instr | None  # None: the value of a local at the start of the stretch
    args: list["Node"]
    result: int | None
    local: int = -1  # for a local's incoming value
    after: list["Node"] = field(default_factory=list)  # memory order: must be emitted before this
    depth: int = 0
    temp: int = -1  # the local holding the value once emitted

    @property
    def constant(self) -> bool:
        return self.instr is not None and (self.instr.op in (0x41, 0x42, 0x43, 0x44) or self.instr.op == _s(12))


class Stretch:
    """One straight-line stretch as a dependency graph."""

    def __init__(self, instrs: list[Instr], local_types: list[int], global_types: list[int]):
        self.nodes: list[Node] = []
        self.stack: list[Node] = []
        self.locals: dict[int, Node] = {}  # local index -> its current value
        self.assigned: list[int] = []  # locals written, in order of first write
        self.ok = True
        last_store: Node | None = None
        loads: list[Node] = []
        for instr in instrs:
            op = instr.op
            if op == 0x20:
                node = self.locals.get(instr.index)
                if node is None:
                    node = self._node(None, [], local_types[instr.index], instr.index)
                    self.locals[instr.index] = node
                self.stack.append(node)
                continue
            if op in (0x21, 0x22):
                if not self.stack:
                    self.ok = False
                    return
                value = self.stack[-1] if op == 0x22 else self.stack.pop()
                self.locals[instr.index] = value
                if instr.index not in self.assigned:
                    self.assigned.append(instr.index)
                continue
            fx = effect(instr, global_types)
            if fx is None or len(self.stack) < fx.pops:
                self.ok = False
                return
            args = self.stack[len(self.stack) - fx.pops:]
            del self.stack[len(self.stack) - fx.pops:]
            node = self._node(instr, args, fx.result)
            if fx.memory == "r":
                node.after = [last_store] if last_store else []
                loads.append(node)
            elif fx.memory == "w":
                node.after = ([last_store] if last_store else []) + loads
                last_store, loads = node, []
            if fx.result is not None:
                self.stack.append(node)
        self.assigned = [i for i in self.assigned if self.locals[i].local != i]  # not set to itself

    def _node(self, instr: Instr | None, args: list[Node], result: int | None, local: int = -1) -> Node:
        depth = max((a.depth for a in args), default=0)
        if instr is not None and instr.op in ANCHORS:
            depth += 1
        node = Node(len(self.nodes), instr, args, result, local, depth=depth)
        self.nodes.append(node)
        return node

    def multiplies(self) -> int:
        return sum(1 for n in self.nodes if n.instr is not None and n.instr.op in MULTIPLIES)

    def schedule(self) -> list[Node]:
        """Anchors by (depth, original order), each after what it needs; then the rest in order."""
        done: set[int] = set()
        order: list[Node] = []

        def emit(node: Node) -> None:
            stack = [(node, False)]
            while stack:
                current, ready = stack.pop()
                if current.order in done:
                    continue
                if ready:
                    done.add(current.order)
                    order.append(current)
                    continue
                stack.append((current, True))
                for dep in reversed(current.args + current.after):
                    if dep.order not in done:
                        stack.append((dep, False))

        anchors = sorted((n for n in self.nodes if n.instr is not None and n.instr.op in ANCHORS),
                         key=lambda n: (n.depth, n.order))
        for node in anchors:
            emit(node)
        for node in self.nodes:
            emit(node)
        return order

    def encode(self, first_temp: int, temps: list[int]) -> bytes:
        """The stretch in its new order; new locals' types are appended to `temps`."""
        out = bytearray()

        def push(node: Node) -> None:
            if node.instr is None:
                out.extend(local_op(0x20, node.local))
            elif node.constant:
                out.extend(node.instr.raw)
            else:
                out.extend(local_op(0x20, node.temp))

        for node in self.schedule():
            if node.instr is None or node.constant:
                continue  # read where used
            for arg in node.args:
                push(arg)
            out.extend(node.instr.raw)
            if node.result is not None:
                node.temp = first_temp + len(temps)
                temps.append(node.result)
                out.extend(local_op(0x21, node.temp))
        # What the code after the stretch expects: the stack it left, then the locals it wrote
        # (all read before any is written: a local's new value may be another's old one).
        for node in self.stack:
            push(node)
        for index in self.assigned:
            push(self.locals[index])
        for index in reversed(self.assigned):
            out.extend(local_op(0x21, index))
        return bytes(out)


def _stretches(instrs: list[Instr], global_types: list[int]):
    """(start, end) of the maximal runs of schedulable instructions in reachable code."""
    dead = [False]
    start = None
    for i, instr in enumerate(instrs):
        op = instr.op
        plain = 0x20 <= op <= 0x22 or effect(instr, global_types) is not None
        if plain and not dead[-1]:
            if start is None:
                start = i
            continue
        if start is not None:
            yield start, i
            start = None
        if op in (0x02, 0x03, 0x04):
            dead.append(False)
        elif op == 0x05:
            dead[-1] = False
        elif op == 0x0B:
            if len(dead) > 1:
                dead.pop()
        elif op in (0x00, 0x0C, 0x0E, 0x0F, 0x12, 0x13):
            dead[-1] = True
    if start is not None:
        yield start, len(instrs)


def interleave_function(function: Function, global_types: list[int]) -> int:
    """Rewrite one function's stretches; the number rewritten."""
    instrs = function.decode()
    if instrs is None:
        return 0
    local_types = function.local_types()
    first_temp = len(local_types)
    temps: list[int] = []
    pieces: list[bytes] = []
    cursor = rewritten = 0
    for start, end in _stretches(instrs, global_types):
        if sum(1 for i in instrs[start:end] if i.op in MULTIPLIES) < MIN_MULTIPLIES:
            continue
        stretch = Stretch(instrs[start:end], local_types, global_types)
        if not stretch.ok or stretch.multiplies() < MIN_MULTIPLIES:
            continue
        pieces.extend(i.raw for i in instrs[cursor:start])
        pieces.append(stretch.encode(first_temp, temps))
        cursor = end
        rewritten += 1
    if rewritten:
        pieces.extend(i.raw for i in instrs[cursor:])
        function.replace(temps, b"".join(pieces))
    return rewritten


def interleave(wasm: bytes) -> tuple[bytes, int]:
    """The module with its multiply-add stretches interleaved, and how many were."""
    module = Module.parse(wasm)
    count = sum(interleave_function(f, module.global_types) for f in module.functions)
    return (module.encode() if count else wasm), count
