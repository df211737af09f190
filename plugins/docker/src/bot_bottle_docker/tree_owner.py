"""The working tree belongs to the agent's own uid during the bottle's life.

Why: git finds a repository from wherever the operator stands. While a
bottle runs, ``cd REPO/src && git status`` would open a ``src/.git``, a
gitfile's target or a ``HEAD``/``objects``/``refs`` layout the agent made,
and run its ``core.fsmonitor`` as the operator. Git's own guard against
exactly this is its ownership check (``safe.directory``): it uses a
repository it discovers only when the directory holding ``.git`` (or the bare
directory), the git dir and the gitfile are all owned by the user running
git (root: by root). So while the bottle runs:

* the agent runs as :data:`AGENT_UID`, never the owner's uid (everything it
  creates is that uid's);
* every directory and file of the tree the owner owned is handed to
  :data:`AGENT_UID` (the agent keeps all it could do before: ``chmod``,
  ``rename``, ``rm``), and a POSIX ACL entry gives the owner back read and
  write (default ACLs on directories, so what either side creates stays
  editable by the other);
* not handed over: the top directory when it holds the host's ``.git``
  (git stops there, at the operator's own repository), a populated
  submodule's directory (its ``.git`` is mounted read-only and pinned) and
  the read-only guarded paths.

An owner-owned directory is then reachable for the agent only where git
never looks for a repository of the agent's, and every directory where it
would look is the agent uid's: the owner's git refuses it ("detected
dubious ownership") and runs nothing. Renaming cannot help the agent (a
moved directory keeps its owner, and only directories the agent cannot
write inside stay the owner's); ``chown`` to the owner needs a capability
the agent does not have.

At teardown (the agent's container gone), :func:`finish` first disarms the
git dirs the agent left (:mod:`nested_git`) and then hands everything of
:data:`AGENT_UID` back to the owner and removes the ACL entries. ``chown``
clears set-user-ID bits, so nothing the agent made runs as the owner.

This module runs in a one-shot helper container (root, ``CHOWN``,
``FOWNER``, ``DAC_OVERRIDE``, ``DAC_READ_SEARCH``, no network): the launcher
is usually not root. It uses the standard library only; ``main`` reads its
task from a JSON file.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

#: The agent's uid in the bottle while the tree is handed over (next to the
#: bundle's daemon users, 60101-60104).
AGENT_UID = 60105
ACCESS = "system.posix_acl_access"
DEFAULT = "system.posix_acl_default"
_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_NO_ID = 0xFFFFFFFF
_UNSUPPORTED = {errno.ENOTSUP, errno.EOPNOTSUPP}

Entry = tuple[int, int, int]  # (tag, perm, id)


def decode(raw: bytes) -> list[Entry]:
    return [struct.unpack_from("<HHI", raw, off) for off in range(4, len(raw) - 7, 8)]


def encode(entries: list[Entry]) -> bytes:
    ordered = sorted(entries, key=lambda e: (e[0], e[2]))
    return struct.pack("<I", _VERSION) + b"".join(struct.pack("<HHI", *e) for e in ordered)


def _base(mode: int) -> list[Entry]:
    return [
        (_USER_OBJ, (mode >> 6) & 7, _NO_ID),
        (_GROUP_OBJ, (mode >> 3) & 7, _NO_ID),
        (_OTHER, mode & 7, _NO_ID),
    ]


def _with_mask(entries: list[Entry]) -> list[Entry]:
    """The mask recomputed as setfacl does (the union of the group class);
    none when there is no named entry."""
    rest = [e for e in entries if e[0] != _MASK]
    group_class = [e for e in rest if e[0] in (_USER, _GROUP, _GROUP_OBJ)]
    if not any(e[0] in (_USER, _GROUP) for e in rest):
        return rest
    mask = 0
    for e in group_class:
        mask |= e[1]
    return [*rest, (_MASK, mask, _NO_ID)]


def _read(path: str, name: str) -> list[Entry] | None:
    try:
        return decode(os.getxattr(path, name, follow_symlinks=False))
    except OSError as exc:
        if exc.errno in (errno.ENODATA, *_UNSUPPORTED):
            return None
        raise


def _acls(path: str) -> set[str]:
    """Which of the two ACLs ``path`` has (one syscall; most entries have
    none, and this spares a failing read of each)."""
    return {n for n in os.listxattr(path, follow_symlinks=False) if n in (ACCESS, DEFAULT)}


_cache: dict[tuple[int, tuple[tuple[int, int], ...]], bytes] = {}


def _acl_bytes(mode: int, users: dict[int, int], existing: list[Entry] | None) -> bytes:
    if existing is not None:
        kept = [e for e in existing if not (e[0] == _USER and e[2] in users)]
        return encode(_with_mask([*kept, *((_USER, p, u) for u, p in users.items())]))
    key = (mode & 0o777, tuple(sorted(users.items())))
    if key not in _cache:
        added = [(_USER, p, u) for u, p in users.items()]
        _cache[key] = encode(_with_mask([*_base(mode), *added]))
    return _cache[key]


def grant(path: str, mode: int, access: dict[int, int], default: dict[int, int] | None) -> None:
    """Add ``user:<uid>:<perm>`` entries to ``path``'s access ACL and, for a
    directory, its default ACL (inherited by what is created in it)."""
    present = _acls(path)
    names = [(ACCESS, access)]
    if default is not None:
        names.append((DEFAULT, default))
    for name, users in names:
        existing = _read(path, name) if name in present else None
        os.setxattr(path, name, _acl_bytes(mode, users, existing), follow_symlinks=False)


def revoke(path: str, uids: set[int], mode: int | None = None) -> None:
    """Remove ``user:<uid>`` entries; an ACL left with no named entry goes,
    and the mode's group bits are the owning group's again. ``mode``: the
    entry's mode now, if the caller knows it (spares an lstat)."""
    for name in sorted(_acls(path)):
        entries = _read(path, name)
        if entries is None or not any(e[0] == _USER and e[2] in uids for e in entries):
            continue
        kept = _with_mask([e for e in entries if not (e[0] == _USER and e[2] in uids)])
        if any(e[0] in (_USER, _GROUP) for e in kept):
            os.setxattr(path, name, encode(kept), follow_symlinks=False)
            continue
        os.removexattr(path, name, follow_symlinks=False)
        if name == ACCESS:
            group = next((e[1] for e in kept if e[0] == _GROUP_OBJ), 0)
            now = stat.S_IMODE(os.lstat(path).st_mode if mode is None else mode)
            os.chmod(path, (now & ~0o070) | (group << 3))  # noqa: PTH101 (a str path, hot loop)


def _entries(top: Path, skip: set[str]) -> Iterator[tuple[str, str, os.stat_result]]:
    """``(relative path, path, lstat)`` of every entry below ``top`` (``top``
    first, as ``.``), links not followed, ``skip`` (relative paths) and what
    is below them left out. Plain strings and ``scandir``: this walks every
    file of the tree, twice per bottle."""
    base = str(top)
    yield ".", base, os.lstat(base)
    pending: list[tuple[str, str]] = [("", base)]
    while pending:
        rel_dir, dir_path = pending.pop()
        try:
            it = os.scandir(dir_path)
        except OSError:
            continue
        with it:
            for entry in it:
                rel = f"{rel_dir}{entry.name}"
                if rel in skip:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield rel, entry.path, st
                if stat.S_ISDIR(st.st_mode):
                    pending.append((f"{rel}/", entry.path))


def hand_over(
    top: Path, agent_uid: int, owner_uid: int, keep: set[str], skip: set[str]
) -> dict[str, object]:
    """The owner's entries of ``top`` to ``agent_uid`` (``keep``: directories
    that stay the owner's, with an ACL entry for the agent instead), the
    owner granted read/write by ACL. ``{"acl": False}`` and nothing changed
    when the filesystem has no POSIX ACLs."""
    try:
        os.getxattr(top, ACCESS)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return {"acl": False, "entries": 0}
        if exc.errno != errno.ENODATA:
            raise
    count = 0
    both = {agent_uid: 7, owner_uid: 7}
    for rel, path, st in _entries(top, skip | {".git"}):
        if st.st_uid != owner_uid:
            continue  # another user's: the agent could not write it before either
        mode = st.st_mode
        if not stat.S_ISLNK(mode):
            if stat.S_ISDIR(mode):
                # The side that does not own the directory gets in by ACL;
                # both get in to whatever is created in it.
                access = {agent_uid if rel in keep else owner_uid: 7}
                default: dict[int, int] | None = both
            else:
                access, default = {owner_uid: (mode >> 6) & 7}, None
            try:
                grant(path, mode, access, default)
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                # Another filesystem mounted in the tree, without ACLs: the
                # entry stays the owner's and read-only to the agent.
                continue
        if rel not in keep:
            os.chown(path, agent_uid, -1, follow_symlinks=False)
        count += 1
    return {"acl": True, "entries": count}


def hand_back(top: Path, agent_uid: int, owner_uid: int) -> int:
    """Everything of ``agent_uid`` below ``top`` back to ``owner_uid`` (the
    group is the owner's already: the agent runs with it), and the ACL
    entries of both removed. Returns how many entries changed hands."""
    count = 0
    uids = {agent_uid, owner_uid}
    for _rel, path, st in _entries(top, {".git"}):
        mode: int | None = st.st_mode
        if st.st_uid == agent_uid:
            os.chown(path, owner_uid, -1, follow_symlinks=False)
            count += 1
            # chown cleared set-user/group-ID bits of a file: the mode is
            # read again rather than restored from before.
            mode = None if stat.S_ISREG(st.st_mode) else st.st_mode
        if not stat.S_ISLNK(st.st_mode):
            revoke(path, uids, mode)
    return count


def main() -> None:
    """``python3 -c ... TASK.json``: ``hand_over`` or ``finish`` (disarm
    with :mod:`nested_git`, then ``hand_back``); the result as JSON on stdout."""
    task = json.loads(Path(sys.argv[1]).read_text())
    top = Path(task["top"])
    from bot_bottle_docker import nested_git

    if task["op"] == "hand_over":
        out = hand_over(top, task["agent_uid"], task["owner_uid"], set(task["keep"]),
                        set(task["skip"]))  # fmt: skip
        # The git dirs as the agent gets them (the hand-over changed their
        # ctimes): what teardown's disarm compares with, before the hand-back.
        out["at_launch"] = nested_git.git_dirs(top)
    else:
        done, failed = nested_git.disarm(top, task["at_launch"]) if task["disarm"] else ([], [])
        # The bottle's git dir (the agent's while it ran) to whoever runs
        # bot-bottle, who removes the state dir: a dead launcher's teardown
        # did not give it back.
        if task.get("git_dir"):
            git_dir = Path(task["git_dir"])
            for _rel, path, _st in _entries(git_dir, set()):
                os.chown(path, task["launcher_uid"], task["launcher_gid"], follow_symlinks=False)
        out = {"disarmed": done, "failed": failed,
               "handed_back": hand_back(top, task["agent_uid"], task["owner_uid"])}  # fmt: skip
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
