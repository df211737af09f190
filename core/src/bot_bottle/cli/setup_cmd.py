"""``bot-bottle setup``: make the local base image the bottles build FROM."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "setup",
        help="create the local base image (debootstrap, an existing image, or a rootfs tarball)",
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--from-image",
        metavar="REF",
        help="tag this image as the base (pulled first if the engine lacks it), "
        "e.g. debian:trixie-slim",
    )
    how.add_argument("--rootfs", type=Path, metavar="TAR", help="import this rootfs tarball")
    p.add_argument("--suite", default=None, help="Debian suite for debootstrap (default trixie)")
    p.add_argument("--mirror", default=None, help="Debian mirror for debootstrap")
    p.add_argument("--force", action="store_true", help="recreate it even if it exists")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from bot_bottle import baseimage
    from bot_bottle.dockerhost import DockerUnreachable, image_exists
    from bot_bottle.errors import BotBottleError

    target = baseimage.image_name()

    def progress(line: str) -> None:
        sys.stderr.write(f"  {line}\n")
        sys.stderr.flush()

    try:
        present = image_exists(target)
    except DockerUnreachable as exc:
        raise BotBottleError(str(exc), hint=baseimage.engine_hint()) from None
    if present and not args.force:
        print(f"base image {target} already present")
        return 0
    if args.from_image:
        baseimage.from_image(args.from_image, target, progress)
    elif args.rootfs is not None:
        baseimage.from_rootfs(args.rootfs, target, progress)
    else:
        baseimage.debootstrap(
            target,
            progress,
            suite=args.suite or baseimage.DEFAULT_SUITE,
            mirror=args.mirror or baseimage.DEFAULT_MIRROR,
        )
    print(f"base image {target} created")
    return 0
