"""User-facing errors: one clear line, exit status 2 from the CLI, no traceback unless --debug."""

from __future__ import annotations

from pathlib import Path


class CftrecError(Exception):
    """An error caused by the user's input or environment, reported as one line."""


class InputError(CftrecError):
    """Bad input data: names the file, the record (line) when known, and the problem."""

    def __init__(self, path: str | Path, problem: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type when it has none): what a one-line
    error shows of a library's exception."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
