"""Freezer: a filtered export of the agent container, imported as an image.

Why not ``docker commit``: it keeps everything the container has -- ``/tmp``,
the bottle CA appended to the system bundles, and the container's
environment, which holds the bottle's env values (prompted and host
secrets among them) -- and deleting paths afterwards only hides them under
a whiteout in a new layer (``docker save`` still shows them). So the agent
container is paused, its filesystem exported (``docker export``: one flat
tar, without the bind mounts -- the workspace is the host's, never frozen),
filtered on the way (see :func:`_filter`) into a private temporary tar
while every file the bottle added or changed (``docker diff``) is scanned,
and imported (``docker import``) with the *image's* own config (user,
workdir, env, entrypoint, cmd), never the container's. A finding stops the
commit before anything is imported. The price: the snapshot is one flat
layer, the size of the whole agent filesystem.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bot_bottle.contracts.freezer import (
    EXCLUDED,
    FileScan,
    Freezer,
    FrozenImage,
    SnapshotRefused,
)
from bot_bottle.errors import BotBottleError
from bot_bottle.log import get_logger
from bot_bottle.secrets import Secret
from bot_bottle.state import home_id, now_iso

if TYPE_CHECKING:
    import docker

#: The label every frozen image carries (and the home that froze it).
L_FROZEN = "bot-bottle.frozen"
#: System CA bundles the providers append the bottle CA to (provider_kit.install_ca).
CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
#: Environment prefixes of the bundle's secret slots (egress tokens and
#: known secrets, git-gate's known secrets).
SECRET_ENV_PREFIXES = ("EGRESS_TOKEN_", "EGRESS_SECRET_", "GITGATE_SECRET_")
#: Files up to this size are scanned in memory; larger ones spill to disk.
_SPOOL = 8 * 1024 * 1024
_CHUNK = 256 * 1024

log = get_logger("bot_bottle_docker.freezer")


def _client() -> docker.DockerClient:
    from bot_bottle_docker.backend import _client as client

    return client()


class DockerFreezer(Freezer):
    name = "docker"
    description = "filtered docker export of the agent container, imported as an image"

    # -- finding a bottle's containers ---------------------------------------------

    def _containers(self, client: docker.DockerClient, slug: str, role: str | None) -> list[Any]:
        from bot_bottle.backend_kit import L_BACKEND, L_HOME, L_ROLE, L_SLUG

        # The freezer's name is its backend's: a subclass for another backend
        # whose bundle runs in Docker (smolmachines) finds that bundle.
        labels = [f"{L_BACKEND}={self.name}", f"{L_SLUG}={slug}", f"{L_HOME}={home_id()}"]
        if role is not None:
            labels.append(f"{L_ROLE}={role}")
        return list(client.containers.list(all=True, filters={"label": labels}))

    def _agent(self, client: docker.DockerClient, slug: str) -> Any:
        found = self._containers(client, slug, "agent")
        if not found:
            raise BotBottleError(
                f"bottle {slug} has no agent container to commit",
                hint="'bot-bottle list active' shows the running bottles",
            )
        return found[0]

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

        client = _client()
        try:
            agent = self._agent(client, slug)
            config = agent.image.attrs.get("Config") or {}
            with tempfile.TemporaryDirectory(prefix="commit-", dir=work_dir()) as tmp:
                tar_path = Path(tmp) / "rootfs.tar"
                with _paused(agent):
                    # Paused first: what the diff names is what the export holds.
                    # Kind 0: changed, 1: added (2: deleted is absent from an export).
                    diff = agent.diff() or []
                    changed = {"/" + c["Path"].lstrip("/") for c in diff if c["Kind"] != 2}
                    ca_pem = _read_file(agent, ca_cert_path)
                    findings = self._export_filtered(
                        agent, tar_path, changed, ca_cert_path, ca_pem, scan
                    )
                if findings:
                    raise SnapshotRefused(findings)
                # The agent runs again while the engine imports.
                return self._import(client, tar_path, ref, config, labels)
        finally:
            client.close()

    def _import(
        self,
        client: docker.DockerClient,
        rootfs: Path,
        ref: str,
        config: Mapping[str, Any],
        labels: Mapping[str, str] | None,
    ) -> FrozenImage:
        """``docker import`` of a filtered, scanned root filesystem tar with
        the agent image's ``config`` (never the container's)."""
        from bot_bottle.backend_kit import L_HOME

        repo, _, tag = ref.partition(":")
        all_labels = {**(labels or {}), L_FROZEN: "true", L_HOME: home_id()}
        client.api.import_image_from_file(
            str(rootfs), repository=repo, tag=tag or "latest", changes=_changes(config, all_labels)
        )
        image = client.images.get(f"{repo}:{tag or 'latest'}")
        return FrozenImage(backend=self.name, ref=image.id or ref, created_at=now_iso())

    def _export_filtered(
        self,
        agent: Any,
        dest: Path,
        changed: set[str],
        ca_cert_path: str,
        ca_pem: bytes | None,
        scan: FileScan,
    ) -> dict[str, list[str]]:
        stream = _ChunkReader(agent.export(chunk_size=_CHUNK))
        return filter_rootfs(stream, dest, changed, ca_cert_path, ca_pem, scan)

    # -- secrets the sidecars hold ---------------------------------------------------

    def bottle_secrets(self, slug: str) -> list[Secret]:
        client = _client()
        try:
            out: list[Secret] = []
            for bundle in self._containers(client, slug, "sidecars"):
                for entry in (bundle.attrs.get("Config") or {}).get("Env") or []:
                    name, _, value = entry.partition("=")
                    if name.startswith(SECRET_ENV_PREFIXES) and value:
                        out.append(Secret(value))
            return out
        finally:
            client.close()

    # -- images ------------------------------------------------------------------

    def exists(self, image: FrozenImage) -> bool:
        import docker.errors

        client = _client()
        try:
            client.images.get(image.ref)
            return True
        except docker.errors.ImageNotFound:
            return False
        finally:
            client.close()

    def in_use(self, image: FrozenImage) -> list[str]:
        from bot_bottle.backend_kit import L_SLUG

        client = _client()
        try:
            # ancestor: containers of the image or of an image built FROM it.
            found = client.containers.list(all=True, filters={"ancestor": image.ref})
            return sorted({str(c.labels.get(L_SLUG) or c.name) for c in found})
        except Exception:
            return []
        finally:
            client.close()

    def frozen_refs(self) -> list[str]:
        from bot_bottle.backend_kit import L_HOME

        client = _client()
        try:
            flt = {"label": [f"{L_FROZEN}=true", f"{L_HOME}={home_id()}"]}
            return sorted(i.id for i in client.images.list(filters=flt) if i.id)
        finally:
            client.close()

    def release(self, slug: str) -> None:
        import docker.errors

        client = _client()
        try:
            for c in self._containers(client, slug, None):
                with contextlib.suppress(docker.errors.NotFound):
                    c.remove(force=True, v=True)
        finally:
            client.close()

    def derive(
        self,
        ref: str,
        recipe: Callable[[str], str],
        *,
        repository: str,
        extra_ca: Path | None,
        progress: Callable[[str], None],
    ) -> str:
        from bot_bottle.imagebuild import ImageSpec
        from bot_bottle.snapshots import work_dir
        from bot_bottle_docker.images import ensure_image, image_user

        # One file per derived image, named after the image it derives from.
        safe = ref.replace("/", "-").replace(":", "-")
        dockerfile = work_dir() / f"derived-{safe}.Dockerfile"
        dockerfile.write_text(recipe(image_user(ref)), encoding="utf-8")
        spec = ImageSpec(
            repository=repository,
            dockerfile=dockerfile,
            distributions=(),
            base_image=ref,
            extra_ca=extra_ca,
        )
        return ensure_image(spec, progress=progress).tag

    def remove(self, image: FrozenImage) -> None:
        import docker.errors

        from bot_bottle.backend_kit import L_HOME
        from bot_bottle.snapshots import L_SNAPSHOT

        client = _client()
        try:
            try:
                frozen = client.images.get(image.ref)
            except docker.errors.ImageNotFound:
                return
            # Images a resume built FROM it (capability blocks) inherit its
            # labels; they go first, a parent with children cannot.
            name = (frozen.labels or {}).get(L_SNAPSHOT)
            if name:
                flt = {"label": [f"{L_SNAPSHOT}={name}", f"{L_HOME}={home_id()}"]}
                for child in client.images.list(filters=flt):
                    if child.id != frozen.id:
                        with contextlib.suppress(docker.errors.ImageNotFound):
                            client.images.remove(child.id, force=True)
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(frozen.id, force=True)
        finally:
            client.close()


# -- helpers -----------------------------------------------------------------------


def filter_rootfs(
    stream: IO[bytes] | io.RawIOBase,
    dest: Path,
    changed: set[str],
    ca_cert_path: str,
    ca_pem: bytes | None,
    scan: FileScan,
) -> dict[str, list[str]]:
    """Copy the root filesystem tar ``stream`` to a new private tar ``dest``
    without :data:`EXCLUDED` content and the bottle CA (the file, and its
    copy in the system bundles), handing every regular file in ``changed``
    to ``scan`` on the way. Returns the findings by path (empty: clean).
    Shared with the freezers of backends whose agent filesystem arrives as
    a tar by other means (smolmachines)."""
    findings: dict[str, list[str]] = {}
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with (
        os.fdopen(fd, "wb") as out,
        tarfile.open(fileobj=stream, mode="r|") as src,
        tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as dst,
    ):
        dropped: set[str] = set()
        for member in src:
            path = _guest_path(member.name)
            if _excluded(path, ca_cert_path) or (
                member.islnk() and _guest_path(member.linkname) in dropped
            ):
                dropped.add(path)
                continue
            if not member.isfile():
                dst.addfile(member)
                continue
            fh = src.extractfile(member)
            assert fh is not None
            if path in CA_BUNDLES and ca_pem:
                data = fh.read().replace(ca_pem, b"")
                member.size = len(data)
                body: Any = io.BytesIO(data)
                found = scan(path, [data]) if path in changed else []
            elif path in changed:
                body = tempfile.SpooledTemporaryFile(_SPOOL, dir=str(dest.parent))  # noqa: SIM115 - closed below
                found = scan(path, _tee(fh, body))
                body.seek(0)
            else:
                dst.addfile(member, fh)
                continue
            if found:
                findings[path] = found
            with contextlib.closing(body):
                dst.addfile(member, body)
    return findings


def _guest_path(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return "/" + name.strip("/")


def _excluded(path: str, ca_cert_path: str) -> bool:
    if path == ca_cert_path:
        return True
    # The directories themselves stay (mode 1777), their content goes.
    return any(path.startswith(d + "/") for d in EXCLUDED)


@contextlib.contextmanager
def _paused(container: Any) -> Iterator[None]:
    """A running agent paused (it cannot write while it is read); a stopped
    (preserved) one as it is."""
    container.reload()
    if container.status != "running":
        yield
        return
    container.pause()
    try:
        yield
    finally:
        container.unpause()


def _tee(src: IO[bytes], copy: Any) -> Iterator[bytes]:
    while chunk := src.read(_CHUNK):
        copy.write(chunk)
        yield chunk


def _read_file(container: Any, path: str) -> bytes | None:
    import docker.errors

    try:
        stream, _ = container.get_archive(path)
    except docker.errors.NotFound:
        return None
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.next()
        fh = tar.extractfile(member) if member is not None else None
        return fh.read() if fh is not None else None


def _changes(config: Mapping[str, Any], labels: Mapping[str, str]) -> list[str]:
    """Dockerfile instructions giving the imported image the agent image's
    own config. Labels of the image's build (fingerprint, managed) are left
    out: the snapshot is not a build cache entry."""
    out: list[str] = []
    for entry in config.get("Env") or []:
        name, _, value = entry.partition("=")
        out.append(f"ENV {name}={json.dumps(value, ensure_ascii=False)}")
    if config.get("User"):
        out.append(f"USER {config['User']}")
    if config.get("WorkingDir"):
        out.append(f"WORKDIR {config['WorkingDir']}")
    if config.get("Entrypoint"):
        out.append(f"ENTRYPOINT {json.dumps(config['Entrypoint'])}")
    if config.get("Cmd"):
        out.append(f"CMD {json.dumps(config['Cmd'])}")
    own = config.get("Labels") or {}
    kept = {k: v for k, v in own.items() if not k.startswith(("bot-bottle.", "org.bot-bottle."))}
    for key, value in {**kept, **labels}.items():
        out.append(f"LABEL {json.dumps(key)}={json.dumps(value, ensure_ascii=False)}")
    return out


class _ChunkReader(io.RawIOBase):
    """A file object over the export's chunk iterator, for ``tarfile``'s stream mode."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n
