"""How the command line's progress output looks: the one place its rich
`Console`s are made.

On a terminal, rich as usual. Without one (a pipe, a CI log, a file), lines
must stay whole and plain: rich would otherwise wrap them at 80 columns and a
log line would be split mid-path. So every console prints with `soft_wrap`
(a line is never broken by rich), and without a terminal it is given a wide
width for the few things that are laid out to it (tables) unless `COLUMNS`
says otherwise. No colour codes go to a pipe (rich's own rule).
"""

from __future__ import annotations

import os

from rich.console import Console

# Columns for layouts (tables, rules) when the output is not a terminal.
WIDTH_WITHOUT_TERMINAL = 200


def make_console(*, stderr: bool = True, file=None, **settings) -> Console:
    console = Console(stderr=stderr, file=file, soft_wrap=True, **settings)
    if not console.is_terminal and "width" not in settings and not os.environ.get("COLUMNS"):
        console.width = WIDTH_WITHOUT_TERMINAL
    return console
