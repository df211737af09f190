"""Build (or reuse) the sidecar bundle image and print its tag.

python -m bot_bottle_docker.bundle_image [--base-image REF] [--ca-bundle PEM] [--force]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bot_bottle.errors import BotBottleError
from bot_bottle.imagebuild import BASE_IMAGE, ENV_BASE_IMAGE
from bot_bottle_docker.images import ensure_bundle_image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bot_bottle_docker.bundle_image",
        description="Build (or reuse) the sidecar bundle image and print its tag.",
    )
    parser.add_argument("--base-image", help=f"default: ${ENV_BASE_IMAGE} or {BASE_IMAGE}")
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
