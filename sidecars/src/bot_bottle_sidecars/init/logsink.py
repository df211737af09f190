"""Each daemon's output as JSON lines in a host-kept directory, size-capped.

Init (root) reads every daemon's stdout and stderr through a pipe and
writes one JSON object per line into ``<dir>/<daemon>.jsonl``; at
``max_bytes`` the file rotates to ``<daemon>.jsonl.1`` (up to ``keep``
older files; the oldest is dropped), so one bottle's logs never exceed
``(keep + 1) * max_bytes`` per daemon. Lines are echoed to init's own
stdout too, so ``docker logs`` of the bundle still shows them.

Why init and not each daemon: a daemon cannot rewrite or delete its own
history (the directory is the host user's, 0700, mounted where only root
in the bundle can enter; no daemon user can), and output nobody formats
(git daemon, mitmproxy, a crash's traceback) is kept too. The agent
container never mounts the directory.

The daemons already redact what they log (no log line carries a secret value); this
module adds no new content except the ``daemon`` name and, for a line that
is not a JSON object, a ``timestamp`` and ``event`` wrapper.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

DEFAULT_MAX_BYTES = 2 * 1024 * 1024
DEFAULT_KEEP = 4
#: A longer line is cut: one runaway line must not hold init's memory.
MAX_LINE_BYTES = 64 * 1024
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record(daemon: str, raw: bytes) -> bytes:
    """One kept line: the daemon's JSON object with its name added, or the
    text wrapped in one. ``daemon`` is init's word, never the line's: it is
    appended last, and the last of duplicate keys is the one JSON readers keep."""
    text = raw.decode("utf-8", "replace").rstrip("\r\n")
    obj: object = None
    if text.startswith("{"):
        with contextlib.suppress(ValueError):
            obj = json.loads(text)
    if isinstance(obj, dict) and obj and text.endswith("}") and "\n" not in text:
        # Valid, one line: keep the daemon's bytes (no re-serialising, the
        # costly part) and append what init adds.
        extra = f',"daemon":{json.dumps(daemon)}'
        if "timestamp" not in obj:
            extra += f',"timestamp":"{stamp()}"'
        return (text[:-1] + extra + "}\n").encode()
    if isinstance(obj, dict):
        out: dict[str, object] = {**obj, "daemon": daemon}
        out.setdefault("timestamp", stamp())
    else:
        out = {"daemon": daemon, "timestamp": stamp(), "level": "info", "event": text}
        out["raw"] = True
    return json.dumps(out, ensure_ascii=False).encode() + b"\n"


@dataclass
class RotatingFile:
    """``<directory>/<name>.jsonl``, rotated by size by its only writer."""

    directory: Path
    name: str
    max_bytes: int = DEFAULT_MAX_BYTES
    keep: int = DEFAULT_KEEP
    _fd: int | None = field(default=None, init=False)
    _size: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not _NAME_RE.fullmatch(self.name):
            raise ValueError(f"invalid log name {self.name!r}")

    @property
    def path(self) -> Path:
        return self.directory / f"{self.name}.jsonl"

    def _open(self) -> int:
        if self._fd is None:
            # O_NOFOLLOW: a planted symlink must not redirect root's writes.
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
            self._fd = os.open(self.path, flags, 0o644)
            # Readable by the host user whatever uid init maps to there.
            os.fchmod(self._fd, 0o644)
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def _rotate(self) -> None:
        self.close()
        for i in range(self.keep, 0, -1):
            src = self.path if i == 1 else self.directory / f"{self.name}.jsonl.{i - 1}"
            with contextlib.suppress(FileNotFoundError):
                src.replace(self.directory / f"{self.name}.jsonl.{i}")
        if self.keep == 0:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def write(self, line: bytes) -> None:
        fd = self._open()
        if self._size and self._size + len(line) > self.max_bytes:
            self._rotate()
            fd = self._open()
        os.write(fd, line)
        self._size += len(line)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class LogSink:
    """Every daemon's file in one directory, and the echo to init's stdout."""

    directory: Path
    max_bytes: int = DEFAULT_MAX_BYTES
    keep: int = DEFAULT_KEEP
    echo: BinaryIO | None = None
    _files: dict[str, RotatingFile] = field(default_factory=dict, init=False)
    _partial: dict[int, bytes] = field(default_factory=dict, init=False)

    def file(self, daemon: str) -> RotatingFile:
        f = self._files.get(daemon)
        if f is None:
            f = self._files[daemon] = RotatingFile(
                self.directory, daemon, self.max_bytes, self.keep
            )
        return f

    def line(self, daemon: str, raw: bytes) -> None:
        if self.echo is not None:
            with contextlib.suppress(OSError, ValueError):
                self.echo.write(raw if raw.endswith(b"\n") else raw + b"\n")
                self.echo.flush()
        # A full or vanished log directory must not stop the daemons; the
        # echo above still reaches docker logs.
        with contextlib.suppress(OSError):
            self.file(daemon).write(record(daemon, raw[:MAX_LINE_BYTES]))

    def feed(self, fd: int, daemon: str, data: bytes) -> None:
        """Bytes read from ``fd``; complete lines are written, the rest waits."""
        buf = self._partial.pop(fd, b"") + data
        *lines, rest = buf.split(b"\n")
        for ln in lines:
            self.line(daemon, ln)
        if len(rest) >= MAX_LINE_BYTES:
            self.line(daemon, rest)
            rest = b""
        if rest:
            self._partial[fd] = rest

    def eof(self, fd: int, daemon: str) -> None:
        rest = self._partial.pop(fd, b"")
        if rest:
            self.line(daemon, rest)

    def close(self) -> None:
        for f in self._files.values():
            f.close()


class LineStream:
    """A text stream for init's own structlog output, into the sink as ``init``."""

    def __init__(self, sink: LogSink, name: str = "init") -> None:
        self.sink, self.name, self._buf = sink, name, ""

    def write(self, text: str) -> int:
        self._buf += text
        *lines, self._buf = self._buf.split("\n")
        for ln in lines:
            self.sink.line(self.name, ln.encode())
        return len(text)

    def flush(self) -> None:
        pass
