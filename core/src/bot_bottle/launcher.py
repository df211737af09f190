"""Launch orchestration: plan -> prepare -> launch -> provision -> attach/run -> teardown.

Used by ``bot-bottle start`` and ``bot-bottle run``. SIGTERM is turned into
KeyboardInterrupt for the whole launch, so Ctrl-C and SIGTERM in any phase
(image build, launch, provision, attach) unwind the backend's LIFO teardown.
State: ``~/.bot-bottle/state/<slug>/metadata.json`` is written before
anything is created (so ``cleanup`` can tell an owned bottle from an orphan),
removed at a clean end, kept with a preserve marker when the agent exits
non-zero. Deploy keys the teardown could not revoke stay recorded there
(``deploy-keys/``): the state dir is kept, and the launch ends with a
:class:`~bot_bottle.errors.KeyRevocationError` (non-zero exit) naming them,
so ``cleanup`` can retry.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from bot_bottle.errors import BotBottleError, KeyRevocationError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from bot_bottle.contracts.backend import Backend, PreparedBottle, RunningBottle
    from bot_bottle.contracts.provider import AgentProvider, ProvisionContext
    from bot_bottle.plan import BottlePlan


@dataclass
class LaunchReport:
    exit_code: int = 0
    #: phase -> seconds (images, files, containers, sidecars_ready, provision, agent, teardown)
    timings: dict[str, float] = field(default_factory=dict)
    preserved: bool = False


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_backend(backend: Backend) -> None:
    """Fail before anything is created when the backend cannot run here."""
    available = backend.is_available()
    if not available.ok:
        raise BotBottleError(
            f"backend {backend.name!r} is not available: {available.detail}",
            hint=available.hint or "run 'bot-bottle doctor'",
        )


def provision_context(
    plan: BottlePlan, options: BaseModel | None = None, *, workdir: str | None = None
) -> ProvisionContext:
    from bot_bottle.contracts.provider import GUEST_CA_PATH, ProvisionContext

    return ProvisionContext(
        plan=plan.provider_plan,
        ca_cert_path=GUEST_CA_PATH,
        supervise_url=plan.supervise_url,
        skills=plan.skills,
        prompt=plan.prompt,
        label=plan.label,
        git_config=plan.git_config,
        options=options,
        workdir=workdir,
    )


def provision_bottle(provider: AgentProvider, bottle: RunningBottle, ctx: ProvisionContext) -> None:
    """The provider's provisioning, then what every bottle needs whatever its
    provider: the git config that routes declared remotes through git-gate."""
    from bot_bottle import provider_kit as kit

    provider.provision(bottle, ctx)
    kit.apply_git_config(bottle, ctx)


def execute(
    plan: BottlePlan,
    *,
    backend: Backend,
    provider: AgentProvider,
    mode: Literal["attach", "run"],
    argv: Sequence[str] = (),
    prompt: str | None = None,
    options: BaseModel | None = None,
    on_ready: Callable[[RunningBottle], None] | None = None,
    prepared: PreparedBottle | None = None,
) -> LaunchReport:
    """Run one bottle to the end; return the agent's exit code and timings.

    In ``run`` mode, ``argv`` (a command as the agent user) wins; otherwise the
    provider's headless argv runs on ``prompt``. ``prepared`` is what
    ``backend.prepare(plan)`` returned when the caller showed it already
    (``start``'s preflight); otherwise it is prepared here.
    """
    from bot_bottle.state import StateDir, now_iso

    report = LaunchReport()
    t_prepare = time.monotonic()
    with sigterm_as_interrupt():
        check_backend(backend)
        if prepared is None:
            prepared = backend.prepare(plan)
        state = StateDir.for_slug(plan.slug)
        state.create(
            {
                "slug": plan.slug,
                "agent": plan.agent,
                "bottle": plan.bottle,
                "backend": plan.backend,
                "provider": plan.provider,
                "cwd": str(plan.cwd) if plan.cwd else None,
                "label": plan.label,
                "started_at": now_iso(),
                "pid": os.getpid(),
                "mode": mode,
                "bottle_manifest": plan.bottle_manifest,
                "snapshot": plan.snapshot,
            }
        )
        report.timings["prepare"] = time.monotonic() - t_prepare
        code: int | None = None
        t_down = time.monotonic()
        unrevoked: list[str] = []
        try:
            t0 = time.monotonic()
            with backend.launch(prepared) as bottle:
                report.timings.update(bottle.timings)
                report.timings["launch"] = time.monotonic() - t0
                t = time.monotonic()
                ctx = provision_context(plan, options, workdir=prepared.workdir)
                provision_bottle(provider, bottle, ctx)
                report.timings["provision"] = time.monotonic() - t
                # A backend may boot its sidecars while the provider provisions.
                bottle.wait_ready()
                report.timings.update(bottle.timings)
                report.timings["ready"] = time.monotonic() - t0
                if on_ready is not None:
                    on_ready(bottle)
                t = time.monotonic()
                if mode == "attach":
                    code = bottle.attach(provider.interactive_argv(ctx))
                else:
                    code = bottle.run(list(argv) or provider.headless_argv(ctx, prompt or ""))
                report.timings["agent"] = time.monotonic() - t
                if code != 0:
                    # Preserved for a resume: the backend keeps the agent's
                    # filesystem (stopped) instead of removing it.
                    bottle.keep_for_resume()
                    state.keep_routes()
                t_down = time.monotonic()
            report.timings["teardown"] = time.monotonic() - t_down
        finally:
            unrevoked = _unrevoked_keys(state.path)
            if code is not None and code != 0:
                state.preserve(f"agent exited with {code}")
                report.preserved = True
            elif not unrevoked and not state.pending:
                # (pending: the backend could not finish; cleanup retries from it)
                state.remove()
        report.exit_code = code if code is not None else 1
        if unrevoked:
            raise KeyRevocationError(
                "the bottle is gone but these deploy keys could not be revoked and still "
                "grant access: " + "; ".join(unrevoked),
                hint="run 'bot-bottle cleanup' to retry (it lists them first), or delete "
                "them on the forge by hand",
            )
    return report


def _unrevoked_keys(state_path: Any) -> list[str]:
    from bot_bottle.gitgate.ledger import KeyLedger

    return [
        e.record.describe() + (f" ({e.record.error})" if e.record.error else "")
        for e in KeyLedger(state_path).entries()
    ]
