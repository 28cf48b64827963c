"""wasmforge.limits: the bounds of resources/limits.toml and their overrides."""

from __future__ import annotations

import pytest

from wasmforge.errors import UserError
from wasmforge.limits import BuilderLimits, builder_limits, guard_limits


def test_the_pinned_bounds():
    guard = guard_limits()
    assert (guard.max_nodes, guard.max_graph_depth, guard.max_graph_entries) == (100_000, 16, 1_000_000)
    assert builder_limits({}) == BuilderLimits(memory="6g", cpus=2.0, pids=1024, wall_seconds=1800)


def test_environment_overrides():
    limits = builder_limits({"WASMFORGE_BUILDER_MEMORY": "8G", "WASMFORGE_BUILDER_CPUS": "1.5",
                             "WASMFORGE_BUILDER_PIDS": "200", "WASMFORGE_BUILDER_WALL_SECONDS": "600"})
    assert limits == BuilderLimits(memory="8g", cpus=1.5, pids=200, wall_seconds=600)


@pytest.mark.parametrize("name, value, fragment", [
    ("MEMORY", "lots", "give a size such as 6g"),
    ("MEMORY", "-1g", "give a size such as 6g"),
    ("PIDS", "many", "is not a number"),
    ("CPUS", "0", "must be positive"),
    ("WALL_SECONDS", "-5", "must be positive"),
])
def test_bad_overrides_are_one_line(name, value, fragment):
    with pytest.raises(UserError, match=fragment):
        builder_limits({f"WASMFORGE_BUILDER_{name}": value})
