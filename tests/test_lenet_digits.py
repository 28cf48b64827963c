"""The committed lenet-digits model: pinned bytes, recorded metrics, reproducible training."""

import importlib.util
import json

import numpy as np
import onnx
import onnxruntime
import pytest

from wasmforge.hashing import sha256_file
from wasmforge.paths import MODELS_DIR
from wasmforge.registry import get_model

pytest.importorskip("sklearn")  # the digits data ships with scikit-learn

MODEL_DIR = MODELS_DIR / "lenet-digits"
MODEL_FILE = MODEL_DIR / "lenet-digits.onnx"
METRICS = json.loads((MODEL_DIR / "metrics.json").read_text())


@pytest.fixture(scope="module")
def train_script():
    """models/lenet-digits/train.py imported as a module (it is not a package)."""
    spec = importlib.util.spec_from_file_location("lenet_digits_train", MODEL_DIR / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_model_matches_its_pins():
    spec = get_model("lenet-digits")
    actual = sha256_file(MODEL_FILE)
    assert actual == spec.sha256 == METRICS["onnx_sha256"]
    assert MODEL_FILE.stat().st_size == spec.size == METRICS["onnx_bytes"]


def test_model_interface_matches_the_registry():
    spec = get_model("lenet-digits")
    model = onnx.load(MODEL_FILE)
    onnx.checker.check_model(model)

    def described(values):
        return [(v.name, [d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values]

    assert described(model.graph.input) == [(t.name, list(t.shape)) for t in spec.inputs]
    assert described(model.graph.output) == [(t.name, list(t.shape)) for t in spec.outputs]
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 13)]


def test_heldout_accuracy_matches_metrics(train_script):
    _, _, x_heldout, y_heldout = train_script.load_split()
    assert len(y_heldout) == METRICS["heldout_samples"]
    session = onnxruntime.InferenceSession(str(MODEL_FILE), providers=["CPUExecutionProvider"])
    predictions = np.array([session.run(["logits"], {"input": image[None]})[0].argmax() for image in x_heldout])
    correct = int((predictions == y_heldout).sum())
    assert correct == METRICS["heldout_correct"]
    assert correct / len(y_heldout) == METRICS["heldout_accuracy"] >= 0.95
    assert get_model("lenet-digits").accuracy.value == METRICS["heldout_accuracy"]


def test_training_reproduces_the_committed_bytes(train_script, tmp_path, capsys):
    # A few seconds of CPU. A failure here on another machine means its numpy/BLAS round
    # differently: the committed model is still valid, but not reproducible there.
    assert train_script.main(["--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "lenet-digits.onnx").read_bytes() == MODEL_FILE.read_bytes()
    assert json.loads((tmp_path / "metrics.json").read_text()) == METRICS
