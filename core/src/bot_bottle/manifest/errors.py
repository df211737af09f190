"""The manifest's one error type: every problem names a file and a line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bot_bottle.errors import BotBottleError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest file.

    ``where`` is the dotted key path (``egress.routes[0].host``), empty for
    the file as a whole. ``message`` never contains an env value: values may
    be secrets, and errors are printed and logged where secrets must never be.
    """

    file: Path
    line: int
    message: str
    where: str = ""

    def __str__(self) -> str:
        at = f"{self.where}: " if self.where else ""
        return f"{self.file}:{self.line}: {at}{self.message}"


class ManifestError(BotBottleError):
    """A bottle or agent file is missing, unreadable or invalid.

    Carries every problem found (``problems``, at least one); ``file`` and
    ``line`` are those of the first, so callers that want one location
    have it.
    """

    def __init__(self, problems: Sequence[Problem], *, hint: str | None = None) -> None:
        if not problems:
            raise ValueError("ManifestError needs at least one problem")
        self.problems: tuple[Problem, ...] = tuple(problems)
        if len(self.problems) == 1:
            message = str(self.problems[0])
        else:
            message = f"{len(self.problems)} problems:\n" + "\n".join(
                f"  {p}" for p in self.problems
            )
        super().__init__(message, hint=hint)

    @classmethod
    def at(
        cls, file: Path, line: int, message: str, *, where: str = "", hint: str | None = None
    ) -> ManifestError:
        return cls([Problem(file, line, message, where)], hint=hint)

    @property
    def file(self) -> Path:
        return self.problems[0].file

    @property
    def line(self) -> int:
        return self.problems[0].line
