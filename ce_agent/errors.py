"""User-facing errors: a location (file, line, column) and one line of text, gathered in one pass."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Location:
    """Where in which file; line and column count from 1 (0 when unknown)."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.col or 1}"
        return self.file


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the user's input, printed as `FILE:LINE:COL: message`."""

    location: Location | None
    message: str
    warning: bool = False

    def __str__(self) -> str:
        prefix = f"{self.location}: " if self.location else ""
        return f"{prefix}{'warning: ' if self.warning else ''}{self.message}"


class UserError(Exception):
    """An error the user can fix (missing file, bad YAML, unknown plugin): exit 2, no traceback."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        super().__init__(message)
        self.problem = Problem(location, message)

    def __str__(self) -> str:
        return str(self.problem)


@dataclass
class Problems:
    """Every problem found while loading, so `validate` can report them all at once."""

    items: list[Problem] = field(default_factory=list)

    def add(self, location: Location | None, message: str) -> None:
        self.items.append(Problem(location, message))

    def warn(self, location: Location | None, message: str) -> None:
        self.items.append(Problem(location, message, warning=True))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.items if not p.warning]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.items if p.warning]

    def __bool__(self) -> bool:
        return bool(self.errors)

    def lines(self, warnings: bool) -> list[str]:
        """Errors (or warnings) once each, in file and line order, as printed."""
        chosen = {str(p): p for p in self.items if p.warning == warnings}
        return sorted(chosen, key=lambda text: _order(chosen[text].location))


def _order(location: Location | None) -> tuple[str, int, int]:
    return ("", 0, 0) if location is None else (location.file, location.line, location.col)


class FaultError(Exception):
    """Something around the agent failed, not the user's input (the state database, the disk): the
    command says so in one line and exits 3 (UNKNOWN: it could not tell)."""


class ConfigError(Exception):
    """The configuration cannot be used; `lines` says why, one problem per line, the last a count."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines[0] if lines else "invalid configuration")
        self.lines = lines
