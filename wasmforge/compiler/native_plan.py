"""Execute a plan with the same kernels compiled for the host CPU.

A second, independent reader of the plan format (the first is the Rust runtime):
tests use it to check plan derivation against onnxruntime without Docker or
wasm, and `invoke bench` uses it as the "TVM native" column. Storage sharing is
real: tensors are numpy views into the plan's storage buffers, handed to the
kernels through DLPack without copies.
"""

from __future__ import annotations

import numpy as np

NATIVE_TARGET = {"kind": "llvm"}


def compile_native(mod, kernel_names: list[str]):
    import tvm
    from tvm import tirx

    funcs = {gv: f for gv, f in mod.functions.items()
             if isinstance(f, tirx.PrimFunc) and gv.name_hint in kernel_names}
    return tvm.tirx.build(tvm.IRModule(funcs), tvm.target.Target(NATIVE_TARGET))


def aligned_zeros(nbytes: int, align: int = 64) -> np.ndarray:
    """A zeroed uint8 buffer whose data pointer is `align`-aligned (DLPack import insists)."""
    raw = np.zeros(nbytes + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start: start + nbytes]


class NativePlan:
    def __init__(self, plan: dict, params: bytes, library):
        import tvm

        self.plan = plan
        self.storages = [aligned_zeros(s["size"]) for s in plan["storages"]]
        self.params = aligned_zeros(len(params))
        self.params[:] = np.frombuffer(params, np.uint8)
        self.inputs: dict[int, np.ndarray] = {}
        arrays: list[np.ndarray] = []
        for entry in plan["tensors"]:
            arrays.append(self._array(entry, arrays))
        self.arrays = arrays
        self.tvm_tensors = [tvm.runtime.from_dlpack(a) for a in arrays]
        self.functions = {name: library[name] for name in {c["kernel"] for c in plan["calls"]}}

    def _array(self, entry: dict, arrays: list[np.ndarray]) -> np.ndarray:
        dtype = np.dtype(entry["dtype"])
        shape = tuple(entry["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        kind = entry["kind"]
        if kind == "input":
            array = aligned_zeros(count * dtype.itemsize).view(dtype).reshape(shape)
            self.inputs[entry["index"]] = array
            return array
        if kind == "param":
            buffer, offset = self.params, entry["offset"]
        elif kind == "storage":
            buffer, offset = self.storages[entry["storage"]], entry["offset"]
        elif kind == "view":
            base = arrays[entry["of"]]
            return base.reshape(-1).view(np.uint8)[: count * dtype.itemsize].view(dtype).reshape(shape)
        else:
            raise ValueError(f"unknown tensor kind {kind}")
        return buffer[offset: offset + count * dtype.itemsize].view(dtype).reshape(shape)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        for slot, value in zip([self.inputs[i] for i in sorted(self.inputs)], inputs, strict=True):
            slot[...] = value
        tensors = self.tvm_tensors
        for call in self.plan["calls"]:
            self.functions[call["kernel"]](*[tensors[i] for i in call["args"]])
        return [self.arrays[o["tensor"]].copy() for o in self.plan["outputs"]]
