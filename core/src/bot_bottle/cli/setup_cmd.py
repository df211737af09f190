"""``bot-bottle setup``: make the local base image the bottles build FROM."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    from bot_bottle.contracts.backend import DEFAULT_BACKEND

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
    p.add_argument(
        "--backend", default=DEFAULT_BACKEND, help=f"backend plugin (default: {DEFAULT_BACKEND})"
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from bot_bottle.contracts.backend import BaseImageRequest
    from bot_bottle.plugins import PluginHost

    def progress(line: str) -> None:
        sys.stderr.write(f"  {line}\n")
        sys.stderr.flush()

    # The base image is the engine's business: the backend makes it.
    backend = PluginHost().load().create("backends", args.backend)
    request = BaseImageRequest(
        from_image=args.from_image,
        rootfs=args.rootfs,
        suite=args.suite,
        mirror=args.mirror,
        force=args.force,
    )
    print(backend.setup(request, progress))
    return 0
