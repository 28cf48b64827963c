"""A small BERT-style encoder with seeded random weights, shaped like a Hugging Face export.

Two int64 inputs, `input_ids` and `attention_mask` [1, 16], and one output, the last
hidden state [1, 16, 64]. The graph is what `transformers` exports for BertModel at
opset 17, only smaller (2 layers, hidden 64, 4 heads of 16, intermediate 256):

- embeddings: Gather of the word, position (constant ids 0..15) and token-type
  (constant ids 0) tables, summed, then LayerNormalization;
- per layer: Q/K/V as MatMul + Add, Reshape/Transpose into heads, scaled
  Q.K^T + mask bias, Softmax, .V, heads merged back, output MatMul + Add, residual
  Add + LayerNormalization; a feed-forward MatMul + Add, exact GELU
  (x * 0.5 * (1 + Erf(x / sqrt 2))), MatMul + Add, residual Add + LayerNormalization.

The mask bias is Where(Cast(mask, bool), 0, -10000): any non-zero mask value means
"attend", so every int64 mask (not only 0/1) is valid. Token ids must be in
[0, VOCAB_SIZE). Dense weights have variance 1/fan_in (not BERT's 0.02 init) so that
attention is not uniform and outputs depend visibly on the input; LayerNormalization
keeps every hidden state O(1).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto

from wasmforge.generators.common import GraphBuilder, float_tensor, int64_tensor

SEQUENCE_LENGTH = 16
VOCAB_SIZE = 1000
MAX_POSITIONS = 64
TYPE_VOCAB_SIZE = 2
HIDDEN = 64
HEADS = 4
HEAD_SIZE = HIDDEN // HEADS
INTERMEDIATE = 4 * HIDDEN
LAYERS = 2
LAYER_NORM_EPSILON = 1e-12
EMBEDDING_STD = 0.02  # BERT's initializer range; the embedding LayerNorm rescales anyway
MASK_BIAS = -10000.0

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "last_hidden_state"
BATCH = 1

# LayerNormalization is an ONNX operator from opset 17 on; IR version 8 is its release's.
OPSET = 17
IR_VERSION = 8


class _BertBuilder(GraphBuilder):
    def int64(self, name: str, values) -> str:
        return self.constant(name, np.asarray(values), dtype=np.int64)

    def linear(self, x: str, prefix: str, in_features: int, out_features: int) -> str:
        """x @ W + b with W stored [in, out], as torch.onnx exports nn.Linear for MatMul."""
        weight = self.rng.standard_normal((in_features, out_features)) / math.sqrt(in_features)
        y = self.op("MatMul", [x, self.constant(f"{prefix}.weight", weight)], f"{prefix}.matmul")
        return self.op("Add", [y, self.constant(f"{prefix}.bias", self.normal(0.02, out_features))],
                       f"{prefix}.add")

    def layer_norm(self, x: str, prefix: str) -> str:
        scale = self.constant(f"{prefix}.weight", self.uniform((0.8, 1.2), HIDDEN))
        bias = self.constant(f"{prefix}.bias", self.normal(0.05, HIDDEN))
        return self.op("LayerNormalization", [x, scale, bias], prefix, axis=-1,
                       epsilon=LAYER_NORM_EPSILON)


def _embeddings(graph: _BertBuilder) -> str:
    shape = (BATCH, SEQUENCE_LENGTH)
    word = graph.constant("embeddings.word_embeddings.weight",
                          graph.normal(EMBEDDING_STD, (VOCAB_SIZE, HIDDEN)))
    position = graph.constant("embeddings.position_embeddings.weight",
                              graph.normal(EMBEDDING_STD, (MAX_POSITIONS, HIDDEN)))
    token_type = graph.constant("embeddings.token_type_embeddings.weight",
                                graph.normal(EMBEDDING_STD, (TYPE_VOCAB_SIZE, HIDDEN)))
    position_ids = graph.int64("embeddings.position_ids", np.arange(SEQUENCE_LENGTH).reshape(shape))
    token_type_ids = graph.int64("embeddings.token_type_ids", np.zeros(shape))
    x = graph.op("Gather", [word, INPUT_NAMES[0]], "embeddings.word", axis=0)
    x = graph.op("Add", [x, graph.op("Gather", [token_type, token_type_ids], "embeddings.token_type", axis=0)],
                 "embeddings.add_token_type")
    x = graph.op("Add", [x, graph.op("Gather", [position, position_ids], "embeddings.position", axis=0)],
                 "embeddings.add_position")
    return graph.layer_norm(x, "embeddings.LayerNorm")


def _mask_bias(graph: _BertBuilder) -> str:
    """[1, 1, 1, S] additive bias: 0 where the mask is non-zero, MASK_BIAS elsewhere."""
    mask = graph.op("Unsqueeze", [INPUT_NAMES[1], graph.int64("mask.axes", [1, 2])], "mask.unsqueeze")
    keep = graph.op("Cast", [mask], "mask.bool", to=TensorProto.BOOL)
    return graph.op("Where", [keep, graph.constant("mask.zero", np.array(0.0)),
                              graph.constant("mask.bias", np.array(MASK_BIAS))], "mask.additive")


def _layer(graph: _BertBuilder, x: str, mask_bias: str, prefix: str) -> str:
    heads_shape = graph.int64(f"{prefix}.heads_shape", [BATCH, SEQUENCE_LENGTH, HEADS, HEAD_SIZE])
    merged_shape = graph.int64(f"{prefix}.merged_shape", [BATCH, SEQUENCE_LENGTH, HIDDEN])

    def heads(name: str, perm: list[int]) -> str:
        y = graph.linear(x, f"{prefix}.attention.{name}", HIDDEN, HIDDEN)
        y = graph.op("Reshape", [y, heads_shape], f"{prefix}.attention.{name}.reshape")
        return graph.op("Transpose", [y], f"{prefix}.attention.{name}.transpose", perm=perm)

    q = heads("query", [0, 2, 1, 3])  # [B, H, S, D]
    k = heads("key", [0, 2, 3, 1])  # [B, H, D, S]
    v = heads("value", [0, 2, 1, 3])  # [B, H, S, D]
    scores = graph.op("MatMul", [q, k], f"{prefix}.attention.scores")
    scale = graph.constant(f"{prefix}.attention.scale", np.array(math.sqrt(HEAD_SIZE)))
    scores = graph.op("Div", [scores, scale], f"{prefix}.attention.scaled")
    scores = graph.op("Add", [scores, mask_bias], f"{prefix}.attention.masked")
    probs = graph.op("Softmax", [scores], f"{prefix}.attention.probs", axis=-1)
    context = graph.op("MatMul", [probs, v], f"{prefix}.attention.context")
    context = graph.op("Transpose", [context], f"{prefix}.attention.context.transpose", perm=[0, 2, 1, 3])
    context = graph.op("Reshape", [context, merged_shape], f"{prefix}.attention.context.reshape")
    y = graph.linear(context, f"{prefix}.attention.output", HIDDEN, HIDDEN)
    x = graph.layer_norm(graph.op("Add", [y, x], f"{prefix}.attention.residual"),
                         f"{prefix}.attention.LayerNorm")

    h = graph.linear(x, f"{prefix}.intermediate", HIDDEN, INTERMEDIATE)
    h = _gelu(graph, h, f"{prefix}.intermediate.gelu")
    y = graph.linear(h, f"{prefix}.output", INTERMEDIATE, HIDDEN)
    return graph.layer_norm(graph.op("Add", [y, x], f"{prefix}.output.residual"), f"{prefix}.output.LayerNorm")


def _gelu(graph: _BertBuilder, x: str, prefix: str) -> str:
    """Exact GELU as torch exports it before opset 20: x * 0.5 * (1 + erf(x / sqrt(2)))."""
    e = graph.op("Erf", [graph.op("Div", [x, graph.constant(f"{prefix}.sqrt2", np.array(math.sqrt(2.0)))],
                                  f"{prefix}.div")], f"{prefix}.erf")
    e = graph.op("Add", [e, graph.constant(f"{prefix}.one", np.array(1.0))], f"{prefix}.add")
    y = graph.op("Mul", [x, e], f"{prefix}.mul")
    return graph.op("Mul", [y, graph.constant(f"{prefix}.half", np.array(0.5))], f"{prefix}.half_mul")


def build_model(seed: int = 0) -> onnx.ModelProto:
    """The encoder (opset 17) with weights drawn from numpy's default_rng(seed).

    The same seed gives byte-identical `SerializeToString()` output (for a given numpy
    version, whose Generator streams are what the models.toml pin records).
    """
    graph = _BertBuilder(np.random.default_rng(seed))
    x = _embeddings(graph)
    mask_bias = _mask_bias(graph)
    for layer in range(LAYERS):
        x = _layer(graph, x, mask_bias, f"encoder.layer.{layer}")
    # The last LayerNorm's output is the graph output: rename it rather than add an Identity.
    graph.nodes[-1].output[0] = OUTPUT_NAME
    return graph.model(
        graph_name="bert_synthetic",
        inputs=[int64_tensor(name, (BATCH, SEQUENCE_LENGTH)) for name in INPUT_NAMES],
        outputs=[float_tensor(OUTPUT_NAME, (BATCH, SEQUENCE_LENGTH, HIDDEN))],
        opset=OPSET,
        ir_version=IR_VERSION,
        producer="wasmforge.generators.bert",
        doc=f"BERT-style encoder ({LAYERS} layers, hidden {HIDDEN}, {HEADS} heads) with random weights, "
            f"numpy default_rng(seed={seed}).",
    )
