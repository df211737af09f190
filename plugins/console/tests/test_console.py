"""The console driven by Textual's Pilot: the real app, real queue files, a
real egress daemon behind the bottle (conftest)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Footer, Static, TextArea

from bot_bottle import audit
from bot_bottle.contracts.supervise import (
    CapabilityBlockPayload,
    EgressRoutePayload,
    ProposalStatus,
)
from bot_bottle.supervision.capabilities import read_capabilities
from bot_bottle.termtext import is_unsafe
from bot_bottle_console.app import AgentsScreen, EgressScreen, SuperviseApp

from .conftest import SLUG, World

pytestmark = [pytest.mark.timeout(120), pytest.mark.anyio]


def _app(world: World) -> SuperviseApp:
    return SuperviseApp(
        home=world.home,
        control_for=lambda slug: world.control if slug == SLUG else None,
        plugins=world.plugins,
    )


async def _until(pilot: Pilot[Any], cond: Callable[[], Any], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.05)


def _detail(app: SuperviseApp) -> str:
    return str(app.query_one("#detail-text", Static).render())


def _screen_text(app: SuperviseApp) -> str:
    return app.export_screenshot()


def _capability(world: World, dockerfile: str = "RUN apt-get install -y jq\n") -> str:
    payload = CapabilityBlockPayload(dockerfile=dockerfile, justification="parse JSON logs")
    return world.queue().submit(payload).id


async def test_a_new_proposal_appears_live_with_a_bell(world: World) -> None:
    app = _app(world)
    bells: list[float] = []
    app.bell = lambda: bells.append(time.monotonic())  # type: ignore[method-assign]
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: app.bottles)
        assert app.views == []
        pid = _capability(world)  # the agent proposes while the console is open
        await _until(pilot, lambda: [v.id for v in app.views] == [pid])
        assert bells, "no bell for the new proposal"
        text = _detail(app)
        assert "parse JSON logs" in text and "+RUN apt-get install -y jq" in text
        # The console says what approving does before the operator approves.
        assert "applied when this bottle is committed and resumed" in text
        table = app.query_one("#bottles", DataTable)
        assert SLUG in str(table.get_row_at(0)[0]) and "night shift" in str(table.get_row_at(0)[1])


async def test_approve_records_the_capability_and_answers_the_agent(world: World) -> None:
    pid = _capability(world)
    app = _app(world)
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: app.views)
        await pilot.press("a")
        assert "committed and resumed" in str(app.screen.query_one(Static).render())
        await pilot.press("y")
        await _until(pilot, lambda: app.views[0].status is ProposalStatus.APPROVED)
    state = world.queue().state(pid)
    assert state.response is not None and "committed and resumed" in state.response.effect
    (entry,) = read_capabilities(world.home / "state" / SLUG)
    assert entry["proposal"] == pid and entry["dockerfile"] == "RUN apt-get install -y jq\n"
    assert [e["action"] for e in audit.read()] == ["proposal.approve"]


async def test_reject_with_a_comment(world: World) -> None:
    pid = _capability(world)
    app = _app(world)
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: app.views)
        await pilot.press("r")
        await pilot.press(*"use the image's python instead")
        await pilot.press("enter")
        await _until(pilot, lambda: app.views[0].status is ProposalStatus.REJECTED)
    response = world.queue().load_response(pid)
    assert response is not None and response.comment == "use the image's python instead"
    (entry,) = audit.read()
    assert entry["action"] == "proposal.reject" and entry["comment"] == response.comment
    assert read_capabilities(world.home / "state" / SLUG) == []


async def test_edit_then_approve_records_the_edited_dockerfile(world: World) -> None:
    pid = _capability(world)
    app = _app(world)
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: app.views)
        await pilot.press("e")
        area = app.screen.query_one(TextArea)
        assert area.text == "RUN apt-get install -y jq\n"
        area.text = "RUN apt-get install -y jq=1.7*\n"
        await pilot.press("ctrl+s")
        await _until(pilot, lambda: app.views[0].status is ProposalStatus.APPROVED)
    response = world.queue().load_response(pid)
    assert response is not None and response.dockerfile == "RUN apt-get install -y jq=1.7*\n"
    (entry,) = read_capabilities(world.home / "state" / SLUG)
    assert entry["dockerfile"] == "RUN apt-get install -y jq=1.7*\n"


async def test_an_approved_egress_request_reaches_the_real_daemon(world: World) -> None:
    payload = EgressRoutePayload(host="new.upstream.test", justification="fetch the fixtures")
    pid = world.queue().submit(payload).id
    assert world.fetch("new.upstream.test") == 403
    app = _app(world)
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: app.views)
        text = _detail(app)
        assert "new.upstream.test" in text and "+new.upstream.test" in text
        assert "live reload, no restart" in text
        # Edit, then approve: the operator names the port the test upstream uses.
        await pilot.press("e")
        area = app.screen.query_one(TextArea)
        assert json.loads(area.text) == {"host": "new.upstream.test"}
        area.text = json.dumps({"host": "new.upstream.test", "ports": [world.port]})
        await pilot.press("ctrl+s")
        await _until(pilot, lambda: app.views[0].status is ProposalStatus.APPROVED)
    assert world.hosts() == ["base.upstream.test", "new.upstream.test"]
    assert world.fetch("new.upstream.test") == 200
    response = world.queue().load_response(pid)
    assert response is not None and response.route is not None
    assert response.route["ports"] == [world.port]
    actions = [e["action"] for e in audit.read()]
    assert actions == ["proposal.approve", "egress.allow"]


async def test_egress_screen_adds_and_removes_routes_live(world: World) -> None:
    app = _app(world)
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: app.bottles)
        app.query_one("#bottles", DataTable).focus()
        await pilot.press("g")
        await _until(pilot, lambda: isinstance(app.screen, EgressScreen))
        screen = app.screen
        routes = screen.query_one("#routes", DataTable)
        await _until(pilot, lambda: routes.row_count == 1)
        await pilot.press("n")
        await pilot.press(*f"other.upstream.test {world.port}")
        await pilot.press("enter")
        await _until(pilot, lambda: routes.row_count == 2)
        assert world.hosts() == ["base.upstream.test", "other.upstream.test"]
        assert world.fetch("other.upstream.test") == 200
        routes.focus()
        routes.move_cursor(row=0)
        await pilot.press("d")
        await pilot.press("y")
        await _until(pilot, lambda: routes.row_count == 1)
    assert world.hosts() == ["other.upstream.test"]
    assert world.fetch("base.upstream.test") == 403
    assert [e["action"] for e in audit.read()] == ["egress.allow", "egress.deny"]


async def test_a_refused_host_is_one_key_from_a_route(world: World) -> None:
    assert world.fetch("new.upstream.test") == 403
    world.daemon.wait_for("refused")
    app = _app(world)
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: app.bottles)
        app.query_one("#bottles", DataTable).focus()
        await pilot.press("g")
        await _until(pilot, lambda: isinstance(app.screen, EgressScreen))
        refusals = app.screen.query_one("#refusals", DataTable)
        await _until(pilot, lambda: refusals.row_count >= 1)
        refusals.focus()
        await pilot.press("x")
        # The host is filled in; the operator adds the port and confirms.
        await pilot.press(*f" {world.port}")
        await pilot.press("enter")
        await _until(pilot, lambda: "new.upstream.test" in world.hosts())
    assert world.fetch("new.upstream.test") == 200


HOSTILE = (
    "\x1b[2J\x1b[31mred\x1b]0;owned\x07 \x1b]8;;http://evil.test\x1b\\link\x1b]8;;\x1b\\"
    " \u202eevil\u202c \u2028line \u200bzw \U000e0041tag \x9bcsi"
)


async def test_hostile_text_renders_visible_and_inert(world: World) -> None:
    """The queue refuses such text (first line of defence); what the console
    shows from elsewhere (an agent name and label in metadata, a refused
    host from egress's log, a corrupt queue file) goes through termtext and
    Text objects: no control, bidi, zero-width or tag character reaches the
    screen, and a 64 KiB value does not push the keys off it."""
    state = world.home / "state" / SLUG / "metadata.json"
    meta = json.loads(state.read_text())
    meta["agent"] = HOSTILE
    meta["label"] = HOSTILE * 1000  # ~64 KiB
    state.write_text(json.dumps(meta))
    long = "why " * 4000  # at the queue's 16 KiB cap
    world.queue().submit(CapabilityBlockPayload(dockerfile="RUN true\n", justification=long))
    # A proposal file written behind the queue's back (a compromised bundle).
    bad = world.queue().directory / "p-20260101T000000Z-0123456789ab.proposal.json"
    bad.write_text(json.dumps({"justification": HOSTILE}))
    app = _app(world)
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: app.views)
        screen = _screen_text(app)
        rendered = "".join(
            str(c) for row in range(app.query_one("#bottles", DataTable).row_count)
            for c in app.query_one("#bottles", DataTable).get_row_at(row)
        ) + _detail(app)  # fmt: skip
        assert not any(is_unsafe(ch, allow_newlines=True) for ch in rendered + screen)
        for escape in ("\\x1b[2J", "\\u202e", "\\u2028", "\\u200b", "\\U000e0041", "\\x9b"):
            assert escape in rendered
        # The layout holds: the key footer is still on the last line.
        footer = app.query_one(Footer)
        assert footer.region.y == 39 and footer.region.height == 1
        assert "evil" in rendered  # shown, not hidden


async def test_a_broken_queue_file_is_reported_not_hidden(world: World) -> None:
    good = _capability(world)
    bad = world.queue().directory / "p-20260101T000000Z-0123456789ab.proposal.json"
    bad.write_text("{not json")
    app = _app(world)
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: app.views)
        assert [v.id for v in app.views] == [good]
        await _until(
            pilot, lambda: "1 unreadable" in str(app.query_one("#problems", Static).render())
        )


async def test_agents_are_listed_and_start_gives_the_command(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TMUX", raising=False)
    (world.home / "bottles").mkdir(parents=True)
    (world.home / "agents").mkdir(parents=True)
    (world.home / "bottles" / "helper.md").write_text(
        "---\nagent_provider:\n  template: shell\n---\n"
    )
    (world.home / "agents" / "helper.md").write_text("---\nbottle: helper\n---\nHelp.\n")
    app = _app(world)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("A")
        await _until(pilot, lambda: isinstance(app.screen, AgentsScreen))
        table = app.screen.query_one("#agents", DataTable)
        await _until(pilot, lambda: table.row_count == 1)
        assert str(table.get_row_at(0)[0]) == "helper"
        await pilot.press("enter")
        status = app.screen.query_one("#agents-status", Static)
        await _until(pilot, lambda: "start helper" in str(status.render()))
