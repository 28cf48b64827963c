"""BERT-style encoders with seeded random weights, shaped like a Hugging Face export.

Two int64 inputs, `input_ids` and `attention_mask` [1, S], and one output, the last
hidden state [1, S, hidden]. The graph is what `transformers` exports for BertModel at
opset 17; `BertShape` gives the sizes. Two shapes are in the registry:

- `build_model` (bert-synth): 2 layers, hidden 64, 4 heads of 16, intermediate 256,
  sequence 16, vocabulary 1000 (the module constants below);
- `build_minilm` (minilm-synth): the all-MiniLM-L6 shape, 6 layers, hidden 384,
  12 heads of 32, intermediate 1536, sequence 128, vocabulary 30522, 512 positions.

Per model:

- embeddings: Gather of the word, position (constant ids 0..S-1) and token-type
  (constant ids 0) tables, summed, then LayerNormalization;
- per layer: Q/K/V as MatMul + Add, Reshape/Transpose into heads, scaled
  Q.K^T + mask bias, Softmax, .V, heads merged back, output MatMul + Add, residual
  Add + LayerNormalization; a feed-forward MatMul + Add, exact GELU
  (x * 0.5 * (1 + Erf(x / sqrt 2))), MatMul + Add, residual Add + LayerNormalization.

The mask bias is Where(Cast(mask, bool), 0, -10000): any non-zero mask value means
"attend", so every int64 mask (not only 0/1) is valid. Token ids must be in
[0, vocabulary). Dense weights have variance 1/fan_in (not BERT's 0.02 init) so that
attention is not uniform and outputs depend visibly on the input; LayerNormalization
keeps every hidden state O(1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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



@dataclass(frozen=True)
class BertShape:
    sequence_length: int
    vocab_size: int
    max_positions: int
    hidden: int
    heads: int
    intermediate: int
    layers: int
    type_vocab_size: int = TYPE_VOCAB_SIZE
    name: str = "bert_synthetic"  # the ONNX graph name

    @property
    def head_size(self) -> int:
        return self.hidden // self.heads


BERT_SYNTH = BertShape(SEQUENCE_LENGTH, VOCAB_SIZE, MAX_POSITIONS, HIDDEN, HEADS, INTERMEDIATE, LAYERS)
MINILM_L6 = BertShape(sequence_length=128, vocab_size=30522, max_positions=512, hidden=384, heads=12,
                      intermediate=1536, layers=6, name="minilm_synthetic")

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "last_hidden_state"
BATCH = 1

# LayerNormalization is an ONNX operator from opset 17 on; IR version 8 is its release's.
OPSET = 17
IR_VERSION = 8


class _BertBuilder(GraphBuilder):
    def __init__(self, rng: np.random.Generator, shape: BertShape):
        super().__init__(rng)
        self.shape = shape

    def int64(self, name: str, values) -> str:
        return self.constant(name, np.asarray(values), dtype=np.int64)

    def linear(self, x: str, prefix: str, in_features: int, out_features: int) -> str:
        """x @ W + b with W stored [in, out], as torch.onnx exports nn.Linear for MatMul."""
        weight = self.rng.standard_normal((in_features, out_features)) / math.sqrt(in_features)
        y = self.op("MatMul", [x, self.constant(f"{prefix}.weight", weight)], f"{prefix}.matmul")
        return self.op("Add", [y, self.constant(f"{prefix}.bias", self.normal(0.02, out_features))],
                       f"{prefix}.add")

    def layer_norm(self, x: str, prefix: str) -> str:
        scale = self.constant(f"{prefix}.weight", self.uniform((0.8, 1.2), self.shape.hidden))
        bias = self.constant(f"{prefix}.bias", self.normal(0.05, self.shape.hidden))
        return self.op("LayerNormalization", [x, scale, bias], prefix, axis=-1,
                       epsilon=LAYER_NORM_EPSILON)


def _embeddings(graph: _BertBuilder) -> str:
    s = graph.shape
    shape = (BATCH, s.sequence_length)
    word = graph.constant("embeddings.word_embeddings.weight",
                          graph.normal(EMBEDDING_STD, (s.vocab_size, s.hidden)))
    position = graph.constant("embeddings.position_embeddings.weight",
                              graph.normal(EMBEDDING_STD, (s.max_positions, s.hidden)))
    token_type = graph.constant("embeddings.token_type_embeddings.weight",
                                graph.normal(EMBEDDING_STD, (s.type_vocab_size, s.hidden)))
    position_ids = graph.int64("embeddings.position_ids", np.arange(s.sequence_length).reshape(shape))
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
    s = graph.shape
    heads_shape = graph.int64(f"{prefix}.heads_shape", [BATCH, s.sequence_length, s.heads, s.head_size])
    merged_shape = graph.int64(f"{prefix}.merged_shape", [BATCH, s.sequence_length, s.hidden])

    def heads(name: str, perm: list[int]) -> str:
        y = graph.linear(x, f"{prefix}.attention.{name}", s.hidden, s.hidden)
        y = graph.op("Reshape", [y, heads_shape], f"{prefix}.attention.{name}.reshape")
        return graph.op("Transpose", [y], f"{prefix}.attention.{name}.transpose", perm=perm)

    q = heads("query", [0, 2, 1, 3])  # [B, H, S, D]
    k = heads("key", [0, 2, 3, 1])  # [B, H, D, S]
    v = heads("value", [0, 2, 1, 3])  # [B, H, S, D]
    scores = graph.op("MatMul", [q, k], f"{prefix}.attention.scores")
    scale = graph.constant(f"{prefix}.attention.scale", np.array(math.sqrt(s.head_size)))
    scores = graph.op("Div", [scores, scale], f"{prefix}.attention.scaled")
    scores = graph.op("Add", [scores, mask_bias], f"{prefix}.attention.masked")
    probs = graph.op("Softmax", [scores], f"{prefix}.attention.probs", axis=-1)
    context = graph.op("MatMul", [probs, v], f"{prefix}.attention.context")
    context = graph.op("Transpose", [context], f"{prefix}.attention.context.transpose", perm=[0, 2, 1, 3])
    context = graph.op("Reshape", [context, merged_shape], f"{prefix}.attention.context.reshape")
    y = graph.linear(context, f"{prefix}.attention.output", s.hidden, s.hidden)
    x = graph.layer_norm(graph.op("Add", [y, x], f"{prefix}.attention.residual"),
                         f"{prefix}.attention.LayerNorm")

    h = graph.linear(x, f"{prefix}.intermediate", s.hidden, s.intermediate)
    h = _gelu(graph, h, f"{prefix}.intermediate.gelu")
    y = graph.linear(h, f"{prefix}.output", s.intermediate, s.hidden)
    return graph.layer_norm(graph.op("Add", [y, x], f"{prefix}.output.residual"), f"{prefix}.output.LayerNorm")


def _gelu(graph: _BertBuilder, x: str, prefix: str) -> str:
    """Exact GELU as torch exports it before opset 20: x * 0.5 * (1 + erf(x / sqrt(2)))."""
    e = graph.op("Erf", [graph.op("Div", [x, graph.constant(f"{prefix}.sqrt2", np.array(math.sqrt(2.0)))],
                                  f"{prefix}.div")], f"{prefix}.erf")
    e = graph.op("Add", [e, graph.constant(f"{prefix}.one", np.array(1.0))], f"{prefix}.add")
    y = graph.op("Mul", [x, e], f"{prefix}.mul")
    return graph.op("Mul", [y, graph.constant(f"{prefix}.half", np.array(0.5))], f"{prefix}.half_mul")


def build_model(seed: int = 0) -> onnx.ModelProto:
    """bert-synth (BERT_SYNTH, opset 17) with weights drawn from numpy's default_rng(seed).

    The same seed gives byte-identical `SerializeToString()` output (for a given numpy
    version, whose Generator streams are what the models.toml pin records).
    """
    return build_encoder(BERT_SYNTH, seed, producer="wasmforge.generators.bert")


def build_minilm(seed: int = 0) -> onnx.ModelProto:
    """minilm-synth: the all-MiniLM-L6 shape (MINILM_L6), same graph, default_rng(seed)."""
    return build_encoder(MINILM_L6, seed, producer="wasmforge.generators.bert")


def build_encoder(shape: BertShape, seed: int, *, producer: str) -> onnx.ModelProto:
    graph = _BertBuilder(np.random.default_rng(seed), shape)
    x = _embeddings(graph)
    mask_bias = _mask_bias(graph)
    for layer in range(shape.layers):
        x = _layer(graph, x, mask_bias, f"encoder.layer.{layer}")
    # The last LayerNorm's output is the graph output: rename it rather than add an Identity.
    graph.nodes[-1].output[0] = OUTPUT_NAME
    return graph.model(
        graph_name=shape.name,
        inputs=[int64_tensor(name, (BATCH, shape.sequence_length)) for name in INPUT_NAMES],
        outputs=[float_tensor(OUTPUT_NAME, (BATCH, shape.sequence_length, shape.hidden))],
        opset=OPSET,
        ir_version=IR_VERSION,
        producer=producer,
        doc=f"BERT-style encoder ({shape.layers} layers, hidden {shape.hidden}, {shape.heads} heads) with "
            f"random weights, numpy default_rng(seed={seed}).",
    )
