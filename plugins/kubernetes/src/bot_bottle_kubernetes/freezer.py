"""Freezer: commit a cluster bottle's agent over ``pods/exec``, as a layer on its image.

There is no ``docker commit`` of a pod and no way to export its whole root
filesystem short of streaming gigabytes over a websocket, and the nodes pull
their images from a registry. So, with the agent running (as the
smolmachines freezer does for a VM):

1. At launch (:func:`mark_launch`), before anything is provisioned, root
   touches :data:`MARKER` in the agent container (root's directory; the
   agent cannot set its time back).
2. At commit, root stops every process of every non-root user in the agent
   container (``setpriv --reuid=UID … kill -STOP -1``, twice, for children
   forked during the first pass: the agent container holds no CAP_KILL, so
   root signals them as their own user), then one script lists every
   file, directory and symlink of the container's root filesystem whose
   inode changed after the marker (``find -xdev -cnewer``: the change time
   is one the agent cannot set back; other mounts -- ``/workspace``, the
   kubelet's ``/etc/hosts`` -- are left out by their device) and tars
   exactly those (``--no-recursion``, hard links dereferenced), bounded in
   the pod (``head -c``, the cap :data:`MAX_ENV`). The bottle CA's PEM is
   read too; the agent's processes continue on every exit path.
3. The archive is untrusted (the agent chose the names): a member with an
   absolute path or ``..``, a name that is not a plain path (``a/./b``), a
   relative symlink climbing out of the root, a member under a symlink of
   the same archive, a hard link, a device or a fifo, a name a layer reads
   as a whiteout (``.wh.*``), a PAX record other than those restating the
   header (xattrs) refuses the whole commit before anything is built
   (:func:`check_archive`); so does an archive over the cap.
4. The Docker freezer's filter (:func:`bot_bottle_docker.freezer.filter_rootfs`):
   ``/tmp`` and ``/var/tmp`` content and the bottle CA (the file and its copy
   in the system bundles) dropped, every regular file scanned, and every
   name, symlink target and owner name too (:func:`scan_names`); a finding raises
   :class:`SnapshotRefused` before anything is built or pushed.
5. The local Docker engine builds ``FROM`` the agent pod's own image (by
   digest when it came from the registry) ``ADD`` the filtered archive as
   one layer: the config is the image's own, never the pod's environment.
   With ``BOT_BOTTLE_K8S_REGISTRY`` the image is pushed there
   (:func:`bot_bottle_kubernetes.images.push_image`) and the snapshot's ref
   is the reference **by digest**, which ``resume`` puts in the agent pod
   as it is (no second push); without one it is the local tag, for nodes
   that are given images by hand (``kind load docker-image``).

6. Deletions: in the same stopped window the pod lists every path of its
   root filesystem (``find -xdev``, device and type of each; bounded,
   every name checked as the archive's are, ended by a mark only a clean
   exit of find writes). What the agent deleted is
   (the paths of the pod's image) minus (those now present), the image's
   list read **on the host** from the image itself (``docker create`` +
   ``docker export``, names only: the agent cannot lie about what the image
   held), the topmost path of each deleted tree only, and only under a
   directory on the root filesystem (a mount point's content is not the
   agent's to delete). They become a second layer of OCI whiteouts
   (``.wh.<name>``, names scanned like the others, traversal refused),
   appended by ``docker save`` of the built image, the layer and its
   ``diff_id``/history added to the config, ``docker load``: the engine's
   own layer application removes them; nothing of the agent's image runs
   at build time. A deletion of a path the archive holds, or under one it
   holds as a symlink or file (the archive and the list disagree: the
   whiteout would remove what the agent could only change, or delete
   through the agent's symlink) refuses the commit.

The snapshot holds only what changed, so it is as large as the agent's
changes, not its filesystem.

A pod is not kept stopped as a container is: when the agent exited
non-zero (core calls ``keep_for_resume``), the launch's teardown reads the
changes as step 2-3 do into the preserved state dir (:func:`keep_changes`),
and a later commit (``resume SLUG``) builds from them with the pods gone.
A bottle stopped from outside keeps nothing.
"""

from __future__ import annotations

import io
import os
import posixpath
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from bot_bottle.contracts.backend import ExecResult
from bot_bottle.contracts.freezer import FileScan, Freezer, FrozenImage, SnapshotRefused
from bot_bottle.errors import BotBottleError
from bot_bottle.secrets import Secret
from bot_bottle.state import home_id, now_iso
from bot_bottle.termtext import visible

if TYPE_CHECKING:
    from bot_bottle_kubernetes.cluster import Kube

NAME = "kubernetes"
GUEST_DIR = "/var/lib/bot-bottle"
#: Root's file, touched at launch before anything was provisioned: every
#: inode changed after it was added or changed by the bottle.
MARKER = f"{GUEST_DIR}/launched"
MARK_SCRIPT = 'mkdir -p "${1%/*}" && touch "$1"'
#: $0 signal (STOP or CONT). Each non-root user's processes, signalled as
#: that user (root holds no CAP_KILL in the agent container); PID 1 and the
#: signalling shell are spared by ``kill -1`` itself. The real uid comes from
#: ``status``: ``/proc/PID`` itself is root's for a process that made itself
#: non-dumpable (``prctl``, or running an execute-only binary).
SIGNAL_SCRIPT = (
    "for u in $(sed -n 's/^Uid:[[:space:]]*\\([0-9]*\\).*/\\1/p' /proc/[0-9]*/status "
    "2>/dev/null | sort -u); do "
    '[ "$u" = 0 ] && continue; '
    'setpriv --reuid="$u" --clear-groups -- bash -c \'kill -s "$0" -- -1 2>/dev/null\' "$0"; '
    "done; exit 0"
)
#: $0 marker, $1 byte limit. NUL-separated names (the agent names its files);
#: the device filter keeps other mounts out (``-xdev`` lists their mount points).
COLLECT_SCRIPT = (
    'cd / || exit 3; [ -f "$0" ] || { echo "no launch marker $0" >&2; exit 3; }; '
    "root=$(stat -c %d /); "
    'find . -xdev -mindepth 1 -cnewer "$0" \\( -type f -o -type d -o -type l \\) '
    "-printf '%D:%p\\0' | "
    "while IFS= read -r -d '' e; do "
    'if [ "${e%%:*}" = "$root" ]; then printf \'%s\\0\' "${e#*:}"; fi; done | '
    "tar -c -f - --no-recursion --numeric-owner --hard-dereference --null -T - "
    '2>/dev/null | head -c "$1"'
)
#: $0 byte limit. The root's device, then "DEV TYPE PATH" of every path on
#: the root filesystem (mount points listed, their content not), then
#: :data:`LIST_END` once find finished without error, NUL-separated.
LIST_SCRIPT = (
    "cd / || exit 3; printf '%s\\0' \"$(stat -c %d /)\"; "
    "{ find . -xdev -mindepth 1 -printf '%D %y %p\\0' 2>/dev/null && printf 'end\\0'; } "
    '| head -c "$0"'
)
#: A list cut short (find killed or failing) would read as everything after
#: the cut deleted: whiteouts of files the agent could not delete.
LIST_END = b"end"
#: Paths Docker's init layer adds to every container (``docker export`` holds
#: them; they are no part of the image).
INIT_PATHS = frozenset({".dockerenv", "etc/hosts", "etc/hostname", "etc/resolv.conf",
                        "etc/mtab", "dev/console", "dev/pts", "dev/shm"})  # fmt: skip
WHITEOUT = ".wh."
#: The PAX records that only restate the ustar fields (names are scanned,
#: the rest are numbers); any other (``SCHILY.xattr.*``, ``comment``...)
#: would ride into the layer unscanned.
_PAX_KEYS = frozenset({"path", "linkpath", "size", "mtime", "atime", "ctime",
                       "uid", "gid", "uname", "gname", "hdrcharset"})  # fmt: skip
#: In a preserved bottle's state dir: its agent's changes, kept at teardown.
KEPT = "kubernetes-kept"
KEPT_TAR, KEPT_CA, KEPT_IMAGE = "changes.tar", "ca.pem", "image"
KEPT_LIST = "present.list"
#: The commit's cap, MiB of archive (the agent's changes, not its image).
MAX_ENV = "BOT_BOTTLE_K8S_COMMIT_MAX_MB"
DEFAULT_MAX_MB = 2048
#: The bottle CA is a PEM; anything this large is not.
_CA_LIMIT = 1024 * 1024
#: The frozen image's labels (the Docker freezer lists ``bot-bottle.frozen=true``
#: only, so its cleanup never takes these).
L_FROZEN = "bot-bottle.frozen"
L_HOME = "bot-bottle.home"
L_BACKEND = "bot-bottle.backend"

Exec = Callable[[Sequence[str], bytes | None], ExecResult]


class UnsafeCommitError(BotBottleError):
    """The agent pod's archive holds a member that could land outside the image's root."""


def mark_argv() -> list[str]:
    return ["sh", "-c", MARK_SCRIPT, "mark", MARKER]


def mark_launch(run: Exec) -> bool:
    """Touch the launch marker (root's, before provisioning). False: commit
    will not be possible for this bottle; the bottle itself is fine."""
    try:
        return run(mark_argv(), None).ok
    except BotBottleError:
        return False


def max_bytes(environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    raw = (env.get(MAX_ENV) or "").strip() or str(DEFAULT_MAX_MB)
    if not raw.isdigit() or int(raw) < 1:
        raise BotBottleError(
            f"{MAX_ENV}: {visible(raw)!r} is not a number of MiB", hint="e.g. 2048"
        )
    return int(raw) * 1024 * 1024


def _err(result: ExecResult) -> str:
    return visible(result.stderr.decode("utf-8", "replace").strip()[-300:]) or "no output"


def read_changes(run: Exec, limit: int, ca_cert_path: str) -> tuple[bytes, bytes, bytes | None]:
    """Steps 2 and 6: the agent's processes stopped, the archive of what
    changed since the marker and the listing of what is present (each at
    most ``limit`` bytes, else refused) and the bottle CA's PEM (None when
    it is gone); the processes continue on every path."""
    try:
        for _ in range(2):  # children forked during the first pass
            stopped = run(["bash", "-c", SIGNAL_SCRIPT, "STOP"], None)
            if not stopped.ok:
                raise BotBottleError(f"stopping the agent's processes failed: {_err(stopped)}")
        got = run(["bash", "-c", COLLECT_SCRIPT, MARKER, str(limit + 1)], None)
        if not got.ok:
            hint = (
                "the bottle was launched before commit was possible on this backend"
                if got.exit_code == 3
                else None
            )
            raise BotBottleError(
                f"reading the agent pod's changes failed (exit {got.exit_code}): {_err(got)}",
                hint=hint,
            )
        if len(got.stdout) > limit:
            raise UnsafeCommitError(
                f"refusing to commit: the agent's changes exceed {limit // (1024 * 1024)} MiB",
                hint=f"remove large files in the bottle, or raise {MAX_ENV}",
            )
        listed = run(["bash", "-c", LIST_SCRIPT, str(limit + 1)], None)
        if not listed.ok:
            raise BotBottleError(f"listing the agent pod's files failed: {_err(listed)}")
        if len(listed.stdout) > limit:
            raise UnsafeCommitError(
                f"refusing to commit: the agent pod's file list exceeds "
                f"{limit // (1024 * 1024)} MiB",
                hint=f"remove files in the bottle, or raise {MAX_ENV}",
            )
        ca = run(["head", "-c", str(_CA_LIMIT), ca_cert_path], None)
        ca_pem = ca.stdout if ca.ok and ca.stdout else None
        return got.stdout, listed.stdout, ca_pem
    finally:
        try:
            cont = run(["bash", "-c", SIGNAL_SCRIPT, "CONT"], None)
            if not cont.ok:
                import sys

                sys.stderr.write(f"warning: the agent's processes may still be stopped: "
                                 f"{_err(cont)}\n")  # fmt: skip
        except BotBottleError as e:
            import sys

            sys.stderr.write(f"warning: the agent's processes may still be stopped: {e.message}\n")


def _kept_dir(slug: str) -> Path:
    from bot_bottle.state import StateDir

    return StateDir.for_slug(slug).path / KEPT


def keep_changes(run: Exec, slug: str, image: str, progress: Callable[[str], None]) -> bool:
    """At the teardown of a bottle whose agent exited non-zero (core marks it
    kept): its changes, read as a commit reads them, into the preserved
    state dir (private), since the pod goes. ``commit``/``resume SLUG``
    build from them; ``release`` removes them. Never raises: the teardown
    goes on."""
    from bot_bottle.contracts.provider import GUEST_CA_PATH

    kept = _kept_dir(slug)
    if not kept.parent.is_dir():
        progress(f"warning: {slug}: no state dir to keep the agent's changes in")
        return False
    try:
        data, listing, ca_pem = read_changes(run, max_bytes(), GUEST_CA_PATH)
        check_archive(data)
        parse_listing(listing)
        kept.mkdir(mode=0o700, exist_ok=True)
        for name, body in ((KEPT_TAR, data), (KEPT_CA, ca_pem or b""),
                           (KEPT_IMAGE, image.encode()), (KEPT_LIST, listing)):  # fmt: skip
            fd = os.open(kept / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
    except Exception as e:  # the teardown must go on, whatever broke
        import shutil

        shutil.rmtree(kept, ignore_errors=True)
        why = e.message if isinstance(e, BotBottleError) else f"{type(e).__name__}: {e}"
        progress(f"warning: {slug}: the agent's changes could not be kept for resume: "
                 f"{visible(why)}")  # fmt: skip
        return False
    progress(f"{slug}: the agent's changes were kept for 'bot-bottle resume {slug}'")
    return True


def _read_kept(slug: str) -> tuple[bytes, bytes | None, bytes | None, str] | None:
    kept = _kept_dir(slug)
    try:
        data = (kept / KEPT_TAR).read_bytes()
        ca_pem = (kept / KEPT_CA).read_bytes() or None
        image = (kept / KEPT_IMAGE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    try:
        listing: bytes | None = (kept / KEPT_LIST).read_bytes()
    except OSError:
        listing = None  # kept by a version that listed nothing: no deletions
    return data, listing, ca_pem, image


def _refuse(name: str, why: str) -> UnsafeCommitError:
    return UnsafeCommitError(
        f"refusing to commit: the agent pod's archive member {visible(name, limit=200)!r} {why}",
        hint="the agent controls these files; nothing was built or pushed",
    )


def check_archive(data: bytes) -> set[str]:
    """Every member checked (see the module doc); returns the guest paths of
    the regular files (all of them changed: only changed files are in it)."""
    files: set[str] = set()
    links: set[str] = set()
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            members = tar.getmembers()
    except tarfile.TarError as e:
        raise UnsafeCommitError(
            f"refusing to commit: the agent pod's archive is broken: {e}"
        ) from None
    for m in members:
        name = m.name
        while name.startswith("./"):
            name = name[2:]
        parts = PurePosixPath(name).parts
        if not name or name.startswith("/") or ".." in parts:
            raise _refuse(m.name, "escapes the image's root")
        if name.rstrip("/") != "/".join(parts):
            # "a/./b", "a//b": the scan's list of changed files holds the
            # plain name, the copy into the layer matches the raw one, so
            # such a file would go into the layer unscanned.
            raise _refuse(m.name, "is not a plain path")
        if parts[-1].startswith(WHITEOUT):
            # A layer would read it as a deletion the agent never made.
            raise _refuse(m.name, "is named as a layer whiteout")
        if set(m.pax_headers) - _PAX_KEYS:
            # Re-emitted into the layer unscanned (xattrs: applied by Docker).
            raise _refuse(m.name, "carries extended headers (xattrs?) the pod's tar never writes")
        if m.islnk():
            raise _refuse(m.name, "is a hard link (the pod's tar dereferences them)")
        if not (m.isfile() or m.isdir() or m.issym()):
            raise _refuse(m.name, "is a device, fifo or socket")
        for i in range(1, len(parts)):
            if posixpath.join(*parts[:i]) in links:
                raise _refuse(m.name, "lies under a symlink of the same archive")
        path = posixpath.join(*parts)
        if m.issym():
            target = m.linkname
            # An absolute target resolves inside the image's root; a relative
            # one must not climb above it.
            if not target.startswith("/"):
                resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
                if resolved == ".." or resolved.startswith("../"):
                    raise _refuse(m.name, f"is a symlink to {visible(target)!r} out of the root")
            links.add(path)
        elif m.isfile():
            files.add("/" + path)
    return files


def _guest(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return "/" + name.strip("/")


def scan_names(data: bytes, scan: FileScan) -> dict[str, list[str]]:
    """The names and symlink targets of the archive (checked already), which
    the layer holds as text too: an agent could park a token in either."""
    findings: dict[str, list[str]] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for m in tar.getmembers():
            path = _guest(m.name)
            # The owner names are text the layer keeps too (empty from the
            # pod's --numeric-owner tar; a hostile pod's are its choice).
            text = "\n".join([path, m.linkname if m.issym() else "", m.uname, m.gname])
            found = scan(path, [text.encode("utf-8", "surrogateescape")])
            if found:
                findings[path] = found
    return findings


def build_image(
    base: str, layer: Path, tag: str, labels: Mapping[str, str], *, docker: str = "docker"
) -> str:
    """``FROM base`` + ``ADD layer /`` with ``labels``, tagged ``tag``; returns the image id."""
    import json

    ctx = layer.parent
    lines = [f"FROM {base}", f"ADD {layer.name} /"]
    lines += [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in sorted(labels.items())]
    (ctx / "Dockerfile").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (ctx / ".dockerignore").write_text("*\n!" + layer.name + "\n", encoding="utf-8")
    built = subprocess.run(
        [docker, "build", "--quiet", "--force-rm", "--tag", tag, "--file",
         str(ctx / "Dockerfile"), str(ctx)],
        capture_output=True, text=True, check=False, timeout=3600,
    )  # fmt: skip
    if built.returncode != 0:
        raise BotBottleError(
            f"building the snapshot image FROM {visible(base)} failed: "
            f"{visible(built.stderr.strip()[-400:])}",
            hint="the agent pod's image must be pullable here (the registry reachable, "
            "or the image in the local engine)",
        )
    return built.stdout.strip().splitlines()[-1] if built.stdout.strip() else tag


class Listing:
    """What the pod said is present (step 6), every name checked."""

    def __init__(self, present: set[str], dirs: set[str]) -> None:
        #: Every path on the root filesystem, mount points included.
        self.present = present
        #: The directories on the root filesystem's own device (a mount
        #: point's content is not listed, so never counts as deleted).
        self.dirs = dirs


def _relative(raw: str, what: str) -> str:
    name = raw
    while name.startswith("./"):
        name = name[2:]
    parts = PurePosixPath(name).parts
    if not name or name.startswith("/") or ".." in parts or "." in name.split("/"):
        raise UnsafeCommitError(
            f"refusing to commit: {what} {visible(raw, limit=200)!r} escapes the image's root",
            hint="the agent controls these files; nothing was built or pushed",
        )
    return posixpath.join(*parts)


def parse_listing(data: bytes) -> Listing:
    """The pod's ``LIST_SCRIPT`` output, untrusted: a malformed entry, a
    name with ``..`` or a missing :data:`LIST_END` refuses the whole commit."""
    entries = data.split(b"\0")
    if entries and entries[-1] == b"":
        entries.pop()
    if not entries or not entries[0].isdigit():
        raise UnsafeCommitError("refusing to commit: the agent pod's file list is broken")
    if len(entries) < 2 or entries[-1] != LIST_END:
        raise UnsafeCommitError(
            "refusing to commit: the agent pod's file list is incomplete "
            "(its find did not finish cleanly)",
            hint="a short list would delete the files after the cut; nothing was built or pushed",
        )
    root_dev = entries[0]
    present: set[str] = set()
    dirs: set[str] = set()
    for entry in entries[1:-1]:
        dev, kind, raw = [*entry.split(b" ", 2), b"", b""][:3]
        if not dev.isdigit() or len(kind) != 1 or not raw:
            raise UnsafeCommitError(
                "refusing to commit: the agent pod's file list is broken",
                hint="the agent controls these files; nothing was built or pushed",
            )
        path = _relative(raw.decode("utf-8", "surrogateescape"), "the agent pod's listed path")
        present.add(path)
        if kind == b"d" and dev == root_dev:
            dirs.add(path)
    return Listing(present, dirs)


def image_paths(image: str, *, docker: str = "docker") -> set[str]:
    """Every path of ``image``'s filesystem, read on the host from the image
    itself (a created container, never started, exported), without Docker's
    init-layer paths."""
    created = _quiet([docker, "create", "--network", "none", image, "true"])
    if created.returncode != 0:
        raise BotBottleError(
            f"reading the files of {visible(image)} failed: "
            f"{visible(created.stderr.strip()[-300:])}"
        )
    cid = created.stdout.strip()
    paths: set[str] = set()
    try:
        with subprocess.Popen([docker, "export", cid], stdout=subprocess.PIPE) as proc:
            assert proc.stdout is not None
            try:
                with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                    for m in tar:
                        name = m.name.strip("/")
                        while name.startswith("./"):
                            name = name[2:]
                        if name and name not in INIT_PATHS:
                            paths.add(name)
            except tarfile.TarError as e:
                raise BotBottleError(f"reading the files of {visible(image)} failed: {e}") from None
            if proc.wait() != 0:
                raise BotBottleError(f"exporting the files of {visible(image)} failed")
    finally:
        _quiet([docker, "rm", "--force", cid])
    return paths


def archive_kinds(data: bytes) -> dict[str, bool]:
    """The archive's members (relative paths): True for a directory (a name
    held twice is one only if every copy is)."""
    kinds: dict[str, bool] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for m in tar.getmembers():
            path = _guest(m.name)[1:]
            kinds[path] = kinds.get(path, True) and m.isdir()
    return kinds


def deletions(
    image: set[str], listing: Listing, archived: Mapping[str, bool] | None = None
) -> list[str]:
    """What the agent deleted: in the image, gone from the pod, the topmost
    of each deleted tree, under a directory of the root filesystem.

    ``archived``: the changes layer's members (:func:`archive_kinds`). A
    deletion of one of them, or under one that is a symlink or file, means
    the archive and the listing disagree (a hostile or racing pod): the
    whiteout would remove what the agent could only change, or delete
    through a symlink it made, so the commit is refused."""
    archived = archived or {}
    out = []
    for path in image - listing.present:
        parent = posixpath.dirname(path)
        if not parent or parent in listing.dirs:
            if path in archived:
                raise _refuse(path, "is in the changes, yet the pod lists it as deleted")
            parts = path.split("/")
            for i in range(1, len(parts)):
                if archived.get("/".join(parts[:i])) is False:
                    raise _refuse(
                        "/".join(parts[:i]),
                        "is not a directory, yet the pod lists a deletion under it",
                    )
            out.append(path)
    return sorted(out)


def whiteout_layer(paths: Sequence[str], out: Path) -> None:
    """An OCI layer of whiteouts (``DIR/.wh.NAME``) for ``paths``; a path
    with ``..`` or an absolute one refuses the commit."""
    with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for raw in paths:
            path = _relative(raw, "the deleted path")
            head, base = posixpath.split(path)
            if base.startswith(WHITEOUT):
                raise _refuse(raw, "is itself a whiteout name")
            info = tarfile.TarInfo(posixpath.join(head, WHITEOUT + base))
            info.mode = 0o600
            tar.addfile(info)


def append_layer(image: str, layer: Path, tag: str, *, docker: str = "docker") -> None:
    """``image`` with ``layer`` on top, loaded as ``tag``: ``docker save``,
    the layer and its ``diff_id`` and history added to the config,
    ``docker load``. The engine applies the layer (whiteouts included) as
    for any pulled image; nothing of the image runs."""
    import hashlib
    import json

    work = layer.parent
    saved, loaded = work / "saved.tar", work / "loaded.tar"
    got = _quiet([docker, "save", "--output", str(saved), image], timeout=3600)
    if got.returncode != 0:
        raise BotBottleError(f"saving the snapshot image failed: {visible(got.stderr[-300:])}")
    digest = hashlib.sha256()
    with layer.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    diff_id = "sha256:" + digest.hexdigest()
    with tarfile.open(saved, mode="r:") as src, tarfile.open(loaded, mode="w") as dst:
        manifest = json.loads(_member(src, "manifest.json"))
        if len(manifest) != 1:
            raise BotBottleError("the saved snapshot image holds more than one image")
        config = json.loads(_member(src, manifest[0]["Config"]))
        config["rootfs"]["diff_ids"].append(diff_id)
        config.setdefault("history", []).append(
            {"created": now_iso(), "created_by": "bot-bottle: the agent's deletions",
             "comment": "whiteouts"}
        )  # fmt: skip
        body = json.dumps(config, separators=(",", ":")).encode()
        config_name = hashlib.sha256(body).hexdigest() + ".json"
        layer_name = digest.hexdigest() + "/layer.tar"
        for m in src.getmembers():
            # Without an OCI index, every engine loads by manifest.json.
            if m.name in ("manifest.json", "repositories", "index.json", "oci-layout"):
                continue
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        _add(dst, config_name, io.BytesIO(body), len(body))
        with layer.open("rb") as fh:
            _add(dst, layer_name, fh, layer.stat().st_size)
        entry = {"Config": config_name, "RepoTags": [tag],
                 "Layers": [*manifest[0]["Layers"], layer_name]}  # fmt: skip
        doc = json.dumps([entry]).encode()
        _add(dst, "manifest.json", io.BytesIO(doc), len(doc))
    saved.unlink()
    got = _quiet([docker, "load", "--quiet", "--input", str(loaded)], timeout=3600)
    loaded.unlink()
    if got.returncode != 0:
        raise BotBottleError(f"loading the snapshot image failed: {visible(got.stderr[-300:])}")


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    fh = tar.extractfile(name)
    if fh is None:
        raise BotBottleError(f"the saved snapshot image has no {name}")
    return fh.read()


def _add(tar: tarfile.TarFile, name: str, fh: Any, size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o644
    tar.addfile(info, fh)


def _docker() -> str:
    import shutil

    docker = shutil.which("docker")
    if docker is None:
        raise BotBottleError(
            "the docker command is not on PATH",
            hint="snapshots of cluster bottles are built with the local Docker engine",
        )
    return docker


class KubernetesFreezer(Freezer):
    name = NAME
    description = "the agent pod's changes over pods/exec, a layer on its image, pushed by digest"

    def _kube(self, *, timeout: float = 30.0) -> Kube:
        from bot_bottle_kubernetes.backend import KubernetesBackend

        return KubernetesBackend()._connect(timeout=timeout)

    def _agent_pod(self, kube: Kube, slug: str) -> dict[str, Any]:
        from bot_bottle_kubernetes.render import L_HOME as HOME
        from bot_bottle_kubernetes.render import L_SLUG, names

        pod = kube.get("Pod", names(slug)["agent"])
        labels = ((pod or {}).get("metadata") or {}).get("labels") or {}
        phase = ((pod or {}).get("status") or {}).get("phase")
        # The home label is there when the launch set one; the slug always is.
        if pod is None or labels.get(L_SLUG) != slug or labels.get(HOME, home_id()) != home_id():
            raise BotBottleError(
                f"bottle {slug} has no agent pod in namespace {kube.namespace} to commit",
                hint="'bot-bottle list active' shows the running bottles; a cluster bottle "
                "is committed while it runs",
            )
        if phase != "Running":
            raise BotBottleError(
                f"the agent pod of bottle {slug} is {phase or 'not running'}: nothing to commit",
                hint="a cluster bottle is committed while it runs",
            )
        return pod

    # -- commit ------------------------------------------------------------------

    def commit(
        self,
        slug: str,
        *,
        ref: str,
        scan: FileScan,
        ca_cert_path: str,
        labels: Mapping[str, str] | None = None,
    ) -> FrozenImage:
        from bot_bottle.snapshots import work_dir
        from bot_bottle_docker.freezer import filter_rootfs
        from bot_bottle_kubernetes.images import push_image
        from bot_bottle_kubernetes.launcher import AGENT_CONTAINER

        limit = max_bytes()
        registry = _registry()
        docker = _docker()
        kept = _read_kept(slug)
        if kept is not None:
            # Preserved after a non-zero exit: its pods are gone, its changes kept.
            data, listing, ca_pem, base = kept
            _needs_registry(slug, base, registry)
        else:
            kube = self._kube()
            pod = self._agent_pod(kube, slug)
            containers = {c["name"]: c for c in pod["spec"]["containers"]}
            base = str(containers[AGENT_CONTAINER]["image"])
            pod_name = str(pod["metadata"]["name"])
            _needs_registry(slug, base, registry)

            def run(argv: Sequence[str], stdin: bytes | None) -> ExecResult:
                return kube.exec(pod_name, AGENT_CONTAINER, argv, stdin=stdin, timeout=1800)

            data, listing, ca_pem = read_changes(run, limit, ca_cert_path)
        changed = check_archive(data)
        archived = archive_kinds(data)
        present = parse_listing(listing) if listing is not None else None
        all_labels = {**(labels or {}), L_FROZEN: NAME, L_HOME: home_id(), L_BACKEND: NAME}
        with tempfile.TemporaryDirectory(prefix="commit-", dir=work_dir()) as tmp:
            layer = Path(tmp) / "changes.tar"
            findings = filter_rootfs(io.BytesIO(data), layer, changed, ca_cert_path, ca_pem, scan)
            for path, found in scan_names(data, scan).items():
                findings.setdefault(path, []).extend(found)
            del data
            if findings:
                raise SnapshotRefused(findings)
            built = build_image(base, layer, ref, all_labels, docker=docker)
            try:
                gone = (
                    deletions(image_paths(base, docker=docker), present, archived)
                    if present
                    else []
                )
            except BaseException:
                _quiet([docker, "image", "rm", ref])
                raise
            for path in gone:
                # From the image's own list, but the layer holds them as text too.
                found = scan("/" + path, [("/" + path).encode("utf-8", "surrogateescape")])
                if found:
                    findings.setdefault("/" + path, []).extend(found)
            if findings:
                _quiet([docker, "image", "rm", ref])
                raise SnapshotRefused(findings)
            if gone:
                whiteouts = Path(tmp) / "deletions.tar"
                whiteout_layer(gone, whiteouts)
                append_layer(built, whiteouts, ref, docker=docker)
                # The build's image is this commit's own once nothing tags it.
                tags = _quiet([docker, "image", "inspect", "--format", "{{len .RepoTags}}", built])
                if tags.stdout.strip() == "0":
                    _quiet([docker, "image", "rm", built])
        if registry is None:
            return FrozenImage(backend=self.name, ref=ref, created_at=now_iso())
        pushed = push_image(ref, registry)
        return FrozenImage(backend=self.name, ref=pushed, created_at=now_iso())

    # -- secrets the bundle holds -------------------------------------------------

    def bottle_secrets(self, slug: str) -> list[Secret]:
        from bot_bottle_kubernetes.pending_back import cluster_secrets

        try:
            kube = self._kube(timeout=10.0)
        except BotBottleError:
            return []
        return cluster_secrets(kube, slug)

    # -- images ------------------------------------------------------------------

    def exists(self, image: FrozenImage) -> bool:
        docker = _docker()
        if "@sha256:" in image.ref:
            argv = [docker, "manifest", "inspect", "--insecure", image.ref]
        else:
            argv = [docker, "image", "inspect", image.ref]
        return _quiet(argv).returncode == 0

    def in_use(self, image: FrozenImage) -> list[str]:
        from bot_bottle_kubernetes.launcher import AGENT_CONTAINER
        from bot_bottle_kubernetes.render import L_SLUG as LABEL_SLUG
        from bot_bottle_kubernetes.render import label_selector

        try:
            kube = self._kube(timeout=10.0)
            pods = kube.list("Pod", label_selector(role="agent"))
        except BotBottleError:
            return []
        out = set()
        for pod in pods:
            for c in (pod.get("spec") or {}).get("containers") or []:
                if c.get("name") == AGENT_CONTAINER and c.get("image") == image.ref:
                    out.add(str(pod["metadata"].get("labels", {}).get(LABEL_SLUG) or ""))
        return sorted(s for s in out if s)

    def frozen_refs(self) -> list[str]:
        # The registry's copies have no listing here (a registry's catalog is
        # not per home), so ``cleanup`` finds no dangling snapshot image of
        # this backend; ``snapshots rm`` removes what a record names.
        return []

    def release(self, slug: str) -> None:
        import shutil

        shutil.rmtree(_kept_dir(slug), ignore_errors=True)

    def remove(self, image: FrozenImage) -> None:
        """The local image (by its tag, or the id the registry's manifest names);
        the registry's copy stays (deleting from a registry is the operator's)."""
        docker = _docker()
        local = image.ref
        if "@sha256:" in image.ref:
            import json

            got = _quiet([docker, "manifest", "inspect", "--insecure", image.ref])
            try:
                local = str(json.loads(got.stdout)["config"]["digest"])
            except (ValueError, KeyError, TypeError):
                return
        got = _quiet([docker, "image", "inspect", "--format",
                      "{{json .Config.Labels}}", local])  # fmt: skip
        import json

        try:
            found = json.loads(got.stdout or "null") or {}
        except ValueError:
            return
        if found.get(L_FROZEN) != NAME or found.get(L_HOME) != home_id():
            return
        from bot_bottle.snapshots import L_SNAPSHOT

        name = found.get(L_SNAPSHOT)
        if name:
            # Images a resume derived from it (capability blocks) go first.
            kids = _quiet([docker, "image", "ls", "--quiet", "--no-trunc", "--filter",
                           f"label={L_SNAPSHOT}={name}", "--filter", f"label={L_HOME}={home_id()}",
                           "--filter", f"label={L_FROZEN}=derived"])  # fmt: skip
            for kid in kids.stdout.split():
                _quiet([docker, "image", "rm", "--force", kid])
        _quiet([docker, "image", "rm", "--force", local])

    def derive(
        self,
        ref: str,
        recipe: Callable[[str], str],
        *,
        repository: str,
        extra_ca: Path | None,
        progress: Callable[[str], None],
    ) -> str:
        """The Docker freezer's build (content-tagged, cached) ``FROM`` the
        snapshot's local image, then pushed like the snapshot when a registry
        is set: the resumed pod names it by digest."""
        from bot_bottle_docker.freezer import DockerFreezer
        from bot_bottle_kubernetes.images import push_image

        tag = DockerFreezer().derive(
            ref, recipe, repository=repository, extra_ca=extra_ca, progress=progress
        )
        registry = _registry()
        return push_image(tag, registry) if registry else tag


def _needs_registry(slug: str, base: str, registry: str | None) -> None:
    if "@sha256:" in base and registry is None:
        raise BotBottleError(
            f"bottle {slug}'s agent image comes from a registry; the snapshot must go there too",
            hint="set BOT_BOTTLE_K8S_REGISTRY as for the launch",
        )


def _registry() -> str | None:
    """``BOT_BOTTLE_K8S_REGISTRY`` as the launch reads it (None: unset)."""
    from bot_bottle_kubernetes.images import check_registry
    from bot_bottle_kubernetes.prepared import ENV_PREFIX

    raw = (os.environ.get(ENV_PREFIX + "REGISTRY") or "").strip()
    return check_registry(raw) if raw else None


def _quiet(argv: list[str], *, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
