"""The sidecar bundle image: which distributions go in, and how to build it.

    python -m bot_bottle_sidecars.bundle [--base-image REF] [--ca-bundle PEM] [--force]

prints the tag of an up-to-date bundle image, building it when missing (see
:mod:`bot_bottle.images` for how the tag and the wheelhouse are made).
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path

from bot_bottle.errors import BotBottleError
from bot_bottle.images import (
    ImageResult,
    ImageSpec,
    Progress,
    ensure_image,
    extra_ca_from_env,
)

REPOSITORY = "bot-bottle/sidecars"
DEFAULT_BASE_IMAGE = "bot-bottle/base:trixie"
ENV_BASE_IMAGE = "BOT_BOTTLE_BASE_IMAGE"
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
        base_image=base_image or os.environ.get(ENV_BASE_IMAGE) or DEFAULT_BASE_IMAGE,
        extra_ca=extra_ca if extra_ca is not None else extra_ca_from_env(),
    )


def ensure_bundle_image(
    *,
    base_image: str | None = None,
    extra_ca: Path | None = None,
    progress: Progress | None = None,
    force: bool = False,
    no_cache: bool = False,
) -> ImageResult:
    spec = bundle_spec(base_image=base_image, extra_ca=extra_ca)
    return ensure_image(spec, progress=progress, force=force, no_cache=no_cache)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bot_bottle_sidecars.bundle",
        description="Build (or reuse) the sidecar bundle image and print its tag.",
    )
    parser.add_argument("--base-image", help=f"default: ${ENV_BASE_IMAGE} or {DEFAULT_BASE_IMAGE}")
    parser.add_argument(
        "--ca-bundle",
        type=Path,
        help="extra CA bundle (PEM) for builds behind TLS-inspecting proxies "
        "(default: $BOT_BOTTLE_BUILD_CA_BUNDLE)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)

    def progress(line: str) -> None:
        sys.stderr.write(f"  {line}\n")

    try:
        result = ensure_bundle_image(
            base_image=args.base_image, extra_ca=args.ca_bundle, progress=progress, force=args.force
        )
    except BotBottleError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"hint: {exc.hint}\n")
        return 1
    sys.stdout.write(result.tag + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
