"""Types shared by every plugin family."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Availability:
    """Whether a plugin can work on this host right now.

    ``detail`` says what was checked (e.g. ``"Docker 28.2.2"``); when ``ok`` is
    false, ``hint`` says what the user can do about it.
    """

    ok: bool
    detail: str = ""
    hint: str | None = None

    @classmethod
    def yes(cls, detail: str = "") -> Availability:
        return cls(True, detail)

    @classmethod
    def no(cls, detail: str, hint: str | None = None) -> Availability:
        return cls(False, detail, hint)


@dataclass(frozen=True)
class HostCheck:
    """One line of ``bot-bottle doctor``: a prerequisite a plugin checked on
    this host (its engine, an image it builds from), and what to do about it."""

    level: Literal["OK", "WARN", "FAIL"]
    what: str
    detail: str
    hint: str | None = None


class PluginComponent:
    """Base of every plugin contract: a name and an availability check."""

    #: The name users select the component by (manifest, CLI flags).
    name: str = ""
    #: One line for ``plugins list`` and ``doctor``.
    description: str = ""

    def is_available(self) -> Availability:
        """Probe whether the component can run here.

        Must be cheap, must not change anything, and must not raise: report a
        problem as ``Availability.no(...)``. The default says yes.
        """
        return Availability.yes()
