"""The native run finder (``dlp_accelerators: native_runs``).

:mod:`bot_bottle_dlp._runs` is a small C extension built with the package
when a compiler is there (``setup.py``; optional: without one the package
installs without it). It finds the base64 runs, the spaced-base64
candidates and the hex-with-separators regions of the decoded views
(:mod:`bot_bottle.dlp.views`) in one pass each over the bytes, which Python
cannot do under ~4 ms per MB. The findings are the same with or without it
(``tests/test_dlp_native.py``). ``BOT_BOTTLE_DLP_NO_NATIVE=1`` turns it off.
"""

from __future__ import annotations

import os
from types import ModuleType

from bot_bottle.contracts.common import Availability
from bot_bottle.contracts.dlp import RunFinder, Runs

ENV_OFF = "BOT_BOTTLE_DLP_NO_NATIVE"


def _module() -> ModuleType | None:
    try:
        from bot_bottle_dlp import _runs
    except ImportError:
        return None
    return _runs


def switched_off() -> bool:
    return os.environ.get(ENV_OFF, "") in ("1", "true", "yes")


class NativeRunFinder(RunFinder):
    name = "native_runs"
    description = "the decoded views' runs found in C (bot_bottle_dlp._runs)"

    def __init__(self) -> None:
        self._mod = _module()

    def is_available(self) -> Availability:
        if switched_off():
            return Availability.no(
                f"off ({ENV_OFF}=1): the DLP views find their runs in Python (slower)",
                f"unset {ENV_OFF} to use it",
            )
        if self._mod is None:
            return Availability.no(
                "not built (no C compiler when bot-bottle-dlp was installed): "
                "the DLP views find their runs in Python (slower)",
                "reinstall bot-bottle-dlp where gcc and the Python headers are installed",
            )
        return Availability.yes("in use: the DLP views find their runs in C")

    def find(self, data: bytes) -> Runs:
        assert self._mod is not None
        return self._mod.find(data)
