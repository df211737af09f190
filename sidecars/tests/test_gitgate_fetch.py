"""Clone and fetch through git-gate: always the upstream's current state, or an error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .conftest import Gate, Upstream


def test_clone_through_gate_shows_upstream_commits_and_default_branch(
    tmp_path: Path, make_upstream: Callable[[str], Upstream], make_gate: Callable[..., Gate]
) -> None:
    up = make_upstream("app")
    head = up.commit({"src/main.py": "print('hi')\n"}, "add main")
    gate = make_gate([("app", up)])
    clone = gate.clone(up, tmp_path / "clone")
    assert gate.git("rev-parse", "HEAD", cwd=clone).stdout.strip() == head
    # init --bare leaves HEAD at master; the gate follows the upstream's.
    assert gate.git("symbolic-ref", "HEAD", cwd=clone).stdout.strip() == "refs/heads/main"
    remote = gate.git("config", "remote.origin.url", cwd=clone).stdout.strip()
    assert remote == up.url  # the agent sees the upstream URL; insteadOf reroutes it
