"""The synthetic BERT encoder: deterministic, valid, runnable, two int64 inputs, mask honoured."""

from tests.generators import generator_checks as checks
import numpy as np
import onnx

from wasmforge import reference
from wasmforge.generators import bert
from wasmforge.generators.bert import build_model
from wasmforge.registry import get_model


def run(session, ids, mask):
    feeds = {"input_ids": np.asarray(ids, np.int64).reshape(1, -1),
             "attention_mask": np.asarray(mask, np.int64).reshape(1, -1)}
    return session.run(None, feeds)[0]


def test_same_seed_same_bytes(model_bytes):
    checks.assert_seed_decides_bytes(build_model, model_bytes)


def test_bytes_match_the_registry_pin(model_bytes):
    checks.assert_registry_pin("bert-synth", model_bytes)


def test_checker_passes_at_opset_17(model):
    checks.assert_valid(model, opset=17, full_check=True)


def test_operator_counts(model):
    counts = checks.operator_counts(model)
    layers = bert.LAYERS
    assert counts == {
        "Gather": 3,  # word, token type, position embeddings
        "LayerNormalization": 1 + 2 * layers,
        "MatMul": 8 * layers,  # Q, K, V, QK^T, PV, attention output, two feed-forward
        "Add": 2 + layers * (6 + 1 + 2 + 1),  # embeddings; 6 biases, mask, 2 residuals, GELU's 1 + erf
        "Reshape": 4 * layers,
        "Transpose": 4 * layers,
        "Softmax": layers,
        "Div": 2 * layers,  # score scaling and GELU's x / sqrt(2)
        "Erf": layers,
        "Mul": 2 * layers,
        "Unsqueeze": 1,
        "Cast": 1,
        "Where": 1,
    }


def test_interface_matches_the_registry(session):
    spec = get_model("bert-synth")
    assert [(i.name, i.type, i.shape) for i in session.get_inputs()] == [
        ("input_ids", "tensor(int64)", [1, 16]), ("attention_mask", "tensor(int64)", [1, 16])]
    assert [(t.name, t.dtype, list(t.shape)) for t in spec.inputs] == [
        ("input_ids", "int64", [1, 16]), ("attention_mask", "int64", [1, 16])]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [(t.name, list(t.shape)) for t in spec.outputs]


def test_parameter_count(model):
    h, i, layers = bert.HIDDEN, bert.INTERMEDIATE, bert.LAYERS
    per_layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * 2 * h
    embeddings = (bert.VOCAB_SIZE + bert.MAX_POSITIONS + bert.TYPE_VOCAB_SIZE) * h + 2 * h
    floats = [init for init in model.graph.initializer if init.data_type == onnx.TensorProto.FLOAT
              and len(init.dims) > 0]
    assert sum(int(np.prod(init.dims)) for init in floats) == embeddings + layers * per_layer


def test_seeded_reference_inputs_are_valid_token_ids(session):
    # The build's reference cases: ints in [0, 10) for both inputs, inside the vocabulary.
    specs = [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in get_model("bert-synth").inputs]
    outputs = []
    for seed in range(3):
        ids, mask = reference.seeded_inputs(specs, seed)
        assert ids.dtype == mask.dtype == np.int64 and ids.max() < bert.VOCAB_SIZE
        outputs.append(run(session, ids, mask))
    for out in outputs:
        assert out.shape == (1, 16, 64) and np.isfinite(out).all()
        assert 0.5 < out.std() < 2 and np.abs(out).max() < 10  # LayerNorm'd: O(1)
        ranked = np.sort(out.ravel())
        assert ranked[-1] - ranked[-2] > 1e-3  # top-1 is not a float-noise tie
    assert len({int(out.argmax()) for out in outputs}) == 3


def test_attention_mask_hides_tokens(session):
    rng = np.random.default_rng(7)
    ids = rng.integers(0, bert.VOCAB_SIZE, 16)
    mask = np.ones(16, np.int64)
    mask[12:] = 0
    base = run(session, ids, mask)
    changed = ids.copy()
    changed[12:] = (changed[12:] + 1) % bert.VOCAB_SIZE
    # Masked tokens change nothing for the visible ones; a visible token changes everything.
    np.testing.assert_allclose(run(session, changed, mask)[:, :12], base[:, :12], atol=1e-5)
    changed[0] = (changed[0] + 1) % bert.VOCAB_SIZE
    assert np.abs(run(session, changed, mask)[:, 1:12] - base[:, 1:12]).max() > 1e-2
    # Any non-zero mask value means "attend", as 1 does.
    np.testing.assert_allclose(run(session, ids, mask * 7), base, atol=1e-6)
