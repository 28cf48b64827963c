"""The bounds in `resources/limits.toml`: what the ONNX guard accepts and what a
builder container may use. Builder limits can be overridden per run by
environment variables (`WASMFORGE_BUILDER_MEMORY`, `_CPUS`, `_PIDS`,
`_WALL_SECONDS`). Standard library only."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, fields
from functools import cache

from .errors import UserError
from .paths import RESOURCES

LIMITS_FILE = RESOURCES / "limits.toml"
ENV_PREFIX = "WASMFORGE_BUILDER_"
_MEMORY = re.compile(r"[1-9][0-9]*[kmg]?")


@dataclass(frozen=True)
class GuardLimits:
    max_nodes: int
    max_graph_depth: int
    max_graph_entries: int


@dataclass(frozen=True)
class BuilderLimits:
    memory: str  # docker's notation: 6g, 512m
    cpus: float
    pids: int
    wall_seconds: float

    def __post_init__(self):
        if not _MEMORY.fullmatch(self.memory):
            raise UserError(f"builder memory limit {self.memory!r}: give a size such as 6g or 4096m")
        if not (self.cpus > 0 and self.pids > 0 and self.wall_seconds > 0):
            raise UserError("builder cpus, pids and wall_seconds must be positive")


@cache
def _table(name: str) -> dict:
    with LIMITS_FILE.open("rb") as handle:
        return tomllib.load(handle)[name]


def guard_limits() -> GuardLimits:
    return GuardLimits(**_table("guard"))


def builder_limits(environ=None) -> BuilderLimits:
    """The builder's limits: limits.toml, then `WASMFORGE_BUILDER_<NAME>` variables."""
    environ = os.environ if environ is None else environ
    values = dict(_table("builder"))
    for field in fields(BuilderLimits):
        text = environ.get(ENV_PREFIX + field.name.upper())
        if text is None:
            continue
        try:
            values[field.name] = {"memory": str, "pids": int}.get(field.name, float)(text.strip().lower())
        except ValueError:
            raise UserError(f"{ENV_PREFIX}{field.name.upper()}={text!r} is not a number") from None
    values["memory"] = str(values["memory"]).lower()
    return BuilderLimits(**values)
