"""The one exception type the CLI turns into a clean one-line message."""


class UserError(Exception):
    """A problem with the user's input (config, paths, data), not a bug.

    The CLI prints ``error: <message>`` and exits with ``exit_code`` instead of
    showing a traceback, so the message must name the file or key at fault.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
