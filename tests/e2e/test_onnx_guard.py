"""Mutated and onnxruntime-refused models through the real `invoke build`."""

from __future__ import annotations

import shutil

import pytest

from tests.cli import assert_one_line_error, dist_listing, invoke
from tests.onnx_models import tiny_cnn
from tests.onnx_mutations import MUTATIONS, mutate
from tests.test_onnx_guard import BASES, save
from wasmforge import artifact
from wasmforge.errors import UserError
from wasmforge.onnx_guard import inspect_onnx
from wasmforge.paths import DIST

pytestmark = pytest.mark.e2e


def sample_mutations(accepted: int = 4, refused: int = 1) -> list[tuple[int, list[str]]]:
    """Fixed seeds: mutated models the guard accepts, each of a different first
    mutation (they reach TVM, onnxruntime and wasmtime), and one it refuses."""
    import random
    import tempfile
    from pathlib import Path

    picked: dict[bool, list] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        for seed in range(1000):
            rng = random.Random(seed)
            names = [rng.choice(sorted(MUTATIONS)) for _ in range(rng.randint(1, 2))]
            path.write_bytes(mutate(BASES["tiny_cnn"], names, seed))
            try:
                inspect_onnx(path)
                ok = True
            except UserError:
                ok = False
            fresh = names[0] not in [n[0] for _, n in picked[ok]]
            if fresh and len(picked[ok]) < (accepted if ok else refused):
                picked[ok].append((seed, names))
    return picked[True] + picked[False]


SAMPLE = sample_mutations()


@pytest.mark.parametrize("seed, names", SAMPLE, ids=[f"{seed}-{'+'.join(names)}" for seed, names in SAMPLE])
def test_mutated_models_through_the_real_build(tmp_path, seed, names):
    """Exit 0 (a usable artifact) or 2 (one error line), never a traceback or a partial dist/."""
    name = f"fuzz-sample-{seed}"
    path = tmp_path / "mutated.onnx"
    path.write_bytes(mutate(BASES["tiny_cnn"], names, seed))
    try:
        code, _, err = invoke("build", "--onnx", str(path), "--name", name)
        assert "Traceback" not in err, err
        assert code in (0, 2), err
        if code == 2:
            assert_one_line_error(code, err, 2, "")
            assert not (DIST / name).exists()
        else:
            artifact.verify_artifact(DIST / name)
        assert not [p for p in DIST.iterdir() if p.name.startswith((f".staging-{name}", f".previous-{name}"))]
    finally:
        for leftover in (DIST / name, DIST / f"{name}.attestations"):
            shutil.rmtree(leftover, ignore_errors=True)


def test_a_model_onnxruntime_refuses_fails_in_one_line(tmp_path):
    """TVM converts opset-6 BatchNormalization, onnxruntime has no kernel for it:
    found after the container, still exit 2 with one line (it was a traceback)."""
    model = tiny_cnn()
    model.opset_import[0].version = 6
    path = save(model, tmp_path / "opset6.onnx")
    inspect_onnx(path)  # the guard has no reason to refuse it
    before = set(dist_listing())
    code, _, err = invoke("build", "--onnx", str(path), "--name", "fuzz-opset6")
    assert_one_line_error(code, err, 2, "onnxruntime cannot run opset6.onnx: [ONNXRuntimeError]")
    assert not (DIST / "fuzz-opset6").exists()
    assert not [n for n in set(dist_listing()) - before if "fuzz-opset6" in n]
