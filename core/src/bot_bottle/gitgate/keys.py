"""Launch-time key handling for git-gate: the seam between plan and keys.

Each repo's private key is written to a staging directory on the host, one
file per repo name with mode 0600; the backend mounts that directory into the
sidecar **read-only** at ``<sidecar root>/keys`` and the daemon copies each
file to a 0600 file it owns (a mount keeps the host's uid and mode).

* ``static``: the key is a file on the host; it is read here, at launch, and
  not at plan time (a check at parse time broke keys that exist only at
  launch — LESSONS).
* any other provider is a key-provisioner plugin
  (:class:`~bot_bottle.contracts.keys.KeyProvisioner`): the key is created at
  launch and revoked at teardown. A failed revocation is loud
  (:class:`~bot_bottle.errors.KeyRevocationError`, DESIGN §6 invariant 8):
  every key is still attempted, then the error names each one left behind.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from bot_bottle.errors import BotBottleError, KeyRevocationError
from bot_bottle.gitgate.spec import GitGateError
from bot_bottle.log import get_logger

if TYPE_CHECKING:
    from bot_bottle.contracts.keys import KeyProvisioner, ProvisionedKey
    from bot_bottle.gitgate.plan import GitGatePlan, KeyPlan
    from bot_bottle.plugins import PluginHost

_FAMILY = "key_provisioners"


@dataclass(frozen=True)
class _Issued:
    repo: str
    provisioner: KeyProvisioner
    key: ProvisionedKey


class GateKeys:
    """Stages every repo key of a plan; :meth:`close` revokes and removes them.

    Use as a context manager, or call :meth:`stage` and register
    :meth:`close` with the launch's LIFO teardown.
    """

    def __init__(
        self,
        plan: GitGatePlan,
        dest: Path,
        *,
        bottle_slug: str,
        host: PluginHost | None = None,
        host_factory: Callable[[], PluginHost] | None = None,
    ) -> None:
        self.plan = plan
        self.dest = dest
        self.bottle_slug = bottle_slug
        self._host = host
        self._host_factory = host_factory
        self._issued: list[_Issued] = []
        self._written: list[Path] = []
        self.paths: dict[str, Path] = {}

    def _plugins(self) -> PluginHost:
        if self._host is None:
            if self._host_factory is not None:
                self._host = self._host_factory()
            else:
                from bot_bottle.plugins import PluginHost

                self._host = PluginHost().load()
        return self._host

    def stage(self) -> dict[str, Path]:
        """Write every key to ``dest``; on failure, undo what was done and raise."""
        self.dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            for key_plan in self.plan.keys:
                if key_plan.key.is_static:
                    data = _read_static(key_plan)
                else:
                    data = self._provision(key_plan)
                path = self.dest / key_plan.file_name
                _write_private(path, data)
                self._written.append(path)
                self.paths[key_plan.repo] = path
        except BaseException:
            self.close()
            raise
        return dict(self.paths)

    def _provision(self, key_plan: KeyPlan) -> str:
        from pydantic import ValidationError

        from bot_bottle.contracts.keys import KeyRequest

        spec = next(r for r in self.plan.repos if r.name == key_plan.repo)
        provider = key_plan.key.provider
        provisioner: KeyProvisioner = self._plugins().create(_FAMILY, provider)
        try:
            options = provisioner.options_model.model_validate(dict(key_plan.key.options))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise GitGateError(
                f"git-gate repo {spec.name!r}: key options for {provider!r} are invalid: "
                f"{problems}",
                hint=f"see the documentation of the {provider!r} key provisioner",
            ) from None
        ssh = spec.ssh
        request = KeyRequest(
            bottle_slug=self.bottle_slug,
            repo_name=spec.name,
            host=ssh.host,
            path=ssh.path,
            options=options,
        )
        try:
            key = provisioner.create(request)
        except BotBottleError:
            raise
        except Exception as exc:
            raise GitGateError(
                f"key provisioner {provider!r} failed to create a key for repo "
                f"{spec.name!r}: {type(exc).__name__}",
                hint="check the provisioner's options and that the forge is reachable",
            ) from exc
        self._issued.append(_Issued(spec.name, provisioner, key))
        _log().info("git-gate key provisioned", repo=spec.name, provider=provider)
        return key.private_key.reveal()

    def close(self) -> None:
        """Revoke provisioned keys (newest first) and remove staged files.

        Raises :class:`KeyRevocationError` naming every key that could not be
        revoked, after trying them all.
        """
        failures: list[str] = []
        while self._issued:
            issued = self._issued.pop()
            try:
                issued.provisioner.revoke(issued.key)
            except Exception as exc:
                reason = exc.message if isinstance(exc, BotBottleError) else type(exc).__name__
                failures.append(
                    f"repo {issued.repo!r} ({issued.key.provisioner} key {issued.key.key_id}): "
                    f"{reason}"
                )
                _log().error(
                    "git-gate key NOT revoked",
                    repo=issued.repo,
                    provisioner=issued.key.provisioner,
                    key_id=issued.key.key_id,
                    reason=reason,
                )
            else:
                _log().info("git-gate key revoked", repo=issued.repo, key_id=issued.key.key_id)
        while self._written:
            path = self._written.pop()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.paths.clear()
        if failures:
            raise KeyRevocationError(
                "could not revoke git-gate deploy keys: " + "; ".join(failures),
                hint="delete these keys on the forge by hand: they still grant access",
            )

    def __enter__(self) -> dict[str, Path]:
        return self.stage()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _read_static(key_plan: KeyPlan) -> str:
    path = key_plan.key.static_path
    try:
        data = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GitGateError(
            f"git-gate repo {key_plan.repo!r}: key file {path} does not exist",
            hint="create a deploy key (ssh-keygen -t ed25519 -f PATH) or fix key.path",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a text file"
        raise GitGateError(
            f"git-gate repo {key_plan.repo!r}: cannot read key file {path}: {reason}",
            hint="key.path must name an OpenSSH private key file readable by you",
        ) from None
    if "PRIVATE KEY" not in data:
        # Never echo the content: it may be a secret in the wrong format.
        raise GitGateError(
            f"git-gate repo {key_plan.repo!r}: {path} is not a private key file",
            hint="point key.path at the private key (not the .pub file)",
        )
    return data


def _write_private(path: Path, data: str) -> None:
    # Created 0600 from the start: no window in which another user can read it.
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(data if data.endswith("\n") else data + "\n")


def _log() -> Any:
    return get_logger("bot_bottle.gitgate")
