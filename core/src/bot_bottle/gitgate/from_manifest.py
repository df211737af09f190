"""Host side: a bottle's git-gate repos from its manifest.

Maps the effective bottle's ``git_gate.repos[]`` (:class:`~bot_bottle.manifest.GitRepo`,
after ``extends:``) onto :class:`~bot_bottle.gitgate.spec.GateRepoSpec`, and the
``key`` block onto :class:`~bot_bottle.gitgate.spec.GateKey`: the seam between
the manifest and :class:`~bot_bottle_sidecars.launch.keys.GateKeys`, which stages the key
at launch (``static``: the host file, read then; a provisioner plugin: created
then, with the options as written next to ``provider:``, and revoked at teardown).

The manifest already validated every field; the gate's own checks run again
in :class:`GateRepoSpec` (its allow-lists are what keep names and URLs out of
generated scripts), and a refusal there names the bottle and the repo.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

from bot_bottle.gitgate.spec import STATIC_PROVIDER, GateKey, GateRepoSpec, GitGateError

if TYPE_CHECKING:
    from bot_bottle.manifest.models import Bottle, GitRepo, KeySpec


def gate_key(key: KeySpec) -> GateKey:
    """The manifest's ``key`` block as git-gate's key seam.

    Provisioner options are passed as written (plain JSON-like data): the
    provisioner's ``options_model`` validates them again at launch. A
    validated model is not dumped instead: a ``SecretStr`` option would dump
    as its mask.
    """
    if key.provider == STATIC_PROVIDER:
        path = key.options.get("path")
        if not isinstance(path, str) or not path:
            raise GitGateError(
                "a static git-gate key needs 'path' (the private key file on the host)",
                hint="key: {provider: static, path: ~/.ssh/my_deploy_key}",
            )
        # '~' stays as written: GateKey.static_path expands it at launch.
        return GateKey(STATIC_PROVIDER, MappingProxyType({"path": path}))
    return GateKey(key.provider, MappingProxyType(dict(key.options)))


def gate_repo_spec(repo: GitRepo, *, bottle: str = "bottle") -> GateRepoSpec:
    """One effective repo as the gate's spec (``url`` kept as written: the
    agent's remotes use that spelling and ``insteadOf`` must match it)."""
    try:
        return GateRepoSpec(
            name=repo.name, url=repo.url.url, host_key=repo.host_key, key=gate_key(repo.key)
        )
    except GitGateError as exc:
        raise GitGateError(
            f"bottle {bottle!r}, git_gate repo {repo.name!r}: {exc.message}", hint=exc.hint
        ) from None


def gate_repo_specs(bottle: Bottle) -> list[GateRepoSpec]:
    """Every repo of the effective bottle, in declaration order."""
    return [gate_repo_spec(repo, bottle=bottle.name) for repo in bottle.repos]
