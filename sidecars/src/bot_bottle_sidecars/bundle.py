"""The sidecar bundle image, as data: its Dockerfile and which distributions go in.

A backend builds it from :func:`bundle_spec` (the Docker backend:
``python -m bot_bottle_docker.bundle_image``); :mod:`bot_bottle.imagebuild`
says how the tag and the wheelhouse are made.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from bot_bottle.errors import BotBottleError
from bot_bottle.imagebuild import BASE_IMAGE, ImageSpec, base_image_name, extra_ca_from_env

REPOSITORY = "bot-bottle/sidecars"
DEFAULT_BASE_IMAGE = BASE_IMAGE
CORE_DISTRIBUTIONS = ("bot-bottle", "bot-bottle-sidecars")


def dockerfile() -> Path:
    """The bundle's Dockerfile: packaged in the wheel, or in the source tree."""
    packaged = resources.files("bot_bottle_sidecars") / "Dockerfile"
    if packaged.is_file():
        return Path(str(packaged))
    # Editable install: sidecars/src/bot_bottle_sidecars -> sidecars/Dockerfile.
    source = Path(__file__).resolve().parents[2] / "Dockerfile"
    if source.is_file():
        return source
    raise BotBottleError(
        "the sidecar bundle's Dockerfile is missing from bot-bottle-sidecars",
        hint="reinstall bot-bottle-sidecars",
    )


def detector_distributions() -> tuple[str, ...]:
    """Distributions that provide DLP detectors on this host (third-party included).

    They run inside the bundle (egress and git-gate scan with them), so the
    image must carry them. Drop-in contrib plugins have no distribution and
    are not included.
    """
    from bot_bottle.plugins import PluginHost

    host = PluginHost().load()
    names = {c.distribution for c in host.components("dlp_detectors") if c.distribution}
    return tuple(sorted(names - set(CORE_DISTRIBUTIONS)))


def bundle_spec(
    *, base_image: str | None = None, extra_ca: Path | None = None, plugins: bool = True
) -> ImageSpec:
    return ImageSpec(
        repository=REPOSITORY,
        dockerfile=dockerfile(),
        distributions=CORE_DISTRIBUTIONS + (detector_distributions() if plugins else ()),
        base_image=base_image or base_image_name(),
        extra_ca=extra_ca if extra_ca is not None else extra_ca_from_env(),
    )
