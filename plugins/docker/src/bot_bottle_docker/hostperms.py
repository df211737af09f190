"""Letting one fixed in-container uid write a host directory, as any host user.

The bundle's daemons run as their own users (fixed uids, see
``bot_bottle_sidecars.layout.DAEMON_USERS``); two host directories are shared
with them read-write (the relay's socket directory, supervise's queue).
``chown`` to those uids needs root, and the host side may run as a normal
user, who must keep owning (and be able to remove) the directory. A POSIX
ACL entry does both: the owner may add ``user:<uid>:rwx`` to its own
directory without privileges, the directory stays the owner's, and no other
uid -- not the bundle's other daemons, not the host user's group -- gains
anything. The ACL is written as the kernel's ``system.posix_acl_access``
extended attribute (no ``setfacl`` binary or libacl needed).

A filesystem without ACLs (rare on Linux hosts) falls back to ``chown`` when
the host side is root, and otherwise to a sticky world-writable directory
with a warning: the host path itself stays private (its parents are 0700),
but inside the bundle every daemon could then write there.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from pathlib import Path

from bot_bottle.log import get_logger

log = get_logger("bot_bottle_docker")

_XATTR = "system.posix_acl_access"
_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_UNDEFINED_ID = 0xFFFFFFFF
_UNSUPPORTED = {errno.ENOTSUP, errno.EOPNOTSUPP}


def _acl(mode: int, uid: int) -> bytes:
    # Entries sorted by tag, as the kernel requires; the mask caps the named
    # entry only (group_obj keeps the directory's group bits).
    entries = [
        (_USER_OBJ, (mode >> 6) & 7, _UNDEFINED_ID),
        (_USER, 7, uid),
        (_GROUP_OBJ, (mode >> 3) & 7, _UNDEFINED_ID),
        (_MASK, 7, _UNDEFINED_ID),
        (_OTHER, mode & 7, _UNDEFINED_ID),
    ]
    return struct.pack("<I", _VERSION) + b"".join(struct.pack("<HHI", *e) for e in entries)


def grant_dir(path: Path, uid: int, gid: int) -> str:
    """Give ``uid`` read, write and search on the directory ``path``.

    Returns how: ``"acl"``, ``"chown"`` or ``"world-writable"``.
    """
    mode = stat.S_IMODE(path.stat().st_mode)
    try:
        os.setxattr(path, _XATTR, _acl(mode, uid))
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
    else:
        return "acl"
    if os.geteuid() == 0:
        os.chown(path, uid, gid)
        return "chown"
    path.chmod(0o1777)
    log.warning(
        "shared_dir_world_writable",
        path=str(path),
        reason="the filesystem has no POSIX ACLs and the host side is not root",
    )
    return "world-writable"


def acl_users(path: Path) -> list[int]:
    """The uids named in ``path``'s access ACL (for tests and diagnostics)."""
    try:
        raw = os.getxattr(path, _XATTR)
    except OSError:
        return []
    out = []
    for off in range(4, len(raw), 8):
        tag, _perm, ident = struct.unpack_from("<HHI", raw, off)
        if tag == _USER:
            out.append(ident)
    return out
