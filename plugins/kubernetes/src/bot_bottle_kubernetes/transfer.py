"""Files into and out of a pod: tar over ``pods/exec`` (there is no shared filesystem).

In: the host side builds the tar itself (regular files, directories and
symlinks that stay inside the tree; anything else is refused), and the pod
runs ``head -c SIZE | tar -x``: the size bounds stdin, because the v4 exec
protocol cannot signal end of input.

Out: the pod's tar is untrusted (the agent controls the files), so it is
checked member by member before anything is written: no absolute path, no
``..``, no link leaving the destination, no device or fifo. Then
``tarfile``'s ``data`` filter extracts it, which enforces the same again.
"""

from __future__ import annotations

import io
import os
import posixpath
import shutil
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from bot_bottle.contracts.backend import ExecResult
from bot_bottle.errors import BotBottleError

Exec = Callable[[Sequence[str], bytes | None], ExecResult]


class UnsafeArchiveError(BotBottleError):
    """A tar member would land outside its destination or is not a plain file."""


def pack(src: Path, arcname: str) -> bytes:
    """A tar of ``src`` (file or tree) named ``arcname`` inside, refusing
    symlinks that point out of the tree and special files."""
    src = src.resolve() if not src.is_symlink() else src
    root = src if src.is_dir() else src.parent
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in [src, *sorted(src.rglob("*"))] if src.is_dir() else [src]:
            rel = path.relative_to(src)
            name = arcname if str(rel) == "." else posixpath.join(arcname, rel.as_posix())
            if path.is_symlink():
                target = path.readlink()
                resolved = (path.parent / target).resolve()
                if target.is_absolute() or not resolved.is_relative_to(root.resolve()):
                    raise UnsafeArchiveError(
                        f"refusing to copy {path}: symlink to {target} leaves {root}",
                        hint="copy the target itself, or make the link relative inside the tree",
                    )
            elif not (path.is_file() or path.is_dir()):
                raise UnsafeArchiveError(f"refusing to copy {path}: not a file or directory")
            tar.add(path, arcname=name, recursive=False)
    return buf.getvalue()


def check_members(tar: tarfile.TarFile, dest: Path) -> list[tarfile.TarInfo]:
    """Every member, or :class:`UnsafeArchiveError` naming the first unsafe one."""
    dest = dest.resolve()
    members = tar.getmembers()
    for m in members:
        name = PurePosixPath(m.name)
        if name.is_absolute() or ".." in name.parts:
            raise UnsafeArchiveError(
                f"refusing the archive from the pod: member {m.name!r} escapes the destination",
                hint="the agent controls these files; nothing was written",
            )
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            raise UnsafeArchiveError(
                f"refusing the archive from the pod: {m.name!r} is a device or fifo",
                hint="the agent controls these files; nothing was written",
            )
        if m.issym() or m.islnk():
            base = dest if m.islnk() else (dest / name).parent
            link = PurePosixPath(m.linkname)
            target = (dest / link) if m.islnk() else (base / link)
            if link.is_absolute() or not Path(os.path.normpath(target)).is_relative_to(dest):
                raise UnsafeArchiveError(
                    f"refusing the archive from the pod: link {m.name!r} -> {m.linkname!r} "
                    "points outside the destination",
                    hint="the agent controls these files; nothing was written",
                )
    return members


def unpack(data: bytes, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            check_members(tar, dest)
            tar.extractall(dest, filter="data")
    except tarfile.TarError as e:
        raise UnsafeArchiveError(f"refusing the archive from the pod: {e}") from None


def copy_in(run: Exec, src: Path, dest: str) -> None:
    """Copy host ``src`` to ``dest`` in the pod (a directory's contents land at ``dest``)."""
    parent, base = posixpath.split(dest.rstrip("/") or "/")
    data = pack(src, base or ".")
    script = 'mkdir -p "$1" && head -c "$0" | tar -x -f - -C "$1" --no-same-owner'
    result = run(["sh", "-c", script, str(len(data)), parent or "/"], data)
    if not result.ok:
        raise BotBottleError(
            f"copying {src} into the pod failed (exit {result.exit_code}): "
            f"{result.stderr.decode(errors='replace').strip()[:300]}"
        )


def copy_out(run: Exec, src: str, dest: Path) -> None:
    """Copy pod path ``src`` to host ``dest`` (checked before anything is written)."""
    parent, base = posixpath.split(src.rstrip("/") or "/")
    result = run(["tar", "-c", "-f", "-", "-C", parent or "/", base or "."], None)
    if not result.ok:
        raise BotBottleError(
            f"copying {src} out of the pod failed (exit {result.exit_code}): "
            f"{result.stderr.decode(errors='replace').strip()[:300]}"
        )
    staging = dest.parent / f".{dest.name}.incoming"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        unpack(result.stdout, staging)
        produced = staging / (base or ".")
        if not produced.exists():
            raise BotBottleError(f"the pod's archive of {src} did not contain it")
        produced.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def pull_tree(run: Exec, src: str, dest: Path) -> list[str]:
    """Merge the regular files under pod directory ``src`` into host ``dest``
    (checked as :func:`copy_out` does); return their relative names."""
    result = run(["tar", "-c", "-f", "-", "-C", src, "."], None)
    if not result.ok:
        raise BotBottleError(
            f"reading {src} from the pod failed (exit {result.exit_code}): "
            f"{result.stderr.decode(errors='replace').strip()[:300]}"
        )
    staging = dest.parent / f".{dest.name}.incoming"
    shutil.rmtree(staging, ignore_errors=True)
    moved = []
    try:
        unpack(result.stdout, staging)
        for path in sorted(staging.rglob("*")):
            if path.is_file() and not path.is_symlink():
                rel = path.relative_to(staging)
                (dest / rel).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                path.replace(dest / rel)
                moved.append(rel.as_posix())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return moved
