"""Clone and fetch through git-gate: always the upstream's current state, or an error."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .conftest import Gate, GatedClone, Sshd, Upstream


def test_clone_through_gate_shows_upstream_commits_and_default_branch(
    tmp_path: Path, make_upstream: Callable[..., Upstream], make_gate: Callable[..., Gate]
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


def test_fetch_through_gate_sees_a_commit_made_upstream_after_the_gate_started(
    gated_clone: GatedClone,
) -> None:
    up, gate, clone = gated_clone()
    later = up.commit({"CHANGELOG": "v2\n"}, "made upstream while the bottle ran")
    gate.git("pull", "-q", "--ff-only", cwd=clone)
    assert gate.git("rev-parse", "HEAD", cwd=clone).stdout.strip() == later
    ls = gate.git("ls-remote", up.url, "refs/heads/main").stdout
    assert ls.startswith(later)


def test_branch_deleted_upstream_disappears_from_the_gate(
    tmp_path: Path, make_upstream: Callable[..., Upstream], make_gate: Callable[..., Gate]
) -> None:
    up = make_upstream("app")
    up.git("push", "-q", "origin", "HEAD:refs/heads/old-feature")
    gate = make_gate([("app", up)])
    assert "old-feature" in gate.git("ls-remote", up.url).stdout
    up.git("push", "-q", "origin", ":refs/heads/old-feature")
    assert "old-feature" not in gate.git("ls-remote", up.url).stdout


def test_fetch_fails_with_a_clear_message_when_the_upstream_is_down(
    sshd: Sshd, gated_clone: GatedClone
) -> None:
    _, gate, clone = gated_clone()
    sshd.stop()
    try:
        proc = gate.git("fetch", cwd=clone, check=False)
    finally:
        sshd.start()
    assert proc.returncode != 0
    assert "cannot reach the upstream of 'app'" in proc.stderr
    assert "Connection refused" in proc.stderr
    # ... and the gate's own log says why, not only the client.
    gate.wait_for_log("upstream unreachable; request refused")


def test_undeclared_repository_is_not_served(
    make_upstream: Callable[..., Upstream], make_gate: Callable[..., Gate]
) -> None:
    up = make_upstream("app")
    gate = make_gate([("app", up)])
    proc = gate.git("ls-remote", f"git://127.0.0.1:{gate.port}/.gate", check=False)
    assert proc.returncode != 0
    proc = gate.git("ls-remote", f"git://127.0.0.1:{gate.port}/other.git", check=False)
    assert proc.returncode != 0


def test_wrong_host_key_refuses_to_fetch(
    tmp_path: Path, make_upstream: Callable[..., Upstream], make_gate: Callable[..., Gate]
) -> None:
    up = make_upstream("app")
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    gate = make_gate([("app", up)], host_key=(tmp_path / "other_host_key.pub").read_text())
    proc = gate.git("clone", up.url, str(tmp_path / "clone"), check=False)
    assert proc.returncode != 0
    assert "Host key verification failed" in proc.stderr


def test_odd_repository_paths_reach_no_other_directory(
    make_upstream: Callable[..., Upstream], make_gate: Callable[..., Gate]
) -> None:
    """git daemon's whitelist and the access hook agree: a path that only
    *resolves* to a mirror or to the gate's own state serves nothing."""
    up = make_upstream("app")
    gate = make_gate([("app", up)])
    base = f"git://127.0.0.1:{gate.port}"
    for path in ("/app.git/../.gate", "/app.git/../app.git", "/./app.git", "//app.git",
                 "/app.git/objects", "/app.git/hooks/.."):  # fmt: skip
        proc = gate.git("ls-remote", base + path, check=False)
        assert proc.returncode != 0, path
        assert "no such repository" in proc.stderr, (path, proc.stderr)
    # The client decodes %XX itself: this is app.git, the declared mirror.
    assert gate.git("ls-remote", base + "/%61pp.git", check=False).returncode == 0
