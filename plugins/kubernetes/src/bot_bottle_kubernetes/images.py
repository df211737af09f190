"""The bottle's images where the nodes can pull them: ``BOT_BOTTLE_K8S_REGISTRY``.

The Docker backend builds the images locally, content-tagged
(``bot-bottle/sidecars:<fingerprint>``). A cluster's nodes cannot see that
engine, so each is pushed to the registry under the same repository and tag,
and the pods name it **by digest** (``registry/bot-bottle/sidecars@sha256:…``):
what runs is exactly what was built, whatever the tag points at later.
The registry tag the push needed is removed from the local engine again
(the image itself stays, under its own tag).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Mapping

from bot_bottle.errors import BotBottleError
from bot_bottle.termtext import visible

_DIGEST_RE = re.compile(r"digest: (sha256:[0-9a-f]{64})")
_BY_DIGEST_RE = re.compile(r"@sha256:[0-9a-f]{64}$")
#: host[:port][/path]: what a registry reference may start with.
_REGISTRY_RE = re.compile(r"^[a-zA-Z0-9.-]+(:[0-9]{1,5})?(/[a-z0-9._/-]+)?$")

Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1800)


def check_registry(registry: str) -> str:
    """``registry`` without a trailing slash, or a clear error."""
    value = registry.strip().rstrip("/")
    if "://" in value or not _REGISTRY_RE.fullmatch(value):
        raise BotBottleError(
            f"BOT_BOTTLE_K8S_REGISTRY: {visible(registry)!r} is not a registry reference",
            hint="host[:port][/path], e.g. registry.example.com:5000/team (no scheme)",
        )
    return value


def push_image(tag: str, registry: str, *, run: Runner = _run) -> str:
    """Push local image ``tag`` to ``registry``; return its reference by digest."""
    docker = shutil.which("docker")
    if docker is None:
        raise BotBottleError(
            "the docker command is not on PATH", hint="images are built and pushed with Docker"
        )
    registry = check_registry(registry)
    if tag.startswith(f"{registry}/") and _BY_DIGEST_RE.search(tag):
        # Already there, by digest (a snapshot's image, pushed by commit).
        return tag
    repo, sep, version = tag.rpartition(":")
    if not sep or "/" in version:
        repo, version = tag, "latest"
    target = f"{registry}/{repo}:{version}"
    tagged = run([docker, "tag", tag, target])
    if tagged.returncode != 0:
        raise BotBottleError(f"cannot tag {tag} for {registry}: {tagged.stderr.strip()[-300:]}")
    try:
        pushed = run([docker, "push", target])
    finally:
        run([docker, "image", "rm", target])  # the tag only: the image keeps its own
    if pushed.returncode != 0:
        raise BotBottleError(
            f"cannot push {tag} to {registry}: {visible(pushed.stderr.strip()[-300:])}",
            hint="check that the registry is reachable and you are logged in (docker login)",
        )
    found = _DIGEST_RE.search(pushed.stdout)
    if found is None:
        raise BotBottleError(f"the push of {target} reported no digest")
    return f"{registry}/{repo}@{found.group(1)}"


def push_images(tags: Mapping[str, str], registry: str, *, run: Runner = _run) -> dict[str, str]:
    """role -> local tag, pushed; returns role -> reference by digest."""
    return {role: push_image(tag, registry, run=run) for role, tag in tags.items()}
