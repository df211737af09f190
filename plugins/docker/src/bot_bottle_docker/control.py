"""Talking to a running bottle's init (the bundle's PID 1) from the host.

The contract for callers (the route-change CLI, the console, the faults
suite): :func:`reload_routes` returns once egress has said whether it took
the new table; ``ok`` false means the previous table is still in force and
``error`` says why (egress's own reason, e.g. a route naming a token that
is not set). Nothing here raises for a refused reload; a bottle that is
gone or an init that cannot be reached is a :class:`BotBottleError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bot_bottle_sidecars.layout import PY

from bot_bottle.errors import BotBottleError

#: The bundle container of a bottle (DockerBackend.prepare names it).
BUNDLE_NAME = "bb-{slug}-sidecars"


@dataclass(frozen=True)
class ReloadOutcome:
    ok: bool
    #: Why it was refused (None when ``ok``).
    error: str | None
    #: daemon -> {"ok": bool, "error": str | None}
    results: dict[str, Any]


def init_control(slug: str, action: str, daemon: str | None = None) -> dict[str, Any]:
    """One ``ctl`` command (status, restart, reload) to the bottle's init; its JSON reply."""
    import docker
    import docker.errors

    argv = [PY, "-m", "bot_bottle_sidecars.init", "ctl", action]
    if daemon is not None:
        argv.append(daemon)
    client = docker.from_env(timeout=60)
    try:
        try:
            bundle = client.containers.get(BUNDLE_NAME.format(slug=slug))
            result = bundle.exec_run(argv, user="root", demux=True)
        except docker.errors.NotFound:
            raise BotBottleError(
                f"bottle {slug} has no sidecar bundle running",
                hint="'bot-bottle list active' shows the running bottles",
            ) from None
        except docker.errors.APIError as exc:
            raise BotBottleError(f"cannot reach bottle {slug}'s sidecars: {exc}") from None
    finally:
        client.close()
    # demux=True: a (stdout, stderr) pair, either may be None.
    pair: Any = result.output or (b"", b"")
    out: bytes = pair[0] or b""
    err: bytes = pair[1] or b""
    try:
        reply = json.loads(out)
    except ValueError:
        text = err.decode("utf-8", "replace").strip()[-300:]
        raise BotBottleError(f"bottle {slug}'s init did not answer: {text}") from None
    if not isinstance(reply, dict):
        raise BotBottleError(f"bottle {slug}'s init answered {reply!r}")
    return reply


def reload_routes(slug: str) -> ReloadOutcome:
    """Ask egress to re-read its config (written to the bottle's etc/ first)."""
    reply = init_control(slug, "reload")
    results = reply.get("results") if isinstance(reply.get("results"), dict) else {}
    ok = reply.get("ok") is True
    error = None if ok else str(reply.get("error") or "reload failed")
    return ReloadOutcome(ok, error, results or {})


__all__ = ["ReloadOutcome", "init_control", "reload_routes"]
