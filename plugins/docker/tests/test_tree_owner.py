"""tree_owner on a real tree (ext4 here, POSIX ACLs): the hand-over and the
hand-back, as the helper container runs them, called directly (root)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot_bottle_docker import tree_owner as to

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown to other uids needs root")

OWNER, GROUP, AGENT = 4242, 4343, to.AGENT_UID


def _tree(root: Path) -> Path:
    top = root / "repo"
    for rel in ("src", "src/deep", "mod", "guarded"):
        (top / rel).mkdir(parents=True)
    (top / "src" / "a.txt").write_text("a\n")
    (top / "src" / "run.sh").write_text("#!/bin/sh\n")
    (top / "src" / "run.sh").chmod(0o755)
    (top / "src" / "a.txt").chmod(0o644)
    (top / "guarded" / "hook").write_text("x\n")
    (top / "link").symlink_to("src")
    (top / "theirs.txt").write_text("another user's\n")
    (top / ".git").mkdir()
    (top / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    for path in [top, *top.rglob("*")]:
        os.chown(path, OWNER, GROUP, follow_symlinks=False)
    os.chown(top / "theirs.txt", 1234, 1234)
    return top


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A directory the owner can reach (pytest's tmp dirs are root's, 0700)."""
    root = Path(tempfile.mkdtemp(prefix="bb-tree-owner-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _acl(path: Path, name: str) -> list[to.Entry] | None:
    try:
        return to.decode(os.getxattr(path, name))
    except OSError:
        return None


def test_hand_over_gives_the_agent_the_tree_and_the_owner_an_acl(tmp_path: Path) -> None:
    top = _tree(tmp_path)
    out = to.hand_over(top, AGENT, OWNER, keep={"."}, skip={"guarded"})
    assert out["acl"] is True
    assert top.stat().st_uid == OWNER  # kept: the top holds the owner's .git
    assert (top / ".git").stat().st_uid == OWNER and _acl(top / ".git", to.ACCESS) is None
    assert (top / "guarded").stat().st_uid == OWNER and _acl(top / "guarded", to.ACCESS) is None
    assert (top / "theirs.txt").stat().st_uid == 1234
    for rel in ("src", "src/deep", "src/a.txt", "src/run.sh", "mod"):
        assert (top / rel).lstat().st_uid == AGENT, rel
    assert (top / "link").lstat().st_uid == AGENT
    top_acl = _acl(top, to.ACCESS) or []
    assert (2, 7, AGENT) in top_acl
    src_default = _acl(top / "src", to.DEFAULT) or []
    assert (2, 7, AGENT) in src_default and (2, 7, OWNER) in src_default
    assert (2, 7, OWNER) in (_acl(top / "src" / "run.sh", to.ACCESS) or [])
    assert (2, 6, OWNER) in (_acl(top / "src" / "a.txt", to.ACCESS) or [])


def test_the_owners_git_refuses_a_git_dir_in_a_handed_over_directory(
    reachable: Path,
) -> None:
    top = _tree(reachable)
    to.hand_over(top, AGENT, OWNER, keep={"."}, skip=set())
    # What the agent would do: a bare layout inside a directory the owner made.
    src = top / "src"
    (src / "HEAD").write_text("ref: refs/heads/main\n")
    (src / "objects").mkdir()
    (src / "refs").mkdir()
    proc = subprocess.run(["git", "status"], cwd=src, user=OWNER, group=GROUP, extra_groups=[],
                          env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert "dubious ownership" in proc.stderr, proc.stderr
    # The owner still writes the agent's files and creates its own.
    subprocess.run(["sh", "-c", "echo more >> a.txt && echo new > b.txt && mkdir d"], cwd=src,
                   user=OWNER, group=GROUP, extra_groups=[], check=True)  # fmt: skip


def test_hand_back_restores_owner_modes_and_no_acl(tmp_path: Path) -> None:
    top = _tree(tmp_path)
    before = {p: stat.S_IMODE(p.lstat().st_mode) for p in [top, *top.rglob("*")]
              if not p.is_symlink()}  # fmt: skip
    to.hand_over(top, AGENT, OWNER, keep={"."}, skip={"guarded"})
    made = top / "src" / "agent-made"
    made.write_text("#!/bin/sh\n")
    os.chown(made, AGENT, GROUP)
    made.chmod(0o4755)  # set-user-ID: must not become the owner's
    assert to.hand_back(top, AGENT, OWNER) > 0
    for path in [top, *top.rglob("*")]:
        if path.relative_to(top).parts[:1] == (".git",):
            continue
        assert path.lstat().st_uid in (OWNER, 1234), path
        if path.is_symlink():
            continue
        assert not {to.ACCESS, to.DEFAULT} & set(os.listxattr(path)), path
        if path in before:
            assert stat.S_IMODE(path.lstat().st_mode) == before[path], path
    assert not made.stat().st_mode & stat.S_ISUID


def test_no_acl_support_changes_nothing(tmp_path: Path) -> None:
    """A filesystem without ACLs (a tmpfs mounted with no ACL support is not
    available unprivileged everywhere; /proc is a real one)."""
    out = to.hand_over(Path("/proc/self"), AGENT, OWNER, keep=set(), skip=set())
    assert out == {"acl": False, "entries": 0}
