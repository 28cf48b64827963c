"""`LSTM`, `GRU` and `RNN` unrolled into plain ONNX ops, for frontends without them.

Once input shapes are static (and shape arithmetic folded), the sequence length of
every recurrent node is known; `unroll` replaces each node whose op TVM's Relax
frontend cannot convert by one step per time step: the input projection of the
whole sequence as one MatMul (plus the summed biases), then per step a Gather of
that step, a MatMul with the recurrence weights, Split into gates, the gate
activations and the state update (ONNX semantics: gate order i,o,f,c for LSTM,
z,r,h for GRU). Outputs Y, Y_h, Y_c are built only where something reads them.

Supported: directions forward/reverse/bidirectional, layout 0 and 1, optional B,
initial states (zeros when absent), peepholes, `clip`, `input_forget`, GRU's
`linear_before_reset`, activations Sigmoid/Tanh/Relu (any of them per slot), and
`sequence_lens` when absent or a constant equal to the full length. Weights (W, R,
B, P) that are constants are sliced and transposed at build time; weights computed
or fed at run time (statically shaped) get the same slices as Gather/Slice/Transpose
nodes. Anything else is a ModelError naming the node.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import onnx_fold
from .frontend import ModelError

RECURRENT = ("LSTM", "GRU", "RNN")
# Unrolled time steps (sequence length x directions) allowed per node.
MAX_STEPS = 2048
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
_ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}


def missing_ops() -> set[str]:
    """The recurrent ops the pinned TVM frontend has no converter for."""
    from .converters import convert_map

    return set(RECURRENT) - set(convert_map())


def unroll(model: onnx.ModelProto, notes: list[str], ops: set[str] | None = None) -> bool:
    """Unroll the recurrent nodes of `model`'s main graph whose op is in `ops`
    (default: those the frontend lacks), in place. Returns whether any was."""
    ops = missing_ops() if ops is None else ops
    graph = model.graph
    targets = [n for n in graph.node if n.op_type in ops and n.domain in ("", "ai.onnx")]
    if not targets:
        return False
    types = onnx_fold.infer_types(model)
    consts = _constants(graph)
    used = onnx_fold.used_names(graph) | {o.name for o in graph.output}
    opset = onnx_fold.default_opset(model)
    counts, steps = {}, 0

    def unrolled(node):
        nonlocal steps
        if node not in targets:
            return None
        unroller = _Unroller(node, graph, types, consts, used, opset)
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
        built = unroller.build()
        steps = unroller.steps
        return built

    onnx_fold.replace_nodes(graph, unrolled)
    done = ", ".join(f"{count} {op}" for op, count in sorted(counts.items()))
    notes.append(f"unrolled {done} over the static sequence length ({steps} step{'s' * (steps > 1)})"
                 if len(targets) == 1 else f"unrolled {done} over their static sequence lengths")
    return True


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.attribute \
                and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return consts


class _RunTime:
    """A weight computed or fed at run time: its name, static shape and dtype."""

    def __init__(self, name: str, shape: tuple, dtype):
        self.name, self.shape, self.dtype = name, shape, np.dtype(dtype)


class _Unroller:
    def __init__(self, node, graph, types, consts, used, opset):
        self.node, self.graph, self.types, self.consts, self.opset = node, graph, types, consts, opset
        self.op = node.op_type
        self.label = f"{node.op_type} node '{node.name or node.output[0]}'"
        self.prefix = f"{node.name or node.output[0]}/wasmforge_unroll/"
        self.attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        self.wanted = [i < len(node.output) and node.output[i] and node.output[i] in used
                       for i in range(3)]
        self.nodes: list[onnx.NodeProto] = []
        self.count = 0
        self.steps = 0

    # -- small builders --------------------------------------------------------------
    def fail(self, why: str):
        raise ModelError(f"{self.label}: {why}")

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{self.prefix}{hint}_{self.count}"

    def const(self, value: np.ndarray, hint: str) -> str:
        name = self.name(hint)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def add(self, op: str, inputs: list[str], hint: str, out: str | None = None, n_out: int = 1, **attrs):
        outs = [out] if out else [self.name(hint) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(op), **attrs))
        return outs[0] if n_out == 1 else outs

    def reshape(self, x: str, shape, hint: str, out: str | None = None) -> str:
        return self.add("Reshape", [x, self.const(np.array(shape, np.int64), "shape")], hint, out)

    def split(self, x: str, sizes: list[int], hint: str) -> list[str]:
        if len(sizes) == 1:
            return [x]
        if self.opset < 13:
            return self.add("Split", [x], hint, n_out=len(sizes), axis=-1, split=sizes)
        return self.add("Split", [x, self.const(np.array(sizes, np.int64), "sizes")], hint,
                        n_out=len(sizes), axis=-1)

    def activate(self, x: str, kind: str, hint: str) -> str:
        if self.clip is not None:
            x = self.add("Max", [self.add("Min", [x, self.clip_hi], "clip"), self.clip_lo], "clip")
        return self.add(kind, [x], hint)

    # -- inputs ------------------------------------------------------------------------
    def input(self, index: int) -> str | None:
        return self.node.input[index] if index < len(self.node.input) and self.node.input[index] else None

    def constant(self, index: int, what: str) -> np.ndarray | None:
        name = self.input(index)
        if name is None:
            return None
        if name not in self.consts:
            self.fail(f"{what} ('{name}') is not a constant; only constant weights can be unrolled")
        return self.consts[name]

    def operand(self, index: int, what: str) -> np.ndarray | _RunTime | None:
        """A weight input: its value when constant, else its name, shape and dtype."""
        name = self.input(index)
        if name is None:
            return None
        if name in self.consts:
            return self.consts[name]
        type_proto = self.types.get(name)
        shape = onnx_fold.static_shape(type_proto)
        if shape is None:
            self.fail(f"{what} ('{name}') is neither a constant nor statically shaped")
        return _RunTime(name, tuple(shape), helper.tensor_dtype_to_np_dtype(type_proto.tensor_type.elem_type))

    def rows(self, x: str, start: int, stop: int, hint: str) -> str:
        """x[start:stop] along axis 0."""
        return self.add("Slice", [x, self.const(np.array([start], np.int64), "start"),
                                  self.const(np.array([stop], np.int64), "stop"),
                                  self.const(np.array([0], np.int64), "axis")], hint)

    def weights(self, d: int, W, R, B, P, dtype) -> dict:
        """Direction d's weight operands as names: W (transposed), the summed input
        bias, R (transposed; GRU: its z,r and h parts), GRU's Rb_h, the peepholes."""
        H, G = self.hidden, _GATES[self.op]
        if not any(isinstance(v, _RunTime) for v in (W, R, B, P)):
            W, R, B, P = W[d], R[d], B[d], None if P is None else P[d]
            Wb, Rb = B[:G * H], B[G * H:]
            bias = Wb + Rb
            if self.op == "GRU" and self.linear_before_reset:
                bias = Wb.copy()
                bias[:2 * H] += Rb[:2 * H]
            out = {"W": self.const(np.ascontiguousarray(W.T), "W"), "bias": self.const(bias.astype(dtype), "bias")}
            if self.op == "GRU":
                out["R_zr"] = self.const(np.ascontiguousarray(R[:2 * H].T), "R_zr")
                out["R_h"] = self.const(np.ascontiguousarray(R[2 * H:].T), "R_h")
                out["Rb_h"] = self.const(Rb[2 * H:].astype(dtype), "Rb_h") if self.linear_before_reset else None
            else:
                out["R"] = self.const(np.ascontiguousarray(R.T), "R")
            if P is not None:
                out["P"] = [self.const(P[k * H:(k + 1) * H].astype(dtype), "P") for k in range(3)]
            return out

        def pick(value, hint: str) -> str:
            """Direction d of a weight: a constant slice, or a Gather at run time."""
            if isinstance(value, _RunTime):
                return self.add("Gather", [value.name, self.const(np.array(d, np.int64), "dir")], hint, axis=0)
            return self.const(np.ascontiguousarray(value[d]), hint)

        w, r, b = pick(W, "W_dir"), pick(R, "R_dir"), pick(B, "B_dir")
        wb, rb = self.rows(b, 0, G * H, "Wb"), self.rows(b, G * H, 2 * G * H, "Rb")
        out = {"W": self.add("Transpose", [w], "W", perm=[1, 0])}
        if self.op == "GRU" and self.linear_before_reset:
            zeros = self.const(np.zeros(H, dtype), "zeros_h")
            rb_zr = self.add("Concat", [self.rows(rb, 0, 2 * H, "Rb_zr"), zeros], "Rb_zr0", axis=0)
            out["bias"] = self.add("Add", [wb, rb_zr], "bias")
        else:
            out["bias"] = self.add("Add", [wb, rb], "bias")
        if self.op == "GRU":
            out["R_zr"] = self.add("Transpose", [self.rows(r, 0, 2 * H, "R_zr")], "R_zr", perm=[1, 0])
            out["R_h"] = self.add("Transpose", [self.rows(r, 2 * H, 3 * H, "R_h")], "R_h", perm=[1, 0])
            out["Rb_h"] = self.rows(rb, 2 * H, 3 * H, "Rb_h") if self.linear_before_reset else None
        else:
            out["R"] = self.add("Transpose", [r], "R", perm=[1, 0])
        if P is not None:
            p = pick(P, "P_dir")
            out["P"] = [self.rows(p, k * H, (k + 1) * H, "P") for k in range(3)]
        return out

    def check_attributes(self):
        attrs = self.attrs
        self.direction = attrs.get("direction", b"forward")
        self.direction = self.direction.decode() if isinstance(self.direction, bytes) else self.direction
        if self.direction not in ("forward", "reverse", "bidirectional"):
            self.fail(f"unknown direction '{self.direction}'")
        self.dirs = 2 if self.direction == "bidirectional" else 1
        self.layout = attrs.get("layout", 0)
        if self.layout not in (0, 1):
            self.fail(f"unknown layout {self.layout}")
        if "hidden_size" not in attrs:
            self.fail("no hidden_size attribute")
        self.hidden = int(attrs["hidden_size"])
        names = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
        slots = len(_DEFAULT_ACTIVATIONS[self.op])
        if not names:
            names = _DEFAULT_ACTIVATIONS[self.op] * self.dirs
        if len(names) != slots * self.dirs:
            self.fail(f"{len(names)} activations for {self.dirs} direction(s); expected {slots * self.dirs}")
        unsupported = [n for n in names if n.lower() not in _ACTIVATIONS]
        if unsupported or attrs.get("activation_alpha") or attrs.get("activation_beta"):
            self.fail(f"activation {unsupported[0] if unsupported else 'parameters'} is not supported "
                      f"(supported: Sigmoid, Tanh, Relu)")
        acts = [_ACTIVATIONS[n.lower()] for n in names]
        self.acts = [acts[d * slots:(d + 1) * slots] for d in range(self.dirs)]
        self.clip = attrs.get("clip")
        self.input_forget = int(attrs.get("input_forget", 0))
        self.linear_before_reset = int(attrs.get("linear_before_reset", 0))
        known = {"direction", "layout", "hidden_size", "activations", "activation_alpha",
                 "activation_beta", "clip", "input_forget", "linear_before_reset"}
        unknown = sorted(set(attrs) - known)
        if unknown:
            self.fail(f"attribute {unknown[0]} is not supported")

    # -- the unrolled graph ---------------------------------------------------------
    def build(self) -> list[onnx.NodeProto]:
        self.check_attributes()
        node, H, G = self.node, self.hidden, _GATES[self.op]
        x_shape = onnx_fold.static_shape(self.types.get(node.input[0]))
        if x_shape is None or len(x_shape) != 3:
            self.fail("the input X has no static 3-D shape (give --input-shape so the "
                      "sequence length is known at build time)")
        seq, batch = (x_shape[0], x_shape[1]) if self.layout == 0 else (x_shape[1], x_shape[0])
        self.steps = seq * self.dirs
        if self.steps > MAX_STEPS:
            self.fail(f"sequence length {seq} x {self.dirs} direction(s) = {self.steps} steps is "
                      f"more than the {MAX_STEPS} unrolled steps allowed")
        W = self.operand(1, "W")
        R = self.operand(2, "R")
        if W is None or R is None:
            self.fail("W and R are required")
        dtype = W.dtype
        B = self.operand(3, "B")
        if B is None:
            B = np.zeros((self.dirs, 2 * G * H), dtype)
        P = self.operand(7, "P") if self.op == "LSTM" else None
        lens = self.input(4)
        if lens is not None:
            if lens not in self.consts:
                self.fail("sequence_lens is computed at run time; only the full length "
                          f"({seq}) for every batch entry can be unrolled")
            if not np.all(np.asarray(self.consts[lens]) == seq):
                self.fail(f"sequence_lens {np.asarray(self.consts[lens]).tolist()} differs from the "
                          f"full length {seq}; only full-length sequences can be unrolled")
        if W.shape[:2] != (self.dirs, G * H) or R.shape != (self.dirs, G * H, H) or \
                B.shape != (self.dirs, 2 * G * H):
            self.fail(f"W/R/B shapes {list(W.shape)}/{list(R.shape)}/{list(B.shape)} do not fit "
                      f"hidden_size {H} and {self.dirs} direction(s)")
        if P is not None and P.shape != (self.dirs, 3 * H):
            self.fail(f"P shape {list(P.shape)} does not fit hidden_size {H}")
        if self.clip is not None:
            self.clip_hi = self.const(np.array(self.clip, dtype), "clip_hi")
            self.clip_lo = self.const(np.array(-self.clip, dtype), "clip_lo")
        self.one = self.const(np.array(1, dtype), "one") if self.input_forget else None

        x = node.input[0]
        if self.layout == 1:
            x = self.add("Transpose", [x], "x_seq_major", perm=[1, 0, 2])
        init_h = self.state(5, batch, dtype)
        init_c = self.state(6, batch, dtype) if self.op == "LSTM" else None

        ys, hs, cs = [], [], []
        for d in range(self.dirs):
            reverse = self.direction == "reverse" or d == 1
            y, h, c = self.direction_steps(d, x, seq, batch, self.weights(d, W, R, B, P, dtype),
                                           init_h[d], init_c and init_c[d], reverse, dtype)
            ys.append(y)
            hs.append(h)
            cs.append(c)
        outputs = list(node.output) + [""] * (3 - len(node.output))
        if self.wanted[0]:
            parts = [self.reshape(y, [seq, 1, batch, H], "y_dir") for y in ys]
            y = parts[0] if self.dirs == 1 else self.add("Concat", parts, "y", axis=1)
            if self.layout == 1:
                self.add("Transpose", [y], "y", out=outputs[0], perm=[2, 0, 1, 3])
            else:
                self.add("Identity", [y], "y", out=outputs[0])
        for index, finals in ((1, hs), (2, cs)):
            if not self.wanted[index]:
                continue
            parts = [self.reshape(f, [1, batch, H], "final") for f in finals]
            out = parts[0] if self.dirs == 1 else self.add("Concat", parts, "final", axis=0)
            if self.layout == 1:
                self.add("Transpose", [out], "final", out=outputs[index], perm=[1, 0, 2])
            else:
                self.add("Identity", [out], "final", out=outputs[index])
        return self.nodes

    def state(self, index: int, batch: int, dtype) -> list[str | None]:
        """Per direction [batch, H] initial state names (None: zeros)."""
        name = self.input(index)
        if name is None:
            return [None] * self.dirs
        if self.layout == 1:
            name = self.add("Transpose", [name], "state", perm=[1, 0, 2])
        return [self.add("Gather", [name, self.const(np.array(d, np.int64), "dir")], "state", axis=0)
                for d in range(self.dirs)]

    def direction_steps(self, d, x, seq, batch, weights, h, c, reverse, dtype):
        H, op = self.hidden, self.op
        acts = self.acts[d]
        # The input projection of every step at once: [seq, batch, G*H].
        xw = self.add("Add", [self.add("MatMul", [x, weights["W"]], "xw"), weights["bias"]], "xw")
        if op == "GRU":
            rt_zr, rt_h, rb_h = weights["R_zr"], weights["R_h"], weights["Rb_h"]
        else:
            rt = weights["R"]
        P = weights.get("P")
        if P is not None:
            p_i, p_o, p_f = P
        zeros = None
        if h is None or (op == "LSTM" and c is None):
            zeros = self.const(np.zeros((batch, H), dtype), "zeros")
        h = h or zeros
        c = (c or zeros) if op == "LSTM" else None
        outs = [None] * seq
        for step in range(seq):
            t = seq - 1 - step if reverse else step
            xt = self.add("Gather", [xw, self.const(np.array(t, np.int64), "t")], f"x{t}", axis=0)
            if op == "LSTM":
                gates = self.add("Add", [xt, self.add("MatMul", [h, rt], "hr")], "gates")
                gi, go, gf, gc = self.split(gates, [H] * 4, "gate")
                if P is not None:
                    gi = self.add("Add", [gi, self.add("Mul", [c, p_i], "peep")], "gi")
                    gf = self.add("Add", [gf, self.add("Mul", [c, p_f], "peep")], "gf")
                i = self.activate(gi, acts[0], "i")
                f = self.add("Sub", [self.one, i], "f") if self.input_forget else self.activate(gf, acts[0], "f")
                g = self.activate(gc, acts[1], "g")
                c = self.add("Add", [self.add("Mul", [f, c], "fc"), self.add("Mul", [i, g], "ig")], "c")
                if P is not None:
                    go = self.add("Add", [go, self.add("Mul", [c, p_o], "peep")], "go")
                o = self.activate(go, acts[0], "o")
                h = self.add("Mul", [o, self.add(acts[2], [c], "hc")], "h")
            elif op == "GRU":
                x_zr, x_h = self.split(xt, [2 * H, H], "x")
                zr = self.add("Add", [x_zr, self.add("MatMul", [h, rt_zr], "hr")], "zr")
                gz, gr = self.split(zr, [H, H], "zr")
                z = self.activate(gz, acts[0], "z")
                r = self.activate(gr, acts[0], "r")
                if self.linear_before_reset:
                    hr = self.add("Add", [self.add("MatMul", [h, rt_h], "hr"), rb_h], "hr")
                    pre = self.add("Add", [x_h, self.add("Mul", [r, hr], "rh")], "pre")
                else:
                    rh = self.add("MatMul", [self.add("Mul", [r, h], "rh"), rt_h], "rh")
                    pre = self.add("Add", [x_h, rh], "pre")  # Rb_h is in x_h's bias
                cand = self.activate(pre, acts[1], "cand")
                # (1 - z) * cand + z * h = cand + z * (h - cand)
                h = self.add("Add", [cand, self.add("Mul", [z, self.add("Sub", [h, cand], "d")], "zd")], "h")
            else:
                pre = self.add("Add", [xt, self.add("MatMul", [h, rt], "hr")], "pre")
                h = self.activate(pre, acts[0], "h")
            outs[t] = h
        y = None
        if self.wanted[0]:
            y = outs[0] if seq == 1 else self.add("Concat", outs, "y", axis=0)  # [seq*batch, H]
        return y, h, c
