"""The one exception type the CLI turns into a clean one-line message."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem with the user's input (config, paths, data), not a bug.

    The CLI prints ``error: <message>`` and exits with ``exit_code`` instead of
    showing a traceback, so the message must name the file or key at fault.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def require_directory(path: str | Path, what: str = "directory") -> None:
    """A path that does not exist and a file where a folder belongs are different mistakes: say which."""
    path = Path(path)
    if path.is_dir():
        return
    if path.exists():
        raise UserError(f"{path}: is a file, but a {what} is expected here")
    raise UserError(f"{path}: no such {what}")
