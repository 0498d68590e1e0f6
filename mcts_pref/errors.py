"""The project's exception types, apart from any I/O so pure modules can raise them.

The CLI (``cli.main``) prints an :class:`MctsPrefError` as one line on stderr
and exits with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class MctsPrefError(Exception):
    """An error the CLI reports as one line on stderr with exit code 2."""


class RecordError(MctsPrefError):
    """A bad record or file, reported as ``path:line: msg`` (``path: msg`` when no line applies)."""

    def __init__(self, path: str | Path, line: int | None, msg: str):
        self.path, self.line, self.msg = str(path), line, msg
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {msg}")
