"""The local base image every bot-bottle Dockerfile builds FROM.

``bot-bottle/base:trixie`` (or ``$BOT_BOTTLE_BASE_IMAGE``) is a minimal Debian
trixie root filesystem. bot-bottle never pulls it: many of the machines it
runs on reach no container registry. ``bot-bottle setup`` makes it one of
three ways, and says which ones this host can use:

* ``debootstrap`` (Linux, as root, with Debian's ``debootstrap``; Debian and
  Ubuntu ship it, Fedora and Arch package it too): a ``--variant=minbase``
  root filesystem from a Debian mirror, ``docker import``-ed. Needs the
  mirror, not a registry. About 30 s.
* ``--from-image REF``: tag an image the engine already has, or can pull
  from a registry it reaches (``debian:trixie-slim``). The way on macOS
  (Docker Desktop, colima) and on any host whose engine can pull.
* ``--rootfs TAR``: ``docker import`` a root filesystem tarball made
  elsewhere (e.g. by debootstrap on another machine).

Building it from a Dockerfile is not offered: every Dockerfile starts
``FROM`` some image, so with no registry and no local image there is
nothing to start from.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bot_bottle.errors import BotBottleError
from bot_bottle.imagebuild import BASE_IMAGE, ENV_BASE_IMAGE, base_image_name

DEFAULT_IMAGE = BASE_IMAGE
ENV_IMAGE = ENV_BASE_IMAGE
DEFAULT_SUITE = "trixie"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
IMPORT_CHANGES = ("ENV LANG=C.UTF-8", 'CMD ["/bin/bash"]')


def image_name(environ: Mapping[str, str] | None = None) -> str:
    return base_image_name(environ)


@dataclass(frozen=True)
class Host:
    """What the hints depend on."""

    system: str  # platform.system(): Linux, Darwin, ...
    distro: str  # os-release ID (debian, ubuntu, fedora, arch, ...), "" elsewhere
    like: tuple[str, ...] = ()

    @classmethod
    def detect(cls, os_release: Path = Path("/etc/os-release")) -> Host:
        fields: dict[str, str] = {}
        try:
            for line in os_release.read_text().splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    fields[key.strip()] = value.strip().strip('"')
        except OSError:
            pass
        like = tuple(fields.get("ID_LIKE", "").split())
        return cls(platform.system(), fields.get("ID", ""), like)

    def family(self) -> str:
        if self.system == "Darwin":
            return "macos"
        ids = (self.distro, *self.like)
        for fam in ("debian", "ubuntu", "fedora", "rhel", "arch", "suse", "alpine"):
            if fam in ids:
                return "debian" if fam == "ubuntu" else ("fedora" if fam == "rhel" else fam)
        return "linux" if self.system == "Linux" else self.system.lower()


#: family -> (install the Docker engine, install debootstrap or None)
_HINTS: dict[str, tuple[str, str | None]] = {
    "debian": ("sudo apt-get install docker.io && sudo systemctl start docker",
               "sudo apt-get install debootstrap"),
    "fedora": ("sudo dnf install moby-engine && sudo systemctl start docker",
               "sudo dnf install debootstrap"),
    "arch": ("sudo pacman -S docker && sudo systemctl start docker",
             "sudo pacman -S debootstrap"),
    "suse": ("sudo zypper install docker && sudo systemctl start docker", None),
    "alpine": ("sudo apk add docker && sudo rc-service docker start", "sudo apk add debootstrap"),
    "macos": ("install Docker Desktop, or 'brew install colima docker && colima start'", None),
}  # fmt: skip


def engine_hint(host: Host | None = None) -> str:
    fam = (host or Host.detect()).family()
    hint = _HINTS.get(fam, ("install Docker Engine (docs.docker.com/engine/install)", None))[0]
    return f"start the Docker engine, or install it: {hint}; or point DOCKER_HOST at a running one"


def setup_hint(host: Host | None = None) -> str:
    """How this host can make the base image (for ``doctor``)."""
    h = host or Host.detect()
    fam = h.family()
    pull = "bot-bottle setup --from-image debian:trixie-slim (needs a registry the engine reaches)"
    if fam == "macos":
        return pull
    deboot = _HINTS.get(fam, ("", None))[1]
    if shutil.which("debootstrap"):
        return "sudo bot-bottle setup (debootstrap from a Debian mirror); or " + pull
    if deboot:
        return f"{deboot}, then sudo bot-bottle setup; or {pull}"
    return pull


Progress = Callable[[str], None]


def _docker(*args: str, stdin: int | None = None, input_: bytes | None = None) -> str:
    docker = shutil.which("docker")
    if docker is None:
        raise BotBottleError(
            "the docker command-line client is not installed",
            hint="install the Docker CLI (Debian: docker.io; macOS: Docker Desktop, "
            "or 'brew install docker')",
        )
    proc = subprocess.run(
        [docker, *args], stdin=stdin, input=input_, capture_output=True, check=False
    )
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-500:]
        raise BotBottleError(f"docker {args[0]} failed: {err}")
    return proc.stdout.decode(errors="replace").strip()


def from_image(source: str, target: str, progress: Progress) -> None:
    """Tag ``source`` as ``target``, pulling it first when the engine lacks it."""
    from bot_bottle_docker.dockerhost import image_exists

    if not image_exists(source):
        progress(f"pulling {source} ...")
        try:
            _docker("pull", source)
        except BotBottleError as exc:
            raise BotBottleError(
                f"cannot get {source}: {exc.message}",
                hint="the engine reaches no registry with it: use debootstrap "
                "(sudo bot-bottle setup) or --rootfs TAR instead",
            ) from None
    _docker("tag", source, target)


def from_rootfs(tar: Path, target: str, progress: Progress) -> None:
    if not tar.is_file():
        raise BotBottleError(f"{tar} is not a file", hint="pass a root filesystem tarball")
    progress(f"importing {tar} as {target} ...")
    changes = [a for c in IMPORT_CHANGES for a in ("--change", c)]
    with tar.open("rb") as fh:
        _docker("import", *changes, "-", target, stdin=fh.fileno())


def debootstrap(
    target: str, progress: Progress, *, suite: str = DEFAULT_SUITE, mirror: str = DEFAULT_MIRROR
) -> None:
    """What scripts/base-image.sh does: minbase rootfs, then ``docker import``."""
    tool = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None
    )
    if tool is None:
        raise BotBottleError("debootstrap is not installed", hint=setup_hint())
    if os.geteuid() != 0:
        raise BotBottleError("debootstrap needs root", hint="rerun as root: sudo bot-bottle setup")
    with tempfile.TemporaryDirectory(prefix="bot-bottle-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        log = Path(tmp) / "debootstrap.log"
        progress(f"debootstrapping Debian {suite} (minbase) from {mirror} ...")
        with log.open("wb") as fh:
            proc = subprocess.run(
                [tool, "--variant=minbase", "--include=ca-certificates",
                 suite, str(rootfs), mirror],
                stdout=fh, stderr=subprocess.STDOUT, check=False,
            )  # fmt: skip
        if proc.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise BotBottleError(
                "debootstrap failed: " + " | ".join(tail),
                hint="check the mirror (--mirror) and the network, or use --from-image / --rootfs",
            )
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        progress(f"importing as {target} ...")
        changes = [a for c in IMPORT_CHANGES for a in ("--change", c)]
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            assert tar.stdout is not None
            _docker("import", *changes, "-", target, stdin=tar.stdout.fileno())
        finally:
            if tar.stdout is not None:
                tar.stdout.close()
            tar.wait()
