"""The exceptions that reach the user as a one-line message (standard library only:
the CLI imports this module before anything heavy, and the smoke image too)."""


class WasmforgeError(Exception):
    """Every error wasmforge raises on purpose: its message is one line meant for the user
    (`wasmforge.Error` in the Python API)."""


class UserError(WasmforgeError):
    """A problem the user can fix (bad input, missing prerequisite).

    `wasmforge.cli` prints it as a single `error: ...` line and exits with `exit_code`
    (2 for bad input, 1 otherwise) instead of showing a traceback.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


class WasmRunError(WasmforgeError):
    """A module run by `runner.WasmModel` refused its input (exit 2), failed, trapped or hit a limit."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
