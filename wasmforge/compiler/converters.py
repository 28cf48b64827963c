"""Relax converters for ONNX ops the pinned TVM frontend lacks and no ONNX
function body defines.

`convert_map()` is TVM's converter map plus these; `installed()` makes the
frontend use it for the duration of one import. Each converter follows TVM's
`OnnxOpConverter` convention (`_impl_vN` per opset).
"""

from __future__ import annotations

import contextlib


def _extra_converters() -> dict:
    from tvm import relax, topi
    from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter, get_constant

    class CumProd(OnnxOpConverter):
        """CumProd (opset 26): CumSum's attributes (exclusive, reverse), a product."""

        @classmethod
        def _impl_v26(cls, bb, inputs, attr, params):
            import tvm

            axis = get_constant(inputs[1], params)
            if not isinstance(axis, tvm.ir.GenericConst) or axis.value.numpy().size != 1:
                raise ValueError("CumProd needs a constant scalar axis")
            axis = int(axis.value.numpy().reshape(-1)[0])
            data, reverse = inputs[0], attr.get("reverse", 0) != 0
            if reverse:
                data = bb.emit_te(topi.flip, data, axis=axis)
            data = bb.normalize(relax.op.cumprod(data, axis, exclusive=attr.get("exclusive", 0) != 0))
            if reverse:
                data = bb.emit_te(topi.flip, data, axis=axis)
            return data

    return {"CumProd": CumProd}


def convert_map() -> dict:
    """Op type -> converter class: TVM's, then this module's for ops TVM lacks."""
    from tvm.relax.frontend.onnx import onnx_frontend

    tvm_map = _tvm_convert_map or onnx_frontend._get_convert_map
    known = tvm_map()
    known.update({op: cls for op, cls in _extra_converters().items() if op not in known})
    return known


_tvm_convert_map = None


@contextlib.contextmanager
def installed():
    """The TVM frontend sees `convert_map()` while the block runs."""
    global _tvm_convert_map
    from tvm.relax.frontend.onnx import onnx_frontend

    if _tvm_convert_map is not None:  # already installed (nested)
        yield
        return
    _tvm_convert_map = onnx_frontend._get_convert_map
    onnx_frontend._get_convert_map = convert_map
    try:
        yield
    finally:
        onnx_frontend._get_convert_map = _tvm_convert_map
        _tvm_convert_map = None
