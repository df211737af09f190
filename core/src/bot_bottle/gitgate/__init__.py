"""git-gate planning: the pure part that core owns (the daemon that enforces
it lives in the sidecar bundle).

* :mod:`.spec` — :class:`GateRepoSpec` and strict validation of names, upstream
  URLs and pinned host keys.
* :mod:`.config` — the daemon's JSON config (no secret values).
* :mod:`.plan` — :func:`plan_git_gate`: config, agent ``insteadOf`` git config,
  ``known_hosts``, key placement.
* :mod:`.keys` — launch-time key staging (``static`` or a key-provisioner
  plugin) and teardown-time revocation.

The daemon and its hooks live in ``bot_bottle_sidecars.gitgate``.
"""

from __future__ import annotations

from bot_bottle.gitgate.spec import (
    STATIC_PROVIDER,
    GateKey,
    GateRepoSpec,
    GitGateError,
    SshUrl,
    check_host_key,
    check_repo_name,
)

__all__ = [
    "STATIC_PROVIDER",
    "GateKey",
    "GateRepoSpec",
    "GitGateError",
    "SshUrl",
    "check_host_key",
    "check_repo_name",
]
