"""Freezer: the agent VM's filesystem, read in the guest, imported as a Docker image.

Why not ``smolvm pack create``: both of its sources boot a VM. ``--from-vm``
needs the machine stopped (the freezer contract keeps a running bottle
running) and started at least once; ``--image`` boots a temporary "pack VM"
to flatten the image (checked with the real CLI 1.32.2: "agent did not
become ready within 30 seconds" on a host where no guest boots). And this
backend boots its VMs from ``docker save`` archives of Docker images
anyway, so a Docker image is what resume needs: ``plan.agent_image`` is the
frozen image's id, and launch saves and boots it as it does any agent image.

How, with the agent running:

1. In the guest, as root: stop every process of the agent user
   (``pkill -STOP``, twice, for children forked during the first pass), so
   nothing writes while the filesystem is read.
2. One script lists every regular file whose inode changed after the
   launch marker (``find / -xdev -cnewer MARKER``: the change time is one
   the agent cannot set back, unlike the mtime ``touch -d`` sets; the
   marker is root's, made at launch before anything was provisioned) and
   tars the root filesystem (``--one-file-system``: no /proc, /sys, /dev,
   /run) into root's ``/var/lib/bot-bottle``, never a world-writable
   directory (the agent could plant a symlink there for root to write
   through).
3. ``machine cp`` both out; the agent's processes continue (on every exit
   path), the files in the guest are removed.
4. The Docker freezer's filter (:func:`bot_bottle_docker.freezer.filter_rootfs`):
   /tmp and /var/tmp content and the bottle CA dropped, every listed file
   scanned; a finding stops the commit before anything is imported.
5. ``docker import`` with the agent image's own config (user, workdir, env,
   entrypoint), never the VM's environment (it holds the bottle's env values).

A kept (stopped) agent VM is started for the read and stopped again.
Images, their labels, ``exists``/``frozen_refs``/``remove``/``derive`` and
the bundle's secrets are the Docker freezer's (the bundle runs in Docker).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from bot_bottle.contracts.freezer import FileScan, FrozenImage, SnapshotRefused
from bot_bottle.errors import BotBottleError
from bot_bottle.log import get_logger
from bot_bottle.state import home_id
from bot_bottle_docker.freezer import DockerFreezer, filter_rootfs
from bot_bottle_smolmachines.smolvm import Machine, Smolvm, SmolvmError, find_smolvm

log = get_logger("bot_bottle_smolmachines.freezer")

MARK_SCRIPT = 'mkdir -p "${1%/*}" && touch "$1"'
GUEST_DIR = "/var/lib/bot-bottle"
#: Root's file, touched at launch once the VM runs and before launch yields:
#: every file whose inode changed after it was added or changed by the bottle.
MARKER = f"{GUEST_DIR}/launched"
#: The commit's output in the guest: root's directory, left out of the tar.
GUEST_TAR = f"{GUEST_DIR}/commit.tar"
GUEST_LIST = f"{GUEST_DIR}/changed"
#: $1 marker, $2 tar, $3 list. NUL-separated: the agent names its files.
COMMIT_SCRIPT = (
    "set -e\n"
    'find / -xdev -cnewer "$1" -type f ! -path "$2" ! -path "$3" -print0 > "$3"\n'
    'tar --create --file="$2" --one-file-system --numeric-owner --directory=/ '
    '--exclude=".$2" --exclude=".$3" .\n'
)
#: The image a machine was created from (a Docker image ref): its config
#: is the snapshot's, and ``in_use`` finds the bottles booted from a snapshot.
L_IMAGE = "bot-bottle.image"


def mark_argv() -> list[str]:
    return ["sh", "-c", MARK_SCRIPT, "sh", MARKER]


class SmolmachinesFreezer(DockerFreezer):
    name = "smolmachines"
    description = "the agent VM's filesystem, read in the guest, imported as a Docker image"

    # -- finding a bottle ------------------------------------------------------------

    def _machines(self, slug: str | None = None) -> list[Machine]:
        from bot_bottle.backend_kit import L_BACKEND, L_HOME, L_SLUG
        from bot_bottle_smolmachines.backend import NAME

        if find_smolvm() is None:
            return []
        return [
            m
            for m in Smolvm.locate().ls()
            if m.labels.get(L_BACKEND) == NAME
            and m.labels.get(L_HOME) == home_id()
            and (slug is None or m.labels.get(L_SLUG) == slug)
        ]

    # -- commit ----------------------------------------------------------------------

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
        from bot_bottle_docker.backend import _client as docker_client

        found = self._machines(slug)
        if not found:
            raise BotBottleError(
                f"bottle {slug} has no agent VM to commit",
                hint="'bot-bottle list active' shows the running bottles",
            )
        machine = found[0]
        source = machine.labels.get(L_IMAGE)
        if not source:
            raise BotBottleError(
                f"the agent VM of bottle {slug} does not record its image",
                hint="it was launched by an older bot-bottle: commit is not possible",
            )
        cli = Smolvm.locate()
        user = machine.labels.get("bot-bottle.user", "")
        client = docker_client()
        try:
            config = client.images.get(source).attrs.get("Config") or {}
            with tempfile.TemporaryDirectory(prefix="commit-", dir=work_dir()) as tmp:
                tar_path, rootfs = Path(tmp) / "guest.tar", Path(tmp) / "rootfs.tar"
                with _running(cli, machine):
                    changed, ca_pem = self._read_guest(cli, machine.name, user, Path(tmp),
                                                       ca_cert_path)  # fmt: skip
                with tar_path.open("rb") as stream:
                    findings = filter_rootfs(stream, rootfs, changed, ca_cert_path, ca_pem, scan)
                tar_path.unlink()
                if findings:
                    raise SnapshotRefused(findings)
                return self._import(client, rootfs, ref, config, labels)
        finally:
            client.close()

    def _read_guest(
        self, cli: Smolvm, name: str, user: str, tmp: Path, ca_cert_path: str
    ) -> tuple[set[str], bytes | None]:
        """Steps 1-3: the guest tar at ``tmp/guest.tar``; returns the changed
        paths and the bottle CA's PEM (None when it is gone)."""
        try:
            if user:
                for _ in range(2):  # children forked during the first pass
                    cli.exec(name, ["pkill", "-STOP", "-u", user])
            proc = cli.exec(name, ["sh", "-c", COMMIT_SCRIPT, "sh", MARKER, GUEST_TAR, GUEST_LIST])
            if proc.returncode != 0:
                err = proc.stderr.decode("utf-8", "replace").strip()[-300:]
                raise BotBottleError(
                    f"reading the agent VM's filesystem failed (exit {proc.returncode}): "
                    f"{err or 'no output'}"
                )
            cli.cp(f"{name}:{GUEST_TAR}", str(tmp / "guest.tar"))
            cli.cp(f"{name}:{GUEST_LIST}", str(tmp / "changed"))
            ca_pem: bytes | None = None
            with contextlib.suppress(SmolvmError):
                cli.cp(f"{name}:{ca_cert_path}", str(tmp / "ca.pem"))
                ca_pem = (tmp / "ca.pem").read_bytes()
        finally:
            # On every path: the agent runs again, the guest copies go.
            for argv in (["pkill", "-CONT", "-u", user] if user else None,
                         ["rm", "-f", GUEST_TAR, GUEST_LIST]):  # fmt: skip
                if argv is not None:
                    try:
                        cli.exec(name, argv)
                    except SmolvmError as exc:
                        log.warning("commit_cleanup_failed", argv=argv[0], error=str(exc))
        raw = (tmp / "changed").read_bytes()
        changed = {
            "/" + p.decode("utf-8", "surrogateescape").lstrip("/") for p in raw.split(b"\0") if p
        }
        return changed, ca_pem

    # -- bottles and images -------------------------------------------------------------

    def in_use(self, image: FrozenImage) -> list[str]:
        from bot_bottle.backend_kit import L_SLUG

        try:
            machines = self._machines()
        except SmolvmError:
            return []
        return sorted({m.labels.get(L_SLUG) or m.name for m in machines
                       if m.labels.get(L_IMAGE) == image.ref})  # fmt: skip

    def release(self, slug: str) -> None:
        cli = Smolvm.locate() if find_smolvm() is not None else None
        for m in self._machines(slug):
            assert cli is not None
            if m.running:
                cli.stop(m.name)
            cli.delete(m.name)
        super().release(slug)  # the bundle's containers, if any are left


@contextlib.contextmanager
def _running(cli: Smolvm, machine: Machine) -> Iterator[None]:
    """A kept (stopped) VM started for the read and stopped again after."""
    if machine.running:
        yield
        return
    cli.start(machine.name)
    try:
        yield
    finally:
        cli.stop(machine.name)
