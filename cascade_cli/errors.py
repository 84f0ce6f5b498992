"""The one exception type the CLI turns into a clean one-line message."""

from __future__ import annotations

from pathlib import Path

import yaml


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


def yaml_error(path: str | Path, exc: yaml.YAMLError) -> UserError:
    """One line naming the file, the line and column, and what the parser expected."""
    mark = getattr(exc, "problem_mark", None)
    where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return UserError(f"{path}{where}: not valid YAML ({what}" + (f", {context}" if context else "") + ")")


def read_yaml_mapping(path: Path, expected: str) -> dict:
    """A YAML file that must hold a mapping (an empty file is an empty one); `expected` says what
    the mapping is, for the message when it is something else."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise yaml_error(path, exc) from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    if data is not None and not isinstance(data, dict):
        raise UserError(f"{path}: expected {expected}, got {type(data).__name__}")
    return data or {}
