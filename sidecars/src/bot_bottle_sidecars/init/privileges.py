"""Starting a daemon as its own unprivileged user.

Every daemon of the bundle runs under its own uid (the image creates the
users; ``bot_bottle_sidecars.layout.DAEMON_USERS`` has their ids). That is
what makes per-daemon environment scoping a boundary: ``/proc/<pid>/environ``
of the egress daemon (which holds the real provider tokens) is readable by
its own uid and root only, so a compromised supervise or git-gate cannot read
it, nor the egress CA key or the deploy keys, which init copies into
directories only their daemon's user can read (:func:`private_copy`).

In the child, between ``fork`` and ``exec`` (:func:`drop_privileges`):

1. ``PR_SET_NO_NEW_PRIVS``: no setuid binary or file capability can give
   anything back after ``exec``;
2. every capability leaves the bounding set and the ambient set;
3. supplementary groups are cleared, then gid and uid are set (real,
   effective and saved), which empties the permitted and effective sets;
4. the inheritable set is cleared as well (``capset``), and the switch is
   checked: getting root back must fail.

None of the daemons needs a capability: they listen on ports above 1024 on
loopback and write only their own files.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import pwd
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
#: CAP_LAST_CAP of kernels this is written against; the running kernel's
#: value comes from /proc when it is readable.
_FALLBACK_LAST_CAP = 40


class PrivilegeError(Exception):
    """A daemon cannot be started as its user (the message says why)."""


@dataclass(frozen=True)
class DaemonUser:
    name: str
    uid: int
    gid: int
    home: str


def resolve_user(name: str) -> DaemonUser:
    """The passwd entry of a daemon's user; init must be able to switch to it."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise PrivilegeError(f"no user {name!r} in this image") from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise PrivilegeError(f"user {name!r} is root or in group 0; a daemon must not be")
    if os.geteuid() != 0 and os.geteuid() != entry.pw_uid:
        raise PrivilegeError(
            f"init runs as uid {os.geteuid()}, not root: it cannot start a daemon as {name!r}"
        )
    return DaemonUser(name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    # Loaded in the parent (see prepare), so the child never runs dlopen.
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _last_cap() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return _FALLBACK_LAST_CAP


def prepare() -> int:
    """Work done in the parent so the child between fork and exec stays small."""
    _lib()
    return _last_cap()


def _prctl(option: int, arg: int, what: str, *, tolerate: tuple[int, ...] = ()) -> None:
    libc = _lib()
    if libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        if err not in tolerate:
            raise PrivilegeError(f"{what}: {os.strerror(err)}")


def drop_privileges(user: DaemonUser, last_cap: int) -> None:
    """Become ``user`` for good, with no capability left. Runs in the child."""
    _prctl(_PR_SET_NO_NEW_PRIVS, 1, "no_new_privs")
    if os.geteuid() == 0:
        for cap in range(last_cap + 1):
            # EINVAL: a capability this kernel does not know.
            _prctl(_PR_CAPBSET_DROP, cap, f"dropping capability {cap}", tolerate=(errno.EINVAL,))
    # Kernels before 4.3 have no ambient set (EINVAL): nothing to clear there.
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, "ambient caps", tolerate=(errno.EINVAL,))
    try:
        if os.geteuid() == 0:
            os.setgroups([])
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
    except OSError as exc:
        raise PrivilegeError(f"switching to {user.name}: {exc.strerror}") from None
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _lib().capset(ctypes.byref(header), data) != 0:
        raise PrivilegeError(f"clearing capabilities: {os.strerror(ctypes.get_errno())}")
    # Belt and braces: a privilege switch that can be undone is no switch.
    with contextlib.suppress(PermissionError):
        os.setuid(0)
        raise PrivilegeError(f"{user.name} could become root again")


def private_copy(src: Path, dst: Path, user: DaemonUser | None) -> list[str]:
    """Copy the regular files directly in ``src`` into ``dst`` for ``user`` alone.

    ``dst`` (created when missing; usually a tmpfs the backend mounts) becomes
    owned by the user with mode 0700, each file 0600. Whatever ``dst`` held
    is removed first: the daemon's user could have planted a symlink there,
    so entries are unlinked (never followed) and files are created with
    ``O_EXCL | O_NOFOLLOW``. ``src`` is read as init (root): it sits under a
    root-only directory no daemon can enter. Returns the copied names.
    """
    if not src.is_dir():
        raise PrivilegeError(f"{src} is not a directory")
    dst.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not stat.S_ISDIR(dst.lstat().st_mode):
        raise PrivilegeError(f"{dst} is not a directory")
    for entry in os.scandir(dst):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            Path(entry.path).unlink()
    uid, gid = (user.uid, user.gid) if user is not None else (os.geteuid(), os.getegid())
    os.chown(dst, uid, gid, follow_symlinks=False)
    dst.chmod(0o700)
    copied: list[str] = []
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        if not entry.is_file(follow_symlinks=False):
            continue
        data = Path(entry.path).read_bytes()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(dst / entry.name, flags, 0o600)
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb", closefd=False) as fh:
                fh.write(data)
        finally:
            os.close(fd)
        copied.append(entry.name)
    return copied
