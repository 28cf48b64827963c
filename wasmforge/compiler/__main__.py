"""`python -m wasmforge.compiler build REQUEST_JSON` | `tune ARGS...` (inside the builder image)."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "build":
        from .module import run
        from .request import BuildRequest

        return run(BuildRequest.from_json(argv[1]))
    if argv and argv[0] == "tune":
        from .tune import main as tune

        return tune(argv[1:])
    print("usage: python -m wasmforge.compiler build REQUEST_JSON | tune --onnx M --out DIR ...",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
