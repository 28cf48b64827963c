"""The one exception type that reaches the user as a one-line message."""


class UserError(Exception):
    """A problem the user can fix (bad input, missing prerequisite).

    `tasks.py` prints it as a single `error: ...` line and exits with `exit_code`
    (2 for bad input, 1 otherwise) instead of showing a traceback.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
