"""minilm-synth: bert.py's encoder at the all-MiniLM-L6 sizes, pinned, with the same interface."""

import numpy as np
import onnx

from tests.generators import generator_checks as checks
from wasmforge import reference
from wasmforge.generators import bert
from wasmforge.generators.bert import build_minilm as build_model  # what conftest's fixtures build
from wasmforge.registry import get_model

SHAPE = bert.MINILM_L6


def test_the_shape_is_all_minilm_l6():
    assert (SHAPE.layers, SHAPE.hidden, SHAPE.heads, SHAPE.head_size, SHAPE.intermediate) == (6, 384, 12, 32, 1536)
    assert (SHAPE.sequence_length, SHAPE.vocab_size, SHAPE.max_positions) == (128, 30522, 512)


def test_same_seed_same_bytes(model_bytes):
    checks.assert_seed_decides_bytes(build_model, model_bytes)


def test_bytes_match_the_registry_pin(model_bytes):
    checks.assert_registry_pin("minilm-synth", model_bytes)


def test_checker_passes_at_opset_17(model):
    checks.assert_valid(model, opset=17)


def test_same_graph_as_bert_synth_with_more_layers(model):
    small = checks.operator_counts(bert.build_model(seed=0))
    per_layer = {op: (n - {"Gather": 3, "LayerNormalization": 1, "Add": 2, "Unsqueeze": 1, "Cast": 1,
                           "Where": 1}.get(op, 0)) // bert.LAYERS for op, n in small.items()}
    counts = checks.operator_counts(model)
    assert set(counts) == set(small)
    for op, n in counts.items():
        assert n - SHAPE.layers * per_layer[op] == small[op] - bert.LAYERS * per_layer[op], op


def test_interface_and_parameters(model, session):
    checks.assert_interface_matches_registry(session, "minilm-synth")
    assert [(t.name, t.dtype, list(t.shape)) for t in get_model("minilm-synth").inputs] == [
        ("input_ids", "int64", [1, 128]), ("attention_mask", "int64", [1, 128])]
    h, i = SHAPE.hidden, SHAPE.intermediate
    per_layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * 2 * h
    embeddings = (SHAPE.vocab_size + SHAPE.max_positions + SHAPE.type_vocab_size) * h + 2 * h
    floats = [init for init in model.graph.initializer if init.data_type == onnx.TensorProto.FLOAT and init.dims]
    assert sum(int(np.prod(init.dims)) for init in floats) == embeddings + SHAPE.layers * per_layer == 22_565_376


def test_outputs_are_layer_normed_and_honour_the_mask(session):
    specs = [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in get_model("minilm-synth").inputs]
    ids, mask = reference.seeded_inputs(specs, 0)
    (out,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
    assert out.shape == (1, 128, 384) and np.isfinite(out).all() and 0.5 < out.std() < 2
    rng = np.random.default_rng(5)
    ids = rng.integers(0, SHAPE.vocab_size, (1, 128))
    mask = np.ones((1, 128), np.int64)
    mask[0, 100:] = 0
    base = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    changed = ids.copy()
    changed[0, 100:] = (changed[0, 100:] + 1) % SHAPE.vocab_size
    again = session.run(None, {"input_ids": changed, "attention_mask": mask})[0]
    np.testing.assert_allclose(again[:, :100], base[:, :100], atol=1e-5)
