"""A wrapper for secret values that never shows them by accident.

``repr``, ``str`` and f-strings of a :class:`Secret` print a mask; only
:meth:`Secret.reveal` gives the value, so every place that hands a secret to
something else is easy to find with grep, and a log line or error message
cannot carry one by accident.
"""

from __future__ import annotations

from typing import Final, NoReturn

_MASK: Final = "***"


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({_MASK!r})"

    def __str__(self) -> str:
        return _MASK

    def __format__(self, format_spec: str) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> NoReturn:
        # Pickling would write the value wherever the pickle goes.
        raise TypeError("Secret values cannot be pickled")
