"""Git directories the agent left in the shared working tree, disarmed.

The host's ``.git`` never reaches the bottle (see :mod:`workspace_git`), but
the working tree is shared, and git finds a repository from wherever the
operator stands: ``cd REPO/src && git status`` (or a shell prompt that runs
git on every ``cd``) opens ``src/.git``, a gitfile's target, or ``src``
itself when it holds ``HEAD``, ``objects`` and ``refs`` (a bare repository),
and honours that directory's ``config`` (``core.fsmonitor``,
``core.pager``...) as the operator. While the bottle runs the tree is the
agent uid's and git's ownership check refuses those (:mod:`tree_owner`);
once it is the owner's again (or on a filesystem without ACLs, where the
agent writes as the owner) the check passes.

So, after the agent's container is gone (nothing of the agent can re-create
them), every gitfile or ``.git`` link that is new or changed is renamed to
:data:`GITFILE_DISABLED`, and every git directory in the working tree that
is new, or that changed since the launch, has its ``HEAD`` renamed to
:data:`DISABLED`: git no longer
takes the directory for a repository (no config is read; a gitfile naming it
fails), its content is kept, and the operator is told how to restore it
after review. During the bottle's life they stay usable by the agent.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

DISABLED = "HEAD.bot-bottle-disabled"
#: What a gitfile or ``.git`` link the agent made or changed is renamed to.
GITFILE_DISABLED = ".git.bot-bottle-disabled"
GITFILE = "gitfile:"
#: Entries that, next to ``HEAD``, make git take a directory for a git dir.
_GIT_DIR_MARKS = ("objects", "refs", "commondir")


def head_entry(names: set[str]) -> str | None:
    """The entry git opens as ``HEAD`` when the directory is a git dir. Any
    case: on a case-insensitive host (macOS) ``head`` is ``HEAD``."""
    lowered = {n.lower(): n for n in names}
    if "head" in lowered and any(m in lowered for m in _GIT_DIR_MARKS):
        return "HEAD" if "HEAD" in names else lowered["head"]
    return None


def _fingerprint(git_dir: Path) -> str:
    """Every entry but the object store's content: inode, ctime (which no
    process can set back), size and mode."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(git_dir):
        here = Path(root)
        if here == git_dir and "objects" in dirs:
            dirs.remove("objects")
            files = [*files, "objects"]
        for name in sorted([*dirs, *files, "."]):
            try:
                st = os.lstat(here / name)
            except OSError:
                continue
            rel = os.path.relpath(here / name, git_dir)
            h.update(f"{rel}\0{st.st_ino}:{st.st_ctime_ns}:{st.st_size}:{st.st_mode}\n".encode())
    return h.hexdigest()


def _walk(top: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk``, also into the directories it could not list: one the
    agent left searchable but unreadable (``chmod 111``) hides its content
    from a walk by its owner, not from git, which opens names it knows."""
    pending = [top]
    while pending:
        failed: list[OSError] = []
        for entry in pending:
            yield from os.walk(entry, onerror=failed.append)
        pending = []
        for exc in failed:
            path = Path(str(exc.filename))
            try:
                if path.is_symlink() or not path.is_dir():
                    continue
                path.chmod(path.lstat().st_mode & 0o7777 | 0o500)
            except OSError:
                continue
            pending.append(path)


def git_dirs(cwd: Path) -> dict[str, str]:
    """Git directories in ``cwd`` (not its own ``.git``): relative path ->
    fingerprint. Symbolic links are not followed. No limit on the walk: a
    git dir past any limit (after 200,000 empty directories) would be missed."""
    out: dict[str, str] = {}
    for root, dirs, files in _walk(cwd):
        here = Path(root)
        if here == cwd and ".git" in dirs:
            dirs.remove(".git")
        # The top level too: with no .git of its own (``--cwd`` a plain
        # directory, or a subdirectory of a repository), git takes a
        # ``HEAD``/``objects``/``refs`` layout there for a repository.
        if head_entry({*dirs, *files}):
            out[str(here.relative_to(cwd))] = _fingerprint(here)
        # A gitfile or a link named .git can lead out of the working tree:
        # to the bottle's own git dir in the state dir, which is kept (agent
        # config and all) when the agent exits non-zero.
        for name in [*dirs, *files]:
            entry = here / name
            if name.lower() == ".git" and (entry.is_symlink() or not entry.is_dir()):
                st = entry.lstat()
                target = str(entry.readlink()) if entry.is_symlink() else _head_bytes(entry)
                out[str(entry.relative_to(cwd))] = (
                    f"{GITFILE}{st.st_ino}:{st.st_ctime_ns}:{st.st_size}:{st.st_mode}:{target!r}"
                )
    return out


def _head_bytes(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(4096)
    except OSError:
        return b""


def disarm(cwd: Path, at_launch: dict[str, str]) -> tuple[list[str], list[str]]:
    """Rename ``HEAD`` of each git directory that is new or changed since
    ``at_launch``: (disarmed, failed) relative paths."""
    done: list[str] = []
    failed: list[str] = []
    for rel, fingerprint in sorted(git_dirs(cwd).items()):
        if at_launch.get(rel) == fingerprint:
            continue
        here = cwd / rel
        if fingerprint.startswith(GITFILE):
            try:
                gone = here.with_name(GITFILE_DISABLED)
                if gone.is_symlink() or gone.is_file():
                    gone.unlink()
                here.rename(gone)
                done.append(rel)
            except OSError:
                failed.append(rel)
            continue
        try:
            head = head_entry({p.name for p in here.iterdir()}) or "HEAD"
            # The agent (the owner's uid) may have left the directory read-only.
            here.chmod(here.lstat().st_mode & 0o7777 | 0o700)
            if (here / DISABLED).exists() or (here / DISABLED).is_symlink():
                (here / DISABLED).unlink()
            (here / head).rename(here / DISABLED)
            done.append(rel)
        except OSError:
            failed.append(rel)
    return done, failed
