"""Freezer: ``docker commit`` of a running bottle's agent container."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot_bottle.contracts.freezer import Freezer, FrozenImage
from bot_bottle.errors import BotBottleError
from bot_bottle.state import now_iso

if TYPE_CHECKING:
    from bot_bottle.contracts.backend import RunningBottle


class DockerFreezer(Freezer):
    name = "docker"
    description = "docker commit of the agent container"

    def commit(self, bottle: RunningBottle, *, ref: str) -> FrozenImage:
        from bot_bottle_docker.running import DockerRunningBottle

        if not isinstance(bottle, DockerRunningBottle):
            raise BotBottleError("the docker freezer can only commit docker bottles")
        # /tmp and /var/tmp are scratch space: emptied in the snapshot only
        # would need a second container, so they are cleared through a copy
        # of the filesystem diff -- here we rely on docker commit (the agent's
        # tmp files are kept; documented in the README as a known gap).
        repo, _, tag = ref.partition(":")
        image = bottle.container.commit(
            repository=repo, tag=tag or None, pause=True, changes=["LABEL bot-bottle.frozen=true"]
        )
        return FrozenImage(backend="docker", ref=image.id or ref, created_at=now_iso())

    def remove(self, image: FrozenImage) -> None:
        import docker

        client = docker.from_env()
        try:
            client.images.remove(image.ref)
        finally:
            client.close()
