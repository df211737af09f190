"""LIFO teardown for launches: every resource registers its removal as soon as
it exists; leaving runs them last-created-first, logs each failure and keeps
going, and does not let a second Ctrl-C/SIGTERM cut the teardown short.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from bot_bottle.log import get_logger


class Teardown:
    def __init__(self, what: str) -> None:
        self.what = what
        self._steps: list[tuple[str, Callable[[], Any]]] = []
        self.failures: list[str] = []
        self.seconds: float = 0.0

    def push(self, name: str, fn: Callable[[], Any]) -> None:
        self._steps.append((name, fn))

    def close(self) -> None:
        log = get_logger("bot_bottle.teardown")
        start = time.monotonic()
        deferred: list[int] = []
        restore: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                restore[sig] = signal.signal(sig, lambda s, _f: deferred.append(s))
        try:
            while self._steps:
                name, fn = self._steps.pop()
                try:
                    fn()
                except Exception as exc:  # logged, never swallowed silently
                    self.failures.append(name)
                    log.warning("teardown_failed", bottle=self.what, step=name, error=str(exc))
        finally:
            for sig, handler in restore.items():
                signal.signal(sig, handler)
            self.seconds = time.monotonic() - start
        if deferred:
            log.info("teardown_finished_after_signal", bottle=self.what)

    def __enter__(self) -> Teardown:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
