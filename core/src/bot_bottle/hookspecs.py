"""The hook specifications: one registration hook per plugin family.

Every hook returns a list of :class:`Registration` records. Core calls each
plugin's implementation separately, so one plugin raising cannot hide the
others; it flattens the records, sorts them by name and refuses a duplicate
name with an error naming both distributions.

A plugin module should stay cheap to import: ``bot-bottle plugins list``
imports every plugin. Put heavy imports (docker, mitmproxy, ...) behind the
``factory``, which core calls only when the component is used::

    from bot_bottle import Registration, hookimpl

    def _make():
        from my_plugin.detector import MyDetector  # heavy import here
        return MyDetector()

    @hookimpl
    def bot_bottle_register_dlp_detectors():
        return [Registration("my-detector", _make, "finds my company's tokens")]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from bot_bottle.contracts.backend import Backend
    from bot_bottle.contracts.dlp import DlpDetector, RunFinder
    from bot_bottle.contracts.freezer import Freezer
    from bot_bottle.contracts.keys import KeyProvisioner
    from bot_bottle.contracts.provider import AgentProvider

hookspec = pluggy.HookspecMarker("bot_bottle")
hookimpl = pluggy.HookimplMarker("bot_bottle")


@dataclass(frozen=True)
class Registration[T_co]:
    """One component a plugin offers.

    ``name`` is what users select it by; ``factory`` builds the component
    (called lazily, with no arguments); ``description`` is one line for
    ``plugins list``.
    """

    name: str
    factory: Callable[[], T_co]
    description: str = ""


@hookspec
def bot_bottle_register_backends() -> Sequence[Registration[Backend]]:
    """Offer backends (where bottles run).

    Return a list of ``Registration(name, factory, description)`` whose
    factory returns a :class:`~bot_bottle.contracts.backend.Backend`.
    Results of all plugins are combined; names must be unique.

    Example::

        @hookimpl
        def bot_bottle_register_backends():
            return [Registration("docker", DockerBackend, "Docker engine")]
    """
    raise NotImplementedError


@hookspec
def bot_bottle_register_agent_providers() -> Sequence[Registration[AgentProvider]]:
    """Offer agent providers (Claude Code, Codex, ...).

    The registration name is the ``agent_provider.template`` a bottle selects.
    Factories return :class:`~bot_bottle.contracts.provider.AgentProvider`.

    Example::

        @hookimpl
        def bot_bottle_register_agent_providers():
            return [Registration("my-cli", MyCliProvider, "My CLI agent")]
    """
    raise NotImplementedError


@hookspec
def bot_bottle_register_key_provisioners() -> Sequence[Registration[KeyProvisioner]]:
    """Offer deploy-key provisioners (the ``provider`` of a git-gate repo ``key``).

    The name ``static`` is reserved for core's host-file keys. Factories return
    :class:`~bot_bottle.contracts.keys.KeyProvisioner`.

    Example::

        @hookimpl
        def bot_bottle_register_key_provisioners():
            return [Registration("my-forge", MyForgeKeys, "deploy keys on my forge")]
    """
    raise NotImplementedError


@hookspec
def bot_bottle_register_dlp_detectors() -> Sequence[Registration[DlpDetector]]:
    """Offer DLP detectors, used by egress and git-gate alike.

    Names appear in a route's ``dlp.outbound_detectors`` /
    ``inbound_detectors``. Factories return
    :class:`~bot_bottle.contracts.dlp.DlpDetector`.

    Example::

        @hookimpl
        def bot_bottle_register_dlp_detectors():
            return [Registration("my-tokens", MyTokenDetector, "my company's tokens")]
    """
    raise NotImplementedError


@hookspec
def bot_bottle_register_dlp_accelerators() -> Sequence[Registration[RunFinder]]:
    """Offer native run finders for the DLP decoded views (optional: without
    one, the views find their runs in Python, with the same findings).
    Factories return :class:`~bot_bottle.contracts.dlp.RunFinder`; the scan
    uses the first available one, by name.

    Example::

        @hookimpl
        def bot_bottle_register_dlp_accelerators():
            return [Registration("my-runs", MyRunFinder, "runs found in Rust")]
    """
    raise NotImplementedError


@hookspec
def bot_bottle_register_freezers() -> Sequence[Registration[Freezer]]:
    """Offer freezers (commit/resume). A freezer's name is its backend's name.
    Factories return :class:`~bot_bottle.contracts.freezer.Freezer`.

    Example::

        @hookimpl
        def bot_bottle_register_freezers():
            return [Registration("my-vm", MyVmFreezer, "snapshots of my-vm bottles")]
    """
    raise NotImplementedError


#: family name (as shown to users) -> hook name
FAMILIES: dict[str, str] = {
    "backends": "bot_bottle_register_backends",
    "agent_providers": "bot_bottle_register_agent_providers",
    "key_provisioners": "bot_bottle_register_key_provisioners",
    "dlp_detectors": "bot_bottle_register_dlp_detectors",
    "dlp_accelerators": "bot_bottle_register_dlp_accelerators",
    "freezers": "bot_bottle_register_freezers",
}
