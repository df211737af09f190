"""JSON-line logging for the egress daemon, with secrets redacted from every line.

Levels: ``off`` (the boot line only), ``blocks`` (every refusal, DLP finding
and internal error), ``full`` (plus every request and response). Redaction
runs on the serialized line, so no field (path, header, error text) can carry a
secret past it: the daemon's own token values first, then token-shaped strings.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, Literal, TextIO

Level = Literal["off", "blocks", "full"]
REDACTED = "[REDACTED]"

# Token shapes worth hiding even when we do not know the value: credentials in
# Authorization-like text, well-known vendor prefixes, JWTs, long opaque runs.
_TOKEN_SHAPES = re.compile(
    r"""
    (?P<scheme>(?i:bearer|token|basic)\s+)[A-Za-z0-9._~+/=-]{8,}
  | sk-[A-Za-z0-9_-]{16,}
  | gh[pousr]_[A-Za-z0-9]{20,}
  | github_pat_[A-Za-z0-9_]{20,}
  | glpat-[A-Za-z0-9_-]{16,}
  | xox[abprs]-[A-Za-z0-9-]{10,}
  | (?:AKIA|ASIA)[0-9A-Z]{16}
  | eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*
  | (?<![A-Za-z0-9_+/=-])[A-Za-z0-9_+/=-]{40,}(?![A-Za-z0-9_+/=-])
    """,
    re.VERBOSE,
)


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        # Longest first so a secret containing another is replaced whole.
        # Also their JSON-escaped forms: redaction runs on serialized lines.
        values = {s for s in secrets if len(s) >= 4}
        forms = values | {json.dumps(s)[1:-1] for s in values}
        self._secrets = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, REDACTED)
        return _TOKEN_SHAPES.sub(_shape, text)


def _shape(m: re.Match[str]) -> str:
    scheme = m.group("scheme")
    return f"{scheme}{REDACTED}" if scheme else REDACTED


class EventLog:
    """Writes one JSON object per line. Thread-safe; never raises."""

    def __init__(self, level: Level, redactor: Redactor, stream: TextIO | None = None) -> None:
        self.level: Level = level
        self.redact = redactor
        self._out = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()

    def boot(self, **fields: Any) -> None:
        self._write("egress started", "info", fields)

    def boot_failed(self, **fields: Any) -> None:
        self._write("egress failed to start", "error", fields)

    def block(self, event: str, **fields: Any) -> None:
        if self.level != "off":
            self._write(event, "warning", fields)

    def error(self, event: str, **fields: Any) -> None:
        if self.level != "off":
            self._write(event, "error", fields)

    def info(self, event: str, **fields: Any) -> None:
        """Operational notes (reloads): shown at blocks and full."""
        if self.level != "off":
            self._write(event, "info", fields)

    def traffic(self, event: str, **fields: Any) -> None:
        if self.level == "full":
            self._write(event, "info", fields)

    def _write(self, event: str, level: str, fields: dict[str, Any]) -> None:
        record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "level": level}
        record["event"] = event
        record.update(fields)
        try:
            line = self.redact(json.dumps(record, default=str, ensure_ascii=False))
            with self._lock:
                self._out.write(line + "\n")
                self._out.flush()
        except Exception:  # noqa: S110 - logging must never take a request down
            pass


class _ToEventLog(logging.Handler):
    """Routes mitmproxy's own (stdlib) warnings and errors through the redactor."""

    def __init__(self, log: EventLog) -> None:
        super().__init__(logging.WARNING)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                msg += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        except Exception:
            msg = str(record.msg)
        self._log.error("mitmproxy", logger=record.name, message=msg)


def route_stdlib_logging(log: EventLog) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(_ToEventLog(log))
    root.setLevel(logging.WARNING)
