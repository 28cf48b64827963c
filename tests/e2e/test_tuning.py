"""`invoke tune` then `invoke build` with the database, twice: the same bytes."""

from __future__ import annotations

import json

import pytest

from wasmforge import artifact, tuning

pytestmark = pytest.mark.e2e


def test_tuned_build_applies_the_database_and_is_reproducible(tmp_path):
    from wasmforge.build import build

    root = tmp_path / "tuning"
    # min_gain=-100: keep the record even where two trials do not beat the hand schedule
    # (this test is about applying a database, not about winning).
    database = tuning.tune("lenet-digits", None, None, trials=2, max_tasks=1, min_gain=-100.0, root=root)
    report = json.loads((database / "report.json").read_text())
    assert report["measure"] == "wasm" and report["tasks"][0]["tuned_ms"] > 0
    assert tuning.find_database("lenet-digits", root) == database
    sums = []
    for run in ("first", "second"):
        final = build(model="lenet-digits", dist=tmp_path / run, tuning_root=root)
        manifest = artifact.load_manifest(final)
        assert manifest.tuning == artifact.TuningRecord("tuning/lenet-digits/wasm32-simd128",
                                                        tuning.database_digest(database))
        sums.append((final / "SHA256SUMS").read_bytes())
    assert sums[0] == sums[1]
