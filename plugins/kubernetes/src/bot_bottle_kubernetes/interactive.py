"""Interactive and streamed exec: a TTY on the user's terminal, resize, exit codes.

``pump`` moves bytes between file descriptors and an exec websocket
(stdin -> channel 0; channels 1 and 2 -> out/err), sends the window size on
channel 4 at start and whenever ``resized`` says so, and returns the exit
code the error channel carries. ``attach`` wraps it with the host terminal
in raw mode and SIGWINCH wired, restoring both on every exit path.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import termios
import threading
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bot_bottle_kubernetes.cluster import exit_code

RESIZE_CHANNEL = 4
#: What the exec-env wrapper prints on a TTY once echo is off (see launcher).
MARKER = b"\x1e"


def send_resize(ws: Any, cols: int, rows: int) -> None:
    ws.write_channel(RESIZE_CHANNEL, json.dumps({"Width": cols, "Height": rows}).encode())


def terminal_size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 80, 24
    return size.columns, size.lines


def pump(
    ws: Any,
    *,
    in_fd: int | None,
    out_fd: int,
    err_fd: int,
    size: Callable[[], tuple[int, int]] | None = None,
    resized: threading.Event | None = None,
    preamble: bytes = b"",
    tty: bool = False,
) -> int:
    """Run the session to its end; return the command's exit code.

    ``preamble`` goes to stdin before anything of ours: the environment the
    launcher's wrapper reads. On a TTY it waits for the wrapper's
    :data:`MARKER` (printed once the pod's terminal stopped echoing), so the
    values are never echoed back to the screen."""
    if size is not None:
        send_resize(ws, *size())
    waiting = bool(preamble) and tty
    if preamble and not tty:
        ws.write_stdin(preamble)
    stdin_open = in_fd is not None
    if not stdin_open:
        ws.close_channel(0)  # headless: the command reads EOF, never waits on us
    while waiting and ws.is_open():
        ws.update(timeout=0.05)
        early = ws.read_channel(1, timeout=0) or b""
        if MARKER in early:
            before, _, after = early.partition(MARKER)
            ws.write_stdin(preamble)
            waiting = False
            early = before + after
        if early:
            os.write(out_fd, early)
    while ws.is_open():
        if resized is not None and size is not None and resized.is_set():
            resized.clear()
            send_resize(ws, *size())
        if stdin_open and in_fd is not None:
            ready, _, _ = select.select([in_fd], [], [], 0)
            if ready:
                data = os.read(in_fd, 65536)
                if data:
                    ws.write_stdin(data)
                else:
                    stdin_open = False
                    ws.close_channel(0)
        ws.update(timeout=0.05)
        _drain(ws, out_fd, err_fd)
    _drain(ws, out_fd, err_fd)
    return exit_code(ws.read_channel(3))


def _drain(ws: Any, out_fd: int, err_fd: int) -> None:
    for channel, fd in ((1, out_fd), (2, err_fd)):
        data = ws.read_channel(channel, timeout=0)
        if data:
            os.write(fd, data if isinstance(data, bytes) else data.encode())


@contextmanager
def raw_terminal(fd: int) -> Iterator[threading.Event]:
    """The terminal in raw mode with SIGWINCH setting the returned event; restored after."""
    resized = threading.Event()
    saved = termios.tcgetattr(fd) if os.isatty(fd) else None
    previous = signal.getsignal(signal.SIGWINCH)
    in_main = threading.current_thread() is threading.main_thread()
    try:
        if in_main:
            signal.signal(signal.SIGWINCH, lambda *_a: resized.set())
        if saved is not None:
            tty.setraw(fd)
        yield resized
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        if in_main:
            signal.signal(signal.SIGWINCH, previous)


def attach(ws: Any, *, preamble: bytes = b"") -> int:
    """``ws`` on this process's terminal (TTY exec), until the command exits."""
    in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
    try:
        with raw_terminal(in_fd) as resized:
            return pump(
                ws,
                in_fd=in_fd,
                out_fd=out_fd,
                err_fd=sys.stderr.fileno(),
                size=lambda: terminal_size(out_fd),
                resized=resized,
                preamble=preamble,
                tty=True,
            )
    finally:
        ws.close()
