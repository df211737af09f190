"""Launch-time key handling for git-gate: the seam between plan and keys.

Each repo's private key is written to a staging directory on the host, one
file per repo name with mode 0600; the backend mounts that directory into the
sidecar **read-only** at ``<sidecar root>/keys`` and the daemon copies each
file to a 0600 file it owns (a mount keeps the host's uid and mode).

* ``static``: the key is a file on the host; it is read here, at launch, and
  not at plan time: a key that is made just before the launch (by a script,
  a secrets manager) must not fail a plan checked earlier.
* any other provider is a key-provisioner plugin
  (:class:`~bot_bottle.contracts.keys.KeyProvisioner`): the key is created at
  launch and revoked at teardown. A failed revocation is loud
  (:class:`~bot_bottle.errors.KeyRevocationError`): a key left on the forge
  still grants access after the bottle is gone, so every key is still
  attempted, then the error names each one left behind.
  Every key asked for is recorded in the bottle's state dir first
  (:mod:`bot_bottle.gitgate.ledger`); a record outlives a killed launcher or
  a failed revocation, and ``bot-bottle cleanup`` revokes what it names
  (:func:`bot_bottle.gitgate.ledger.revoke_recorded`).
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
from bot_bottle.gitgate.ledger import KeyLedger, KeyRecord, LedgerEntry, failure_reason
from bot_bottle.gitgate.spec import GitGateError
from bot_bottle.log import get_logger

if TYPE_CHECKING:
    from bot_bottle.contracts.keys import KeyProvisioner, KeyRequest, ProvisionedKey
    from bot_bottle.gitgate.plan import GitGatePlan, KeyPlan
    from bot_bottle.plugins import PluginHost

_FAMILY = "key_provisioners"


@dataclass
class _Issued:
    repo: str
    provisioner: KeyProvisioner
    request: KeyRequest
    key: ProvisionedKey
    entry: LedgerEntry


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
        ledger: KeyLedger | None = None,
    ) -> None:
        self.plan = plan
        self.dest = dest
        self.bottle_slug = bottle_slug
        self._ledger = ledger
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

    @property
    def ledger(self) -> KeyLedger:
        if self._ledger is None:
            from bot_bottle.state import StateDir

            self._ledger = KeyLedger(StateDir.for_slug(self.bottle_slug).path)
        return self._ledger

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
        entry = self.ledger.begin(
            KeyRecord(
                provisioner=provider,
                bottle_slug=self.bottle_slug,
                repo_name=spec.name,
                host=ssh.host,
                path=ssh.path,
                options=dict(key_plan.key.options),
            )
        )
        current = [entry]

        def on_created(key_id: str) -> None:
            current[0] = self.ledger.created(current[0], key_id)

        request = KeyRequest(
            bottle_slug=self.bottle_slug,
            repo_name=spec.name,
            host=ssh.host,
            path=ssh.path,
            options=options,
            on_created=on_created,
        )
        try:
            key = provisioner.create(request)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                # Interrupted mid-request: the forge may have made the key.
                # The record stays; 'cleanup' finds the key by its title.
                raise
            self._settle_failed_create(provisioner, request, current[0], exc)
            if isinstance(exc, BotBottleError):
                raise
            raise GitGateError(
                f"key provisioner {provider!r} failed to create a key for repo "
                f"{spec.name!r}: {type(exc).__name__}",
                hint="check the provisioner's options and that the forge is reachable",
            ) from exc
        if current[0].record.key_id != key.key_id:
            current[0] = self.ledger.created(current[0], key.key_id)
        self._issued.append(_Issued(spec.name, provisioner, request, key, current[0]))
        _log().info("git-gate key provisioned", repo=spec.name, provider=provider)
        return key.private_key.reveal()

    def _settle_failed_create(
        self,
        provisioner: KeyProvisioner,
        request: KeyRequest,
        entry: LedgerEntry,
        exc: Exception,
    ) -> None:
        """``create`` failed: a provisioner promises nothing is left behind,
        but a request that timed out may still have made a key, and a key
        whose id was reported is revoked here to be sure; the record stays
        only while that fails. An error that says the forge refused the
        request (``maybe_created = False``: 401, 404, 422...) needs no search."""
        if entry.record.key_id is None and not getattr(exc, "maybe_created", True):
            self.ledger.done(entry)
            return
        try:
            ids = [entry.record.key_id] if entry.record.key_id else provisioner.find_keys(request)
            for key_id in ids:
                provisioner.revoke(request, key_id)
        except Exception as exc:
            self.ledger.failed(entry, failure_reason(exc))
        else:
            self.ledger.done(entry)

    def close(self) -> None:
        """Revoke provisioned keys (newest first) and remove staged files.

        Raises :class:`KeyRevocationError` naming every key that could not be
        revoked, after trying them all.
        """
        failures: list[str] = []
        while self._issued:
            issued = self._issued.pop()
            try:
                issued.provisioner.revoke(issued.request, issued.key.key_id)
            except Exception as exc:
                reason = failure_reason(exc)
                self.ledger.failed(issued.entry, reason)
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
                self.ledger.done(issued.entry)
                _log().info("git-gate key revoked", repo=issued.repo, key_id=issued.key.key_id)
        while self._written:
            path = self._written.pop()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.paths.clear()
        if failures:
            raise KeyRevocationError(
                "could not revoke git-gate deploy keys: " + "; ".join(failures),
                hint="they still grant access: 'bot-bottle cleanup' retries them, or delete "
                "them on the forge by hand",
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
