"""The bundle's read-only configuration directory, written on the host.

Every backend that runs the bundle mounts a host directory at
:data:`bot_bottle_sidecars.layout.ETC`; this writes what goes in it: the
init plan, egress and git-gate configs (:func:`~bot_bottle_sidecars.layout.bundle_files`),
the bottle's ``egress.upstream_ca``, and the mount points of the tmpfs mounts
nested inside it (a read-only directory cannot get them at run time). No
secret is written here; the modes (who may read it) are the backend's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bot_bottle.errors import BotBottleError
from bot_bottle_sidecars.layout import ETC, UPSTREAM_CA, bundle_files

if TYPE_CHECKING:
    from bot_bottle.contracts.backend import BottlePlan


def write_etc(plan: BottlePlan, etc: Path) -> None:
    """Fill ``etc`` (made 0700 when missing) for bottle ``plan``."""
    etc.mkdir(parents=True, mode=0o700, exist_ok=True)
    # Mount points of the nested tmpfs mounts in the read-only etc/.
    (etc / "ca").mkdir(exist_ok=True)
    (etc / "git-gate" / "keys").mkdir(parents=True, exist_ok=True)
    for rel, text in bundle_files(plan).items():
        path = etc / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if plan.upstream_ca is not None:
        try:
            data = plan.upstream_ca.read_bytes()
        except OSError as exc:
            raise BotBottleError(
                f"cannot read the bottle's egress.upstream_ca {plan.upstream_ca}: {exc.strerror}",
                hint="point upstream_ca at a readable PEM file",
            ) from None
        target = etc / Path(UPSTREAM_CA).relative_to(ETC)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
