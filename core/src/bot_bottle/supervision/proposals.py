"""Proposals across bottles: list, show, approve, reject.

Every decision is written to the audit log first (a decision that cannot be
recorded is not applied), then takes effect, then is answered in the queue,
where the agent's next ``capability-status`` poll sees it. An egress-route
approval whose live reload fails stays pending, so the operator can retry.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot_bottle import audit
from bot_bottle.contracts.backend import EgressControl
from bot_bottle.contracts.supervise import (
    CapabilityBlockPayload,
    Decision,
    EgressRoutePayload,
    Proposal,
    ProposalStatus,
    QueueError,
    Response,
    check_proposal_id,
)
from bot_bottle.errors import BotBottleError
from bot_bottle.supervision import capabilities, live_egress
from bot_bottle.supervision.bottles import BottleInfo, list_bottles

if TYPE_CHECKING:
    from bot_bottle.plugins import PluginHost

#: slug -> the running bottle's live egress (None: not running here).
ControlFor = Callable[[str], EgressControl | None]


@dataclass(frozen=True)
class ProposalView:
    bottle: BottleInfo
    proposal: Proposal
    status: ProposalStatus
    response: Response | None

    @property
    def id(self) -> str:
        return self.proposal.id

    @property
    def summary(self) -> str:
        p = self.proposal.payload
        if isinstance(p, EgressRoutePayload):
            return f"allow {p.host}"
        first = next((ln for ln in p.dockerfile.splitlines() if ln.strip()), "")
        return first[:80]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "bottle": self.bottle.slug,
            "agent": self.bottle.agent,
            "tool": self.proposal.tool,
            "status": self.status.value,
            "created_at": self.proposal.created_at.isoformat(),
            "payload": self.proposal.payload.model_dump(mode="json"),
            "response": self.response.model_dump(mode="json") if self.response else None,
        }


def list_proposals(
    *, status: ProposalStatus | None = None, home: Path | None = None
) -> tuple[list[ProposalView], list[str]]:
    """Every proposal of every bottle, newest first, and the problems found
    (a broken queue file is reported, never hides the others)."""
    views: list[ProposalView] = []
    problems: list[str] = []
    for bottle in list_bottles(home):
        queue = bottle.queue()
        for pid in queue.proposal_ids():
            try:
                state = queue.state(pid)
                proposal = queue.load_proposal(pid)
            except QueueError as exc:
                problems.append(f"{bottle.slug}: {exc.message}")
                continue
            if status is None or state.status is status:
                views.append(ProposalView(bottle, proposal, state.status, state.response))
    views.sort(key=lambda v: v.proposal.created_at, reverse=True)
    return views, problems


def find_proposal(proposal_id: str, *, home: Path | None = None) -> ProposalView:
    check_proposal_id(proposal_id)
    for bottle in list_bottles(home):
        queue = bottle.queue()
        if proposal_id in queue.proposal_ids():
            state = queue.state(proposal_id)
            return ProposalView(
                bottle, queue.load_proposal(proposal_id), state.status, state.response
            )
    raise QueueError(
        f"no proposal {proposal_id} in any bottle's queue",
        hint="'bot-bottle proposals list' shows the proposals of the running bottles",
    )


def proposed_route(view: ProposalView) -> dict[str, Any]:
    payload = view.proposal.payload
    if not isinstance(payload, EgressRoutePayload):
        raise BotBottleError(f"proposal {view.id} is not an egress request")
    return payload.route()


def diff(view: ProposalView, control: EgressControl | None = None) -> str:
    """The change as a unified diff against what the bottle has now."""
    payload = view.proposal.payload
    if isinstance(payload, CapabilityBlockPayload):
        before = [
            line
            for entry in _recorded(view.bottle)
            for line in str(entry.get("dockerfile", "")).splitlines()
        ]
        after = before + payload.dockerfile.splitlines()
        label = "capabilities.json (approved snippets)"
    else:
        before: list[str] = []
        label = "egress routes (hosts)"
        if control is None:
            label += " [current table unknown: the bottle is not running here]"
        else:
            try:
                before = sorted(r.host for r in live_egress.load_config(control).routes)
            except BotBottleError as exc:
                label += f" [current table unreadable: {exc.message}]"
        after = sorted({*before, payload.host})
    lines = difflib.unified_diff(before, after, f"{label} now", f"{label} approved", lineterm="")
    return "\n".join(lines)


def _recorded(bottle: BottleInfo) -> list[dict[str, Any]]:
    try:
        return capabilities.read_capabilities(bottle.state_dir)
    except BotBottleError:
        return []


def effect_notice(view: ProposalView) -> str:
    """What approving will do, for the operator to read first."""
    if view.proposal.tool == "capability-block":
        return "Approving: " + capabilities.EFFECT_SHORT + "; the running bottle does not change."
    host = proposed_route(view).get("host")
    return (
        f"Approving: {host} is added to the bottle's egress routes now (live reload, no restart)."
    )


def approve(
    proposal_id: str,
    *,
    comment: str = "",
    dockerfile: str | None = None,
    route: dict[str, Any] | None = None,
    control_for: ControlFor | None = None,
    plugins: PluginHost | None = None,
    home: Path | None = None,
) -> Response:
    """Approve (optionally edited: ``dockerfile`` or ``route``); apply; answer."""
    view = find_proposal(proposal_id, home=home)
    _check_pending(view)
    queue = view.bottle.queue()
    slug = view.bottle.slug
    if view.proposal.tool == "capability-block":
        payload = view.proposal.payload
        assert isinstance(payload, CapabilityBlockPayload)
        if dockerfile is not None:
            CapabilityBlockPayload(dockerfile=dockerfile, justification=payload.justification)
        text = dockerfile if dockerfile is not None else payload.dockerfile
        audit.record(
            "proposal.approve",
            bottle=slug,
            proposal=proposal_id,
            tool=view.proposal.tool,
            edited=dockerfile is not None,
            comment=comment or None,
        )
        from bot_bottle.contracts.supervise import now

        capabilities.record_capability(
            view.bottle.state_dir, proposal_id, text, at=now(), comment=comment
        )
        return queue.respond(
            proposal_id,
            Decision.APPROVED,
            comment=comment,
            dockerfile=dockerfile,
            effect=capabilities.EFFECT,
        )
    spec = route if route is not None else proposed_route(view)
    if route is not None:
        _check_edited_route(view, route)
    control = (control_for or default_control_for(plugins))(slug)
    if control is None:
        raise BotBottleError(
            f"bottle {slug} is not running here, so its egress cannot change",
            hint="reject the proposal, or approve it while the bottle runs",
        )
    audit.record(
        "proposal.approve",
        bottle=slug,
        proposal=proposal_id,
        tool=view.proposal.tool,
        edited=route is not None,
        comment=comment or None,
    )
    change = live_egress.allow(
        control, spec, plugins=plugins, comment=comment or None, proposal=proposal_id
    )
    return queue.respond(
        proposal_id,
        Decision.APPROVED,
        comment=comment,
        route=change.after,
        effect=f"Approved: {change.host} is in this bottle's egress routes now; retry the "
        "request (no restart needed). See 'route' for exactly what was allowed.",
    )


def _check_edited_route(view: ProposalView, route: dict[str, Any]) -> None:
    # An edit may narrow the agent's request, never name a different host:
    # the operator approves what the agent asked for.
    asked = proposed_route(view)["host"]
    if str(route.get("host", "")).rstrip(".").lower() != asked:
        raise BotBottleError(
            f"the edited route names {route.get('host')!r}, not the requested {asked}",
            hint="to allow another host use 'bot-bottle egress allow'",
        )


def reject(proposal_id: str, *, comment: str, home: Path | None = None) -> Response:
    if not comment.strip():
        raise BotBottleError(
            "a rejection needs a comment", hint="tell the agent why (--comment TEXT)"
        )
    view = find_proposal(proposal_id, home=home)
    _check_pending(view)
    audit.record(
        "proposal.reject",
        bottle=view.bottle.slug,
        proposal=proposal_id,
        tool=view.proposal.tool,
        comment=comment,
    )
    return view.bottle.queue().respond(proposal_id, Decision.REJECTED, comment=comment)


def _check_pending(view: ProposalView) -> None:
    if view.status is not ProposalStatus.PENDING:
        raise QueueError(
            f"proposal {view.id} was already {view.status.value}",
            hint="a decision is final; the agent can make a new proposal",
        )


def default_control_for(plugins: PluginHost | None = None) -> ControlFor:
    """Look the bottle's backend up in its metadata, then ask that backend.

    Plugins are loaded once and each running bottle's control is kept: the
    console asks again every few seconds (slugs are unique per launch, so a
    kept control never names another bottle)."""
    found: dict[str, EgressControl] = {}
    loaded: list[PluginHost] = [plugins] if plugins is not None else []

    def control_for(slug: str) -> EgressControl | None:
        from bot_bottle.supervision.bottles import find_bottle

        if slug in found:
            return found[slug]
        if not loaded:
            from bot_bottle.plugins import PluginHost

            loaded.append(PluginHost().load())
        host = loaded[0]
        bottle = find_bottle(slug)
        names = [c.name for c in host.components("backends")]
        if bottle is not None and bottle.backend in names:
            names = [bottle.backend]
        for name in names:
            backend = host.create("backends", name)
            if not backend.is_available().ok:
                continue
            control = backend.egress_control(slug)
            if control is not None:
                found[slug] = control
                return control
        return None

    return control_for


def dumps(view: ProposalView) -> str:
    return json.dumps(view.as_json(), indent=2)
