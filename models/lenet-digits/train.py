"""Train the `lenet-digits` model and export it to ONNX, reproducibly.

A small LeNet-style CNN for scikit-learn's bundled 8x8 digits (no download needed),
trained in plain numpy so the only training dependency is scikit-learn for the data:

    Conv(1->8, 3x3, pad 1) + Relu + MaxPool 2x2      8x8  -> 8x4x4
    Conv(8->16, 3x3, pad 1) + Relu + MaxPool 2x2     4x4  -> 16x2x2
    Flatten -> Gemm(64->32) + Relu -> Gemm(32->10)   logits

Rerun with `python models/lenet-digits/train.py`: everything is seeded, so the same
numpy/onnx/BLAS produce the same `lenet-digits.onnx` bytes. It writes the model and
`metrics.json` (accuracies and the model's sha256, which models.toml must pin).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
MODEL_FILE = "lenet-digits.onnx"
METRICS_FILE = "metrics.json"

# The digits pixels are integers 0..16; the model sees pixel / 16 in [0, 1].
PIXEL_SCALE = 16.0
IMAGE_SIZE = 8
NUM_CLASSES = 10
HELDOUT_FRACTION = 0.25
SPLIT_SEED = 0

CONV1_CHANNELS = 8
CONV2_CHANNELS = 16
HIDDEN_UNITS = 32
KERNEL = 3
FLAT_FEATURES = CONV2_CHANNELS * (IMAGE_SIZE // 4) ** 2

TRAIN_SEED = 0
EPOCHS = 40
BATCH_SIZE = 32
LEARNING_RATE = 3e-3
ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8

# Same pins as wasmforge's generated models: bytes independent of the onnx version.
OPSET = 13
IR_VERSION = 8
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


# --- data ---------------------------------------------------------------------------


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_heldout, y_heldout); x is float32 [N, 1, 8, 8] scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / PIXEL_SCALE).astype(np.float32)[:, None, :, :]
    x_train, x_heldout, y_train, y_heldout = train_test_split(
        images, digits.target, test_size=HELDOUT_FRACTION, stratify=digits.target, random_state=SPLIT_SEED
    )
    return x_train, y_train, x_heldout, y_heldout


# --- layers (forward and backward, float64) ---------------------------------------


def _im2col(x: np.ndarray) -> np.ndarray:
    """[N, C, H, W] -> [N, C*9, H*W] for a 3x3 'same' convolution, rows ordered (c, kh, kw)."""
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = [padded[:, :, i:i + h, j:j + w] for i in range(KERNEL) for j in range(KERNEL)]
    return np.stack(patches, axis=2).reshape(n, c * KERNEL * KERNEL, h * w)


def _col2im(cols: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Adjoint of _im2col: scatter-add patch gradients back onto the input."""
    n, c, h, w = shape
    cols = cols.reshape(n, c, KERNEL * KERNEL, h, w)
    padded = np.zeros((n, c, h + 2, w + 2))
    for index, (i, j) in enumerate((i, j) for i in range(KERNEL) for j in range(KERNEL)):
        padded[:, :, i:i + h, j:j + w] += cols[:, :, index]
    return padded[:, :, 1:-1, 1:-1]


def conv_forward(x, weight, bias):
    n, _, h, w = x.shape
    cols = _im2col(x)
    out = np.matmul(weight.reshape(weight.shape[0], -1), cols) + bias[None, :, None]
    return out.reshape(n, weight.shape[0], h, w), cols


def conv_backward(grad_out, cols, weight, input_shape):
    n, out_ch = grad_out.shape[:2]
    grad2d = grad_out.reshape(n, out_ch, -1)
    grad_weight = np.einsum("nop,nkp->ok", grad2d, cols).reshape(weight.shape)
    grad_bias = grad2d.sum(axis=(0, 2))
    grad_cols = np.matmul(weight.reshape(out_ch, -1).T, grad2d)
    return _col2im(grad_cols, input_shape), grad_weight, grad_bias


def pool_forward(x):
    """2x2/2 max pooling; also returns the one-hot winner of each window for backward."""
    n, c, h, w = x.shape
    windows = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    winner = np.argmax(windows, axis=-1)
    return np.take_along_axis(windows, winner[..., None], axis=-1)[..., 0], winner


def pool_backward(grad_out, winner):
    n, c, h2, w2 = grad_out.shape
    windows = np.zeros((n, c, h2, w2, 4))
    np.put_along_axis(windows, winner[..., None], grad_out[..., None], axis=-1)
    return windows.reshape(n, c, h2, w2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h2 * 2, w2 * 2)


# --- the network --------------------------------------------------------------------


def init_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    def he(shape, fan_in):
        return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)

    return {
        "conv1.weight": he((CONV1_CHANNELS, 1, KERNEL, KERNEL), KERNEL * KERNEL),
        "conv1.bias": np.zeros(CONV1_CHANNELS),
        "conv2.weight": he((CONV2_CHANNELS, CONV1_CHANNELS, KERNEL, KERNEL), CONV1_CHANNELS * KERNEL * KERNEL),
        "conv2.bias": np.zeros(CONV2_CHANNELS),
        "fc1.weight": he((HIDDEN_UNITS, FLAT_FEATURES), FLAT_FEATURES),
        "fc1.bias": np.zeros(HIDDEN_UNITS),
        "fc2.weight": he((NUM_CLASSES, HIDDEN_UNITS), HIDDEN_UNITS) / np.sqrt(2.0),
        "fc2.bias": np.zeros(NUM_CLASSES),
    }


def forward(params, x, keep=False):
    """Logits for x [N, 1, 8, 8]; with keep=True also the activations backward needs."""
    conv1, cols1 = conv_forward(x, params["conv1.weight"], params["conv1.bias"])
    act1 = np.maximum(conv1, 0.0)
    pool1, win1 = pool_forward(act1)
    conv2, cols2 = conv_forward(pool1, params["conv2.weight"], params["conv2.bias"])
    act2 = np.maximum(conv2, 0.0)
    pool2, win2 = pool_forward(act2)
    flat = pool2.reshape(len(x), -1)  # (c, h, w) order, as ONNX Flatten does
    hidden = np.maximum(flat @ params["fc1.weight"].T + params["fc1.bias"], 0.0)
    logits = hidden @ params["fc2.weight"].T + params["fc2.bias"]
    if not keep:
        return logits
    return logits, dict(x=x, cols1=cols1, conv1=conv1, win1=win1, pool1=pool1,
                        cols2=cols2, conv2=conv2, win2=win2, flat=flat, hidden=hidden)


def loss_and_grads(params, x, y):
    logits, saved = forward(params, x, keep=True)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    n = len(y)
    loss = -np.log(probs[np.arange(n), y]).mean()

    grads = {}
    d_logits = probs
    d_logits[np.arange(n), y] -= 1.0
    d_logits /= n
    grads["fc2.weight"] = d_logits.T @ saved["hidden"]
    grads["fc2.bias"] = d_logits.sum(axis=0)
    d_hidden = (d_logits @ params["fc2.weight"]) * (saved["hidden"] > 0)
    grads["fc1.weight"] = d_hidden.T @ saved["flat"]
    grads["fc1.bias"] = d_hidden.sum(axis=0)
    d_pool2 = (d_hidden @ params["fc1.weight"]).reshape(saved["conv2"].shape[0], CONV2_CHANNELS, 2, 2)
    d_conv2 = pool_backward(d_pool2, saved["win2"]) * (saved["conv2"] > 0)
    d_pool1, grads["conv2.weight"], grads["conv2.bias"] = conv_backward(
        d_conv2, saved["cols2"], params["conv2.weight"], saved["pool1"].shape)
    d_conv1 = pool_backward(d_pool1, saved["win1"]) * (saved["conv1"] > 0)
    _, grads["conv1.weight"], grads["conv1.bias"] = conv_backward(
        d_conv1, saved["cols1"], params["conv1.weight"], saved["x"].shape)
    return loss, grads


def train(x_train: np.ndarray, y_train: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(TRAIN_SEED)
    params = init_params(rng)
    moment1 = {k: np.zeros_like(v) for k, v in params.items()}
    moment2 = {k: np.zeros_like(v) for k, v in params.items()}
    x = x_train.astype(np.float64)
    step = 0
    for epoch in range(1, EPOCHS + 1):
        order = rng.permutation(len(x))
        losses = []
        for start in range(0, len(order), BATCH_SIZE):
            batch = order[start:start + BATCH_SIZE]
            loss, grads = loss_and_grads(params, x[batch], y_train[batch])
            losses.append(loss)
            step += 1
            beta1, beta2 = ADAM_BETAS
            for key, grad in grads.items():
                moment1[key] = beta1 * moment1[key] + (1 - beta1) * grad
                moment2[key] = beta2 * moment2[key] + (1 - beta2) * grad * grad
                m_hat = moment1[key] / (1 - beta1 ** step)
                v_hat = moment2[key] / (1 - beta2 ** step)
                params[key] -= LEARNING_RATE * m_hat / (np.sqrt(v_hat) + ADAM_EPSILON)
        if epoch % 10 == 0 or epoch == 1:
            print(f"epoch {epoch:3d}  loss {np.mean(losses):.4f}", file=sys.stderr)
    # The shipped model is float32; evaluate exactly what ships.
    return {k: v.astype(np.float32) for k, v in params.items()}


# --- export and verification ----------------------------------------------------


def export_onnx(params: dict[str, np.ndarray]) -> onnx.ModelProto:
    def node(op, inputs, output, **attrs):
        return helper.make_node(op, inputs, [output], name=output, **attrs)

    conv = dict(kernel_shape=[KERNEL, KERNEL], pads=[1, 1, 1, 1], strides=[1, 1])
    pool = dict(kernel_shape=[2, 2], strides=[2, 2])
    nodes = [
        node("Conv", [INPUT_NAME, "conv1.weight", "conv1.bias"], "conv1", **conv),
        node("Relu", ["conv1"], "relu1"),
        node("MaxPool", ["relu1"], "pool1", **pool),
        node("Conv", ["pool1", "conv2.weight", "conv2.bias"], "conv2", **conv),
        node("Relu", ["conv2"], "relu2"),
        node("MaxPool", ["relu2"], "pool2", **pool),
        node("Flatten", ["pool2"], "flatten", axis=1),
        node("Gemm", ["flatten", "fc1.weight", "fc1.bias"], "fc1", transB=1),
        node("Relu", ["fc1"], "relu3"),
        node("Gemm", ["relu3", "fc2.weight", "fc2.bias"], OUTPUT_NAME, transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "lenet_digits",
        inputs=[helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 1, IMAGE_SIZE, IMAGE_SIZE])],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, NUM_CLASSES])],
        initializer=[numpy_helper.from_array(value, name) for name, value in params.items()],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="wasmforge models/lenet-digits/train.py",
        doc_string="LeNet-style CNN for sklearn load_digits; input is pixel / 16, float32 [1,1,8,8].",
    )
    onnx.checker.check_model(model)
    return model


def onnxruntime_predictions(model_bytes: bytes, images: np.ndarray) -> np.ndarray:
    """Logits for each image, run one at a time because the model's batch is fixed at 1."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: image[None]})[0] for image in images])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=HERE, help="where to write the model and metrics")
    args = parser.parse_args(argv)

    x_train, y_train, x_heldout, y_heldout = load_split()
    params = train(x_train, y_train)
    model_bytes = export_onnx(params).SerializeToString()

    numpy_logits = forward({k: v.astype(np.float64) for k, v in params.items()}, x_heldout.astype(np.float64))
    ort_logits = onnxruntime_predictions(model_bytes, x_heldout)
    # The export is only trusted if onnxruntime computes what numpy trained.
    if not np.array_equal(numpy_logits.argmax(1), ort_logits.argmax(1)):
        raise SystemExit("onnxruntime predictions differ from the numpy model's; export is wrong")
    max_logit_difference = float(np.abs(numpy_logits - ort_logits).max())
    if max_logit_difference > 1e-3:
        raise SystemExit(f"onnxruntime logits differ from numpy by {max_logit_difference}")

    train_correct = int((forward(params, x_train.astype(np.float64)).argmax(1) == y_train).sum())
    heldout_correct = int((ort_logits.argmax(1) == y_heldout).sum())
    metrics = {
        "dataset": "sklearn.datasets.load_digits: 1797 8x8 images of digits 0-9 (UCI optdigits test set)",
        "split": {"heldout_fraction": HELDOUT_FRACTION, "stratified": True, "random_state": SPLIT_SEED},
        "train_samples": len(y_train),
        "heldout_samples": len(y_heldout),
        "train_accuracy": train_correct / len(y_train),
        "heldout_accuracy": heldout_correct / len(y_heldout),
        "heldout_correct": heldout_correct,
        "training": {
            "seed": TRAIN_SEED, "epochs": EPOCHS, "batch_size": BATCH_SIZE,
            "optimizer": "adam", "learning_rate": LEARNING_RATE,
        },
        "onnx_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "onnx_bytes": len(model_bytes),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / MODEL_FILE).write_bytes(model_bytes)
    (args.out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"held-out accuracy {metrics['heldout_accuracy']:.4f}, train {metrics['train_accuracy']:.4f}")
    print(f"{MODEL_FILE} sha256 {metrics['onnx_sha256']} ({len(model_bytes)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
