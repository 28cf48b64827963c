"""Read and rewrite the code of a WebAssembly module: just enough of the binary
format for interleave.py.

`Module.parse` splits a module into sections and, for the code section, into
function bodies with their local declarations and instructions (`Instr`: the
raw bytes of one instruction, decoded only as far as its operator and the one
immediate the rewrite needs, a local or global index). `Module.encode` writes
it back: sections and bodies that were not replaced are copied byte for byte.

The instruction table is the core spec plus the fixed-width SIMD, relaxed SIMD,
bulk memory and saturating truncation proposals (what LLVM 19 emits for
wasm32 with +simd128,+relaxed-simd). A body with an operator outside it is
kept as it is (`Function.instrs` is None).
"""

from __future__ import annotations

from dataclasses import dataclass, field

I32, I64, F32, F64, V128 = 0x7F, 0x7E, 0x7D, 0x7C, 0x7B
SIMD, MISC = 0xFD, 0xFC  # operator prefixes; a prefixed operator is (prefix << 16) | sub-opcode
CODE_SECTION, TYPE_SECTION, IMPORT_SECTION, FUNCTION_SECTION, GLOBAL_SECTION = 10, 1, 2, 3, 6


class WasmFormatError(ValueError):
    """The bytes are not a module this reader understands."""


def read_uleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise WasmFormatError("truncated LEB128")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def skip_leb(data: bytes, pos: int) -> int:
    while data[pos] & 0x80:
        pos += 1
    return pos + 1


def uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def local_op(opcode: int, index: int) -> bytes:
    """`local.get` (0x20), `local.set` (0x21) or `local.tee` (0x22) of `index`."""
    return bytes([opcode]) + uleb(index)


@dataclass
class Instr:
    op: int  # single-byte opcode, or (prefix << 16) | sub-opcode
    raw: bytes  # the whole instruction as it was encoded
    index: int = -1  # the local/global index of local.*/global.*, else -1


def _skip_memarg(data: bytes, pos: int) -> int:
    align, pos = read_uleb(data, pos)
    if align & 0x40:  # multi-memory: a memory index follows
        pos = skip_leb(data, pos)
    return skip_leb(data, pos)


def _skip_blocktype(data: bytes, pos: int) -> int:
    if data[pos] == 0x40 or data[pos] in (I32, I64, F32, F64, V128, 0x70, 0x6F):
        return pos + 1
    return skip_leb(data, pos)  # a type index (s33)


def _simd_immediates(sub: int, data: bytes, pos: int) -> int:
    if sub <= 11 or sub in (92, 93):
        return _skip_memarg(data, pos)
    if sub in (12, 13):
        return pos + 16
    if 21 <= sub <= 34:
        return pos + 1
    if 84 <= sub <= 91:
        return _skip_memarg(data, pos) + 1
    if sub <= 275:
        return pos
    raise WasmFormatError(f"unknown SIMD operator {sub}")


def _misc_immediates(sub: int, data: bytes, pos: int) -> int:
    if sub <= 7:
        return pos
    if sub in (8, 10, 12, 14):
        return skip_leb(data, skip_leb(data, pos))
    if sub in (9, 11, 13, 15, 16, 17):
        return skip_leb(data, pos)
    raise WasmFormatError(f"unknown 0xfc operator {sub}")


def decode_instructions(data: bytes, pos: int, end: int) -> list[Instr]:
    """Every instruction of one body's expression, up to and including its final `end`."""
    out: list[Instr] = []
    while pos < end:
        instr = decode_one(data, pos)
        pos += len(instr.raw)
        if pos > end:
            raise WasmFormatError("instruction runs past its body")
        out.append(instr)
    return out


def decode_one(data: bytes, pos: int) -> Instr:
    """The instruction at `pos`."""
    start = pos
    op = data[pos]
    pos += 1
    index = -1
    if op in (0x02, 0x03, 0x04):
        pos = _skip_blocktype(data, pos)
    elif op in (0x0C, 0x0D, 0x10, 0x12, 0xD2, 0x25, 0x26):
        pos = skip_leb(data, pos)
    elif op in (0x11, 0x13):
        pos = skip_leb(data, skip_leb(data, pos))
    elif op == 0x0E:
        count, pos = read_uleb(data, pos)
        for _ in range(count + 1):
            pos = skip_leb(data, pos)
    elif 0x20 <= op <= 0x24:
        index, pos = read_uleb(data, pos)
    elif 0x28 <= op <= 0x3E:
        pos = _skip_memarg(data, pos)
    elif op in (0x3F, 0x40):
        pos += 1
    elif op in (0x41, 0x42):
        pos = skip_leb(data, pos)
    elif op == 0x43:
        pos += 4
    elif op == 0x44:
        pos += 8
    elif op == 0x1C:
        count, pos = read_uleb(data, pos)
        pos += count
    elif op == 0xD0:
        pos += 1
    elif op == SIMD:
        sub, pos = read_uleb(data, pos)
        pos = _simd_immediates(sub, data, pos)
        op = (SIMD << 16) | sub
    elif op == MISC:
        sub, pos = read_uleb(data, pos)
        pos = _misc_immediates(sub, data, pos)
        op = (MISC << 16) | sub
    elif not (op <= 0x01 or op in (0x05, 0x0B, 0x0F, 0x1A, 0x1B, 0xD1) or 0x45 <= op <= 0xC4):
        raise WasmFormatError(f"unknown operator 0x{op:02x}")
    if pos > len(data):
        raise WasmFormatError("truncated instruction")
    return Instr(op, data[start:pos], index)


@dataclass
class Function:
    params: list[int]  # value types of the parameters
    local_groups: list[tuple[int, int]]  # (count, type) as declared
    body: bytes  # the encoded body (locals and code), as read
    code_start: int  # offset of the instructions within `body`
    instrs: list[Instr] | None = None  # decoded on demand; None: not decodable
    replaced: bytes | None = None  # a new encoded body, if rewritten

    def local_types(self) -> list[int]:
        types = list(self.params)
        for count, kind in self.local_groups:
            types.extend([kind] * count)
        return types

    def decode(self) -> list[Instr] | None:
        if self.instrs is None:
            try:
                self.instrs = decode_instructions(self.body, self.code_start, len(self.body))
            except (WasmFormatError, IndexError):
                return None
        return self.instrs

    def replace(self, extra_locals: list[int], code: bytes) -> None:
        """Give the function `code` (ending in its final `end`) and `extra_locals` more locals."""
        groups = list(self.local_groups)
        for kind in extra_locals:
            if groups and groups[-1][1] == kind:
                groups[-1] = (groups[-1][0] + 1, kind)
            else:
                groups.append((1, kind))
        head = uleb(len(groups)) + b"".join(uleb(count) + bytes([kind]) for count, kind in groups)
        self.replaced = head + code


@dataclass
class Module:
    sections: list[tuple[int, bytes]]  # (id, payload) in order
    functions: list[Function] = field(default_factory=list)
    global_types: list[int] = field(default_factory=list)  # imported globals first

    @classmethod
    def parse(cls, data: bytes) -> "Module":
        if data[:8] != b"\0asm\x01\0\0\0":
            raise WasmFormatError("not a WebAssembly module (version 1)")
        sections: list[tuple[int, bytes]] = []
        pos = 8
        while pos < len(data):
            sid = data[pos]
            size, pos = read_uleb(data, pos + 1)
            sections.append((sid, data[pos:pos + size]))
            pos += size
        if pos != len(data):
            raise WasmFormatError("a section runs past the end of the module")
        module = cls(sections)
        module._read_functions()
        return module

    def _payload(self, sid: int) -> bytes | None:
        return next((payload for s, payload in self.sections if s == sid), None)

    def _read_functions(self) -> None:
        types: list[list[int]] = []
        payload = self._payload(TYPE_SECTION) or b"\0"
        count, pos = read_uleb(payload, 0)
        for _ in range(count):
            if payload[pos] != 0x60:
                raise WasmFormatError("unsupported type form")
            nparams, pos = read_uleb(payload, pos + 1)
            types.append(list(payload[pos:pos + nparams]))
            nresults, pos = read_uleb(payload, pos + nparams)
            pos += nresults
        payload = self._payload(IMPORT_SECTION) or b"\0"
        count, pos = read_uleb(payload, 0)
        for _ in range(count):
            for _name in range(2):
                length, pos = read_uleb(payload, pos)
                pos += length
            kind = payload[pos]
            pos += 1
            if kind == 0:  # function
                pos = skip_leb(payload, pos)
            elif kind == 1:  # table: reftype, limits
                pos = self._skip_limits(payload, pos + 1)
            elif kind == 2:  # memory
                pos = self._skip_limits(payload, pos)
            elif kind == 3:  # global: valtype, mutability
                self.global_types.append(payload[pos])
                pos += 2
            else:
                raise WasmFormatError(f"unsupported import kind {kind}")
        payload = self._payload(GLOBAL_SECTION)
        if payload:
            count, pos = read_uleb(payload, 0)
            for _ in range(count):
                self.global_types.append(payload[pos])
                pos += 2
                while payload[pos] != 0x0B:  # the constant initializer
                    pos += len(decode_one(payload, pos).raw)
                pos += 1
        payload = self._payload(FUNCTION_SECTION) or b"\0"
        count, pos = read_uleb(payload, 0)
        signatures = []
        for _ in range(count):
            index, pos = read_uleb(payload, pos)
            signatures.append(types[index])
        payload = self._payload(CODE_SECTION) or b"\0"
        count, pos = read_uleb(payload, 0)
        if count != len(signatures):
            raise WasmFormatError("function and code sections disagree")
        for params in signatures:
            size, pos = read_uleb(payload, pos)
            body = payload[pos:pos + size]
            pos += size
            ngroups, cursor = read_uleb(body, 0)
            groups = []
            for _ in range(ngroups):
                n, cursor = read_uleb(body, cursor)
                groups.append((n, body[cursor]))
                cursor += 1
            self.functions.append(Function(params, groups, body, cursor))

    @staticmethod
    def _skip_limits(payload: bytes, pos: int) -> int:
        flags = payload[pos]
        pos = skip_leb(payload, pos + 1)
        return skip_leb(payload, pos) if flags & 1 else pos

    def encode(self) -> bytes:
        out = bytearray(b"\0asm\x01\0\0\0")
        for sid, payload in self.sections:
            if sid == CODE_SECTION and any(f.replaced is not None for f in self.functions):
                bodies = [f.replaced if f.replaced is not None else f.body for f in self.functions]
                payload = uleb(len(bodies)) + b"".join(uleb(len(b)) + b for b in bodies)
            out += bytes([sid]) + uleb(len(payload)) + payload
        return bytes(out)
