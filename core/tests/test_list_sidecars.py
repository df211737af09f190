"""``list active``'s sidecars column: each daemon's state as an operator reads it."""

from __future__ import annotations

from bot_bottle.cli.list_cmd import _sidecars
from bot_bottle.contracts.backend import DaemonState


def test_running_and_idle_daemons_read_ok_and_the_others_by_state() -> None:
    text = _sidecars(
        [
            DaemonState("egress", "running"),
            # supervise before the agent's first call (init's on_demand).
            DaemonState("supervise", "idle"),
            DaemonState("git-gate", "restarting", crashes=2, last_exit="signal SIGKILL"),
        ]
    )
    assert text == (
        "egress ok, supervise ok (idle), git-gate restarting (2 crashes, last signal SIGKILL)"
    )


def test_no_daemons_known_is_a_dash() -> None:
    assert _sidecars([]) == "-"
