"""Tuning databases: found, hashed, applied by the build, reproducible."""

from __future__ import annotations


import pytest

from wasmforge import tuning
from wasmforge.errors import UserError


def make_database(root, name="m"):
    directory = tuning.database_dir(name, root)
    directory.mkdir(parents=True)
    for file in tuning.DATABASE_FILES:
        (directory / file).write_text(f"{file}\n")
    return directory


def test_no_database_is_fine(tmp_path):
    assert tuning.find_database("m", tmp_path) is None


def test_incomplete_database_is_refused(tmp_path):
    directory = make_database(tmp_path)
    (directory / tuning.DATABASE_FILES[0]).unlink()
    with pytest.raises(UserError, match="incomplete tuning database"):
        tuning.find_database("m", tmp_path)


def test_digest_covers_the_database_files_only(tmp_path):
    directory = make_database(tmp_path)
    digest = tuning.database_digest(directory)
    (directory / "logs").mkdir()
    (directory / "logs" / "run.log").write_text("times differ from run to run")
    assert tuning.database_digest(directory) == digest
    (directory / tuning.DATABASE_FILES[1]).write_text("another record\n")
    assert tuning.database_digest(directory) != digest


def test_bad_trials_are_refused():
    with pytest.raises(UserError, match="--trials"):
        tuning.tune("lenet-digits", None, None, trials=0, max_tasks=0)


def test_unknown_measure_is_refused():
    with pytest.raises(UserError, match="--measure must be wasm or native"):
        tuning.tune("lenet-digits", None, None, trials=1, max_tasks=0, measure="proxy")


def test_unknown_space_is_refused():
    with pytest.raises(UserError, match="--space must be hand or generic"):
        tuning.tune("lenet-digits", None, None, trials=1, max_tasks=0, space="random")


def test_the_hand_space_is_not_measured_natively():
    with pytest.raises(UserError, match="--space hand is measured as wasm only"):
        tuning.tune("lenet-digits", None, None, trials=1, max_tasks=0, measure="native")
