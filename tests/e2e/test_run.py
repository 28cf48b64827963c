"""`invoke run` I/O: one .npy per tensor, or one .npz by name; multi-input int64 models."""

from __future__ import annotations

import numpy as np
import pytest

from wasmforge import reference
from wasmforge.errors import UserError
from wasmforge.registry import get_model
from wasmforge.fetch import model_path
from wasmforge.run import run_artifact

pytestmark = pytest.mark.e2e


def bert_inputs():
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 1000, (1, 16)).astype(np.int64)
    mask = np.ones((1, 16), np.int64)
    mask[0, 12:] = 0
    return ids, mask


def test_npz_in_npz_out_for_a_two_input_int64_model(built_artifact, tmp_path):
    directory = built_artifact("bert-synth")
    ids, mask = bert_inputs()
    np.savez(tmp_path / "in.npz", input_ids=ids, attention_mask=mask)
    run_artifact("bert-synth", [tmp_path / "in.npz"], [tmp_path / "out.npz"],
                 dist=directory.parent)
    with np.load(tmp_path / "out.npz") as out:
        got = out["last_hidden_state"]
    (want,) = reference.run_reference(reference.session(model_path(get_model("bert-synth"))),
                                      [ids, mask])
    assert got.shape == want.shape == (1, 16, 64)
    assert np.max(np.abs(got - want)) <= 1e-3 * np.max(np.abs(want))


def test_one_npy_per_input_gives_the_same_answer(built_artifact, tmp_path):
    directory = built_artifact("bert-synth")
    ids, mask = bert_inputs()
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "mask.npy", mask)
    np.savez(tmp_path / "in.npz", input_ids=ids, attention_mask=mask)
    run_artifact("bert-synth", [tmp_path / "ids.npy", tmp_path / "mask.npy"], [tmp_path / "a.npy"],
                 dist=directory.parent)
    run_artifact("bert-synth", [tmp_path / "in.npz"], [tmp_path / "b.npy"], dist=directory.parent)
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_npz_missing_an_input_is_named(built_artifact, tmp_path):
    directory = built_artifact("bert-synth")
    ids, _ = bert_inputs()
    np.savez(tmp_path / "in.npz", input_ids=ids)
    with pytest.raises(UserError, match="no array named attention_mask"):
        run_artifact("bert-synth", [tmp_path / "in.npz"], [tmp_path / "out.npz"],
                     dist=directory.parent)
    assert not (tmp_path / "out.npz").exists()


def test_wrong_number_of_inputs(built_artifact, tmp_path):
    directory = built_artifact("bert-synth")
    ids, _ = bert_inputs()
    np.save(tmp_path / "ids.npy", ids)
    with pytest.raises(UserError, match="takes 2 input"):
        run_artifact("bert-synth", [tmp_path / "ids.npy"], [tmp_path / "out.npy"],
                     dist=directory.parent)


# --- the Python API on the real lenet-digits ---------------------------------------------


def test_python_api_classifies_digits(built_artifact, tmp_path):
    import shutil

    from sklearn.datasets import load_digits

    import wasmforge

    directory = built_artifact("lenet-digits")
    digits = load_digits()
    model = wasmforge.load(directory)
    assert [(t.name, t.shape) for t in model.inputs] == [("input", (1, 1, 8, 8))]
    right = 0
    for image, label in zip(digits.images[:30], digits.target[:30]):
        x = (image / 16).astype(np.float32).reshape(1, 1, 8, 8)
        right += int(model.run({"input": x})["logits"].argmax()) == label
    assert right >= 28
    model.close()
    copy = shutil.copytree(directory, tmp_path / "lenet-digits")
    data = bytearray((copy / "lenet-digits.wasm").read_bytes())
    data[len(data) // 2] ^= 1
    (copy / "lenet-digits.wasm").write_bytes(bytes(data))
    with pytest.raises(wasmforge.Error, match=r"^lenet-digits\.wasm does not match its sha256 in SHA256SUMS$"):
        wasmforge.load(copy)
