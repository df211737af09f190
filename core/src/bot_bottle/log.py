"""Logging: one configuration function, structlog everywhere.

The CLI logs readable lines to stderr; long-running daemons (egress,
git-gate, supervise, init) log JSON lines. Diagnostics go through a logger,
never ``print``; ``print`` is only for a command's actual output.

structlog is imported on first use so that ``bot-bottle --help`` stays fast.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, Literal, TextIO

if TYPE_CHECKING:
    from structlog.typing import EventDict, WrappedLogger

Mode = Literal["console", "json"]

_configured = False
_default_level: int | str = logging.INFO


def set_default_level(level: int | str) -> None:
    """Level for the lazy console configuration; imports nothing.

    The CLI calls this instead of :func:`configure_logging` so that commands
    that never log do not pay for importing structlog.
    """
    global _default_level
    _default_level = level


def configure_logging(
    mode: Mode = "console", *, level: int | str = logging.INFO, stream: TextIO | None = None
) -> None:
    """Configure structlog (and route stdlib ``logging`` through the same output).

    ``console``: ``level: event key=value`` lines for people. ``json``: one JSON
    object per line with ISO timestamps, for daemons. Safe to call again to
    reconfigure (tests do).
    """
    import structlog

    global _configured
    out = stream if stream is not None else sys.stderr
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _redact,
    ]
    if mode == "json":
        processors = [
            *shared,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
    else:
        processors = [*shared, _console_renderer]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Libraries that use stdlib logging (pluggy, docker, urllib3) at WARNING+.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=out, force=True)
    _configured = True


#: Level of each logging method, for dropping a call without importing structlog.
_METHOD_LEVELS = {
    "debug": logging.DEBUG, "info": logging.INFO, "msg": logging.INFO,
    "warning": logging.WARNING, "warn": logging.WARNING, "error": logging.ERROR,
    "exception": logging.ERROR, "critical": logging.CRITICAL, "fatal": logging.CRITICAL,
}  # fmt: skip


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A structlog logger, made on first use (configuring console logging
    first if nobody has). Until something is logged at the configured level,
    structlog (and the ``rich`` it imports, ~0.3 s) is not imported: a
    ``bot-bottle run`` that only logs at debug level never pays for it."""
    return _LazyLogger(name, initial)


def _drop(*_args: Any, **_kwargs: Any) -> None:
    return None


class _LazyLogger:
    __slots__ = ("_initial", "_name", "_real")

    def __init__(self, name: str | None, initial: dict[str, Any]) -> None:
        self._name, self._initial, self._real = name, initial, None

    def _logger(self) -> Any:
        if self._real is None:
            import structlog

            if not _configured:
                configure_logging(level=_default_level)
            self._real = structlog.get_logger(self._name, **self._initial)
        return self._real

    def __getattr__(self, attr: str) -> Any:
        level = _METHOD_LEVELS.get(attr)
        if level is not None and not _configured and level < _numeric(_default_level):
            return _drop
        return getattr(self._logger(), attr)


def _numeric(level: int | str) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.upper())
    return value if isinstance(value, int) else logging.INFO


def _redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    # Secret objects render as a mask by themselves; this catches values that
    # were unwrapped by mistake under an obviously secret key.
    for key in list(event_dict):
        lowered = key.lower()
        if any(word in lowered for word in ("token", "secret", "password", "authorization")):
            value = event_dict[key]
            if isinstance(value, str) and value:
                event_dict[key] = "[REDACTED]"
    return event_dict


def _console_renderer(_logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
    level = event_dict.pop("level", method)
    event = event_dict.pop("event", "")
    # People get the message, not a traceback (a traceback tells a user
    # nothing they can act on and may print values from the frames);
    # BOT_BOTTLE_LOG=debug with json mode keeps tracebacks for developers.
    event_dict.pop("exc_info", None)
    # Events and fields carry names from repositories and agents (files,
    # hosts, paths): shown escaped, never interpreted by the terminal.
    from bot_bottle.termtext import visible

    extras = " ".join(f"{visible(str(k))}={visible(str(v))}" for k, v in event_dict.items())
    return f"{level}: {visible(str(event))}" + (f" ({extras})" if extras else "")
