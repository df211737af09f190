"""The shared-directory grant: the owner, not root, lets one uid in and nobody else."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot_bottle_docker.hostperms import acl_users, grant_dir

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="acting as several uids in one test needs root"
)

OWNER = 60190  # a host user who is not root
DAEMON, OTHER_DAEMON = 60103, 60104
OWNERS_GROUP_MEMBER = 60191


def as_uid(uid: int, gid: int, fn: Callable[[], object]) -> bool:
    """Run ``fn`` in a child with ``uid``/``gid``; True when it raised nothing.

    The child makes a few system calls and exits; it takes no lock another
    thread of the test process (docker SDK pools) could hold.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ok = False
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            fn()
            ok = True
        except BaseException:  # noqa: S110 -- the parent only needs the verdict
            pass
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


@pytest.fixture
def shared() -> Iterator[Path]:
    # Not under pytest's tmp_path: that is root's and 0700, so no other uid
    # could even reach the directory.
    base = Path(tempfile.mkdtemp(prefix="bb-hostperms-"))
    try:
        base.chmod(0o711)
        path = base / "sock"
        path.mkdir(mode=0o700)
        os.chown(path, OWNER, OWNER)
        yield path
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_owner_grants_one_uid_read_write_and_no_one_else(shared: Path) -> None:
    how: list[str] = []

    def grant() -> None:
        how.append(grant_dir(shared, DAEMON, DAEMON))
        assert how[-1] == "acl"

    # The host user, not root, can do it.
    assert as_uid(OWNER, OWNER, grant)
    assert acl_users(shared) == [DAEMON]
    st = shared.stat()
    assert (st.st_uid, st.st_gid) == (OWNER, OWNER)

    assert as_uid(DAEMON, DAEMON, lambda: (shared / "bundle.ready").write_text("x"))
    assert as_uid(DAEMON, DAEMON, lambda: sorted(p.name for p in shared.iterdir()))
    assert not as_uid(OTHER_DAEMON, OTHER_DAEMON, lambda: (shared / "x").write_text("x"))
    assert not as_uid(OTHER_DAEMON, OTHER_DAEMON, lambda: list(shared.iterdir()))
    # The owner's group gains nothing (the directory stays 0700 for it).
    assert not as_uid(OWNERS_GROUP_MEMBER, OWNER, lambda: list(shared.iterdir()))
    # The owner can still remove what the daemon made (teardown).
    assert as_uid(OWNER, OWNER, lambda: (shared / "bundle.ready").unlink())


def test_a_filesystem_without_acls_falls_back_to_chown_for_root(
    shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    def no_acls(*_: object) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", no_acls)
    assert grant_dir(shared, DAEMON, DAEMON) == "chown"
    st = shared.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (DAEMON, DAEMON, 0o700)
