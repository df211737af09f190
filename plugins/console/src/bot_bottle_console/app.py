"""``bot-bottle supervise``: one screen over every bottle of this home.

The widgets only display and collect keys: every list, decision and route
change is a call into :mod:`bot_bottle.supervision`, the same functions the
headless ``proposals``/``egress`` commands use. Everything an agent (or a
hostname, or an agent name) wrote is shown through
:func:`bot_bottle.termtext.visible` inside a ``rich.text.Text``: never
parsed as markup, never passed to the terminal raw.

Live updates come from an inotify watch on the state and queue directories
(watchfiles), in a worker thread that sleeps in the kernel until something
changes: an idle console costs next to no CPU. Refusal counts (they need a
backend call per bottle) refresh on a slow timer.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input, Label, Static, TextArea

from bot_bottle.contracts.supervise import CapabilityBlockPayload, ProposalStatus
from bot_bottle.errors import BotBottleError
from bot_bottle.paths import home_dir
from bot_bottle.supervision import live_egress, proposals
from bot_bottle.supervision.bottles import BottleInfo, list_bottles
from bot_bottle.termtext import visible

#: The justification is shown in full in the detail pane up to this many
#: characters (a 64 KiB one must not bury the diff and the keys).
DETAIL_LIMIT = 4000
CELL_LIMIT = 48
REFUSALS_EVERY = 30.0


def safe(text: object, limit: int | None = CELL_LIMIT, *, multiline: bool = False) -> Text:
    """Untrusted text as a Text object: escapes visible, never markup."""
    return Text(visible(str(text), limit=limit, allow_newlines=multiline))


class Confirm(ModalScreen[bool]):
    BINDINGS: ClassVar = [("y", "answer(True)", "yes"), ("n,escape", "answer(False)", "no")]

    def __init__(self, question: Text) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question)
            yield Label(Text("y: yes   n/Esc: no"))

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class Ask(ModalScreen[str | None]):
    """One line of input (a rejection comment, a host name)."""

    BINDINGS: ClassVar = [("escape", "cancel", "cancel")]

    def __init__(self, prompt: str, value: str = "") -> None:
        super().__init__()
        self.prompt = prompt
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text(self.prompt))
            # The prefilled value is untrusted (a refused host): an Input shows
            # it as plain text, and check_request_host-style validation runs
            # when it is submitted.
            yield Input(value=visible(self.value), id="answer", select_on_focus=False)

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class Edit(ModalScreen[str | None]):
    """The in-app editor for edit-then-approve (Ctrl+S approves)."""

    BINDINGS: ClassVar = [
        Binding("ctrl+s", "save", "approve edited", priority=True),
        ("escape", "cancel", "cancel"),
    ]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text = title
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(id="editor"):
            yield Label(Text(self.title_text + "   (Ctrl+S: approve edited, Esc: cancel)"))
            yield TextArea(self.text, id="edit-area")

    def action_save(self) -> None:
        self.dismiss(self.query_one(TextArea).text)

    def action_cancel(self) -> None:
        self.dismiss(None)


class EgressScreen(Screen[None]):
    """One running bottle's live route table and recent refusals."""

    BINDINGS: ClassVar = [
        ("escape,g", "app.pop_screen", "back"),
        ("n", "add", "allow host"),
        ("d", "remove", "remove route"),
        ("x", "allow_refused", "allow refused host"),
        ("f5", "reload", "refresh"),
    ]

    def __init__(self, bottle: BottleInfo) -> None:
        super().__init__()
        self.bottle = bottle
        self.refused: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield Static(Text(f"egress of {self.bottle.slug}", style="bold"), id="egress-title")
        yield DataTable(id="routes", cursor_type="row")
        yield Static(Text("recent refusals (x: allow the selected host)"))
        yield DataTable(id="refusals", cursor_type="row")
        yield Static(Text(""), id="egress-status")
        yield Footer()

    def on_mount(self) -> None:
        routes = self.query_one("#routes", DataTable)
        routes.add_columns("host", "ports", "auth", "matches", "source")
        refused = self.query_one("#refusals", DataTable)
        refused.add_columns("time", "host", "rule", "request")
        self.action_reload()

    @property
    def console(self) -> SuperviseApp:
        app = self.app
        assert isinstance(app, SuperviseApp)
        return app

    def status(self, text: str, style: str = "") -> None:
        if not self.is_attached:  # the operator left the screen meanwhile
            return
        self.query_one("#egress-status", Static).update(Text(text, style=style))

    @work(thread=True, exclusive=True, group="egress")
    def action_reload(self) -> None:
        control = self.console.control(self.bottle.slug)
        if control is None:
            self.app.call_from_thread(self.status, "bottle not running here", "red")
            return
        try:
            live = control.live_routes()
            refused = live_egress.refusals(control, since=time.time() - 3600)
        except BotBottleError as exc:
            self.app.call_from_thread(self.status, exc.message, "red")
            return
        self.app.call_from_thread(self._show, live, refused)

    def _show(self, live: dict[str, Any], refused: list[dict[str, Any]]) -> None:
        if not self.is_attached:
            return
        routes = self.query_one("#routes", DataTable)
        routes.clear()
        for r in live.get("routes", []):
            matches = (
                "; ".join(
                    " ".join(
                        [",".join(m.get("methods", []))]
                        + [p.get("value", "") for p in m.get("paths", [])]
                    ).strip()
                    for m in r.get("matches", [])
                )
                or "any"
            )
            host = str(r.get("host"))
            routes.add_row(
                safe(host), Text(",".join(str(p) for p in r.get("ports", []))),
                Text("injected" if r.get("auth") else "-"), safe(matches), safe(r.get("source")),
                key=host,
            )  # fmt: skip
        self.refused = refused[-50:]
        table = self.query_one("#refusals", DataTable)
        table.clear()
        for i, e in enumerate(reversed(self.refused)):
            table.add_row(
                safe(e.get("ts", "?")), safe(e.get("host", "?")), safe(e.get("rule", "?")),
                safe(f"{e.get('method', '')} {e.get('path', '')}"), key=str(i),
            )  # fmt: skip
        self.status(
            f"{len(live.get('routes', []))} routes, {len(self.refused)} refusals in the last hour"
        )

    def action_add(self, host: str = "") -> None:
        def got(answer: str | None) -> None:
            if answer:
                self._allow(answer.strip())

        self.app.push_screen(
            Ask("Allow host (live, no restart): 'host [port...] [/path...] [METHOD...]'", host), got
        )

    def action_allow_refused(self) -> None:
        table = self.query_one("#refusals", DataTable)
        if not self.refused or table.cursor_row < 0:
            return
        event = list(reversed(self.refused))[table.cursor_row]
        self.action_add(str(event.get("host", "")))

    @work(thread=True, group="egress-change")
    def _allow(self, answer: str) -> None:
        words = answer.split()
        spec: dict[str, Any] = {"host": words[0]}
        ports = [int(w) for w in words[1:] if w.isdigit()]
        paths = [w for w in words[1:] if w.startswith("/")]
        methods = [w.upper() for w in words[1:] if not w.startswith("/") and not w.isdigit()]
        if ports:
            spec["ports"] = ports
        if paths or methods:
            match: dict[str, Any] = {}
            if paths:
                match["paths"] = [{"type": "prefix", "value": p} for p in paths]
            if methods:
                match["methods"] = methods
            spec["matches"] = [match]
        self._change(lambda c: live_egress.allow(c, spec, plugins=self.console.plugins))

    def action_remove(self) -> None:
        table = self.query_one("#routes", DataTable)
        if table.row_count == 0:
            return
        host = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

        def got(ok: bool | None) -> None:
            if ok:
                self._deny(host)

        self.app.push_screen(Confirm(safe(f"Remove the route for {host} now?", None)), got)

    @work(thread=True, group="egress-change")
    def _deny(self, host: str) -> None:
        self._change(lambda c: live_egress.deny(c, host))

    def _change(self, fn: Any) -> None:
        control = self.console.control(self.bottle.slug)
        if control is None:
            self.app.call_from_thread(self.status, "bottle not running here", "red")
            return
        self.app.call_from_thread(self.status, "applying (reload)...")
        try:
            change = fn(control)
        except BotBottleError as exc:
            msg = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
            self.app.call_from_thread(self.status, msg, "red")
            return
        self.app.call_from_thread(self.status, f"applied: {change.host}", "green")
        self.action_reload()


class AgentsScreen(Screen[None]):
    """``list agents`` data; Enter starts the selected agent in a new bottle."""

    BINDINGS: ClassVar = [("escape,A", "app.pop_screen", "back")]

    def compose(self) -> ComposeResult:
        yield Static(Text("agents (Enter: start in a new bottle)", style="bold"))
        yield DataTable(id="agents", cursor_type="row")
        yield Static(Text(""), id="agents-status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#agents", DataTable)
        table.add_columns("agent", "source", "bottle", "status")
        self.rows: list[Any] = []
        self.load()

    @work(thread=True, exclusive=True)
    def load(self) -> None:
        from bot_bottle.manifest.listing import list_agents
        from bot_bottle.manifest.store import Manifest

        try:
            rows = list_agents(Manifest.discover())
        except BotBottleError as exc:
            self.app.call_from_thread(self.status, exc.message)
            return
        self.app.call_from_thread(self._show, rows)

    def _show(self, rows: list[Any]) -> None:
        if not self.is_attached:
            return
        self.rows = rows
        table = self.query_one("#agents", DataTable)
        table.clear()
        for r in rows:
            table.add_row(safe(r.name), safe(r.source), safe(r.bottle or "-"), safe(r.status))
        table.focus()

    def status(self, text: str) -> None:
        if self.is_attached:
            self.query_one("#agents-status", Static).update(safe(text, 400))

    @on(DataTable.RowSelected, "#agents")
    def action_start(self) -> None:
        table = self.query_one("#agents", DataTable)
        if not self.rows or table.cursor_row < 0:
            return
        name = self.rows[table.cursor_row].name
        argv = start_command(name)
        import os
        import shutil
        import subprocess

        tmux = shutil.which("tmux")
        if os.environ.get("TMUX") and tmux:
            # A new tmux window, so the console stays where it is.
            subprocess.run([tmux, "new-window", "-n", f"bb:{name}"[:30], *argv], check=False)
            self.status(f"started {name} in a new tmux window")
        else:
            import shlex

            self.status("run in another terminal: " + shlex.join(argv))


def start_command(agent: str) -> list[str]:
    import shutil
    import sys

    cli = shutil.which("bot-bottle") or str(Path(sys.executable).parent / "bot-bottle")
    return [cli, "start", agent]


class SuperviseApp(App[int]):
    TITLE = "bot-bottle supervise"
    CSS = """
    #bottles { height: auto; max-height: 8; }
    #proposals { height: auto; max-height: 10; }
    #detail { height: 1fr; min-height: 5; border: round $accent; }
    #problems { height: auto; max-height: 2; color: $error; }
    #dialog {
        width: 80%; height: auto; max-height: 80%;
        border: thick $accent; background: $panel; padding: 1;
    }
    #editor { width: 90%; height: 90%; border: thick $accent; background: $panel; }
    Confirm, Ask, Edit { align: center middle; }
    .section { text-style: bold; }
    """
    BINDINGS: ClassVar = [
        ("a", "approve", "approve"),
        ("r", "reject", "reject"),
        ("e", "edit", "edit+approve"),
        ("E", "edit_external", "$EDITOR"),
        ("g", "egress", "egress"),
        ("s", "stop", "stop bottle"),
        ("A", "agents", "agents"),
        ("f5", "refresh", "refresh"),
        ("q", "quit", "quit"),
    ]

    def __init__(
        self,
        *,
        home: Path | None = None,
        control_for: proposals.ControlFor | None = None,
        plugins: Any = None,
        watch: bool = True,
    ) -> None:
        super().__init__()
        self.home = home
        self.plugins = plugins
        self._control_for = control_for
        self._watch = watch
        self._stop = threading.Event()
        self.bottles: list[BottleInfo] = []
        self.views: list[proposals.ProposalView] = []
        self.refusal_counts: dict[str, int] = {}
        self.known: set[str] | None = None
        self._controls: dict[str, Any] = {}
        self.problems: list[str] = []

    # -- data -------------------------------------------------------------------

    def control(self, slug: str) -> Any:
        if self._control_for is None:
            self._control_for = proposals.default_control_for(self.plugins)
        return self._control_for(slug)

    def compose(self) -> ComposeResult:
        yield Static(Text("bottles", style="bold"), classes="section")
        yield DataTable(id="bottles", cursor_type="row")
        yield Static(Text("proposals (newest first)", style="bold"), classes="section")
        yield DataTable(id="proposals", cursor_type="row")
        with VerticalScroll(id="detail"):
            yield Static(Text("no proposal selected"), id="detail-text")
        yield Static(Text(""), id="problems")
        yield Footer()

    def on_mount(self) -> None:
        # References, not queries: a refresh from the watcher may arrive while
        # another screen (egress, a dialog) is on top.
        self.bottles_table = self.query_one("#bottles", DataTable)
        self.proposals_table = self.query_one("#proposals", DataTable)
        self.detail_text = self.query_one("#detail-text", Static)
        self.problems_text = self.query_one("#problems", Static)
        self.query_one("#bottles", DataTable).add_columns(
            "bottle", "label", "agent", "provider", "backend", "uptime", "pending", "refused"
        )
        self.query_one("#proposals", DataTable).add_columns(
            "id", "bottle", "kind", "status", "what"
        )
        self.refresh_data()
        self.query_one("#proposals", DataTable).focus()
        # Uptime only; everything else is pushed by the watcher.
        self.set_interval(30, self.refresh_data)
        if self._watch:
            self.watch_dirs()
        self.count_refusals()

    def refresh_data(self) -> None:
        self.bottles = list_bottles(self.home)
        views, problems = proposals.list_proposals(home=self.home)
        self.problems = problems
        self.problems_text.update(
            safe(f"{len(problems)} unreadable queue file(s): {problems[0]}", 200, multiline=False)
            if problems
            else Text("")
        )
        self.views = [v for v in views if v.status is ProposalStatus.PENDING] + [
            v for v in views if v.status is not ProposalStatus.PENDING
        ][:50]
        pending = {v.id for v in self.views if v.status is ProposalStatus.PENDING}
        if self.known is not None and pending - self.known:
            self.bell()
            self.notify("new proposal", severity="warning")
        self.known = pending
        self._fill_bottles()
        self._fill_proposals()

    def _fill_bottles(self) -> None:
        table = self.bottles_table
        row = table.cursor_row
        table.clear()
        for b in self.bottles:
            table.add_row(
                Text(b.slug, style=b.colour if b.running else "dim"),
                safe(b.label or "-"), safe(b.agent), safe(b.provider), safe(b.backend),
                Text(b.uptime() if b.running else "stopped"), Text(str(b.pending())),
                Text(str(self.refusal_counts.get(b.slug, "-"))), key=b.slug,
            )  # fmt: skip
        if table.row_count:
            table.move_cursor(row=min(max(row, 0), table.row_count - 1))

    def _fill_proposals(self) -> None:
        table = self.proposals_table
        row = table.cursor_row
        table.clear()
        for v in self.views:
            pending = v.status is ProposalStatus.PENDING
            table.add_row(
                Text(v.id, style="bold" if pending else "dim"),
                Text(v.bottle.slug, style=v.bottle.colour),
                Text(v.proposal.tool),
                Text(v.status.value, style="yellow" if pending else ""),
                safe(v.summary, 60),
                key=v.id,
            )
        if table.row_count:
            table.move_cursor(row=min(max(row, 0), table.row_count - 1))
        self.show_detail()

    def selected(self) -> proposals.ProposalView | None:
        table = self.proposals_table
        if table.row_count == 0 or table.cursor_row < 0:
            return None
        return self.views[table.cursor_row] if table.cursor_row < len(self.views) else None

    @on(DataTable.RowHighlighted, "#proposals")
    def _row(self, _event: DataTable.RowHighlighted) -> None:
        self.show_detail()

    def show_detail(self) -> None:
        view = self.selected()
        detail = self.detail_text
        if view is None:
            detail.update(Text("no proposals"))
            return
        p = view.proposal.payload
        out = Text()
        out.append(f"{view.proposal.tool}  {view.id}\n", style="bold")
        out.append("bottle ")
        out.append(view.bottle.slug, style=view.bottle.colour)
        out.append("  agent ")
        out.append_text(safe(view.bottle.agent, 200))
        out.append(f"  asked {view.proposal.created_at:%Y-%m-%d %H:%M:%S}Z\n")
        if not isinstance(p, CapabilityBlockPayload):
            out.append("host  ")
            out.append_text(Text(visible(p.host, limit=253), style="bold reverse"))
            extra = [", ".join(str(x) for x in p.ports), " ".join(p.methods), " ".join(p.paths)]
            out.append_text(safe("  " + "  ".join(x for x in extra if x), 400))
            out.append("\n")
        out.append("\njustification:\n", style="bold")
        out.append_text(safe(p.justification, DETAIL_LIMIT, multiline=True))
        out.append("\n\nchange:\n", style="bold")
        control = None
        if view.proposal.tool == "egress-route" and view.bottle.running:
            control = self._cached_control(view.bottle.slug)
        for line in proposals.diff(view, control).splitlines():
            style = "green" if line.startswith("+") else "red" if line.startswith("-") else ""
            out.append_text(Text(visible(line, limit=400), style=style))
            out.append("\n")
        if view.response is None:
            out.append("\n")
            out.append(proposals.effect_notice(view), style="bold yellow")
            out.append("\n")
        else:
            out.append(
                f"\n{view.response.decision.value} at {view.response.decided_at:%H:%M:%S}",
                style="bold",
            )
            if view.response.comment:
                out.append(": ")
                out.append_text(safe(view.response.comment, 400))
        detail.update(out)

    def _cached_control(self, slug: str) -> Any:
        # The diff needs the file only; a backend lookup per keystroke would lag.
        cache = self._controls
        if slug not in cache:
            try:
                cache[slug] = self.control(slug)
            except BotBottleError:
                cache[slug] = None
        return cache[slug]

    # -- background ---------------------------------------------------------------

    @work(thread=True, exclusive=True, group="watch")
    def watch_dirs(self) -> None:
        from watchfiles import watch

        root = self.home or home_dir()
        dirs = [root / "state", root / "supervise"]
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        # Blocks in inotify until something changes (no polling); debounced.
        # Two races are closed by refreshes the events alone would not give:
        # whatever was written between the first paint and the watch being
        # armed (the first yield, change or timeout, comes after arming), and
        # files written into a directory created so recently that its own
        # watch was not yet added (a settle refresh a second after a burst).
        armed = False
        settle = False
        for changes in watch(
            *dirs, stop_event=self._stop, debounce=300, rust_timeout=1000, yield_on_timeout=True
        ):
            if self._stop.is_set():
                return
            if changes or settle or not armed:
                self.call_from_thread(self.refresh_data)
            armed = True
            settle = bool(changes)

    @work(thread=True, exclusive=True, group="refusals")
    def count_refusals(self) -> None:
        while not self._stop.is_set():
            counts: dict[str, int] = {}
            for b in list(self.bottles):
                if not b.running:
                    continue
                try:
                    control = self.control(b.slug)
                    if control is not None:
                        counts[b.slug] = len(
                            live_egress.refusals(control, since=time.time() - 3600)
                        )
                except Exception:  # noqa: S112 - one unreachable bottle must not stop the others
                    continue
            if counts != self.refusal_counts:
                self.refusal_counts = counts
                self.call_from_thread(self._fill_bottles)
            self._stop.wait(REFUSALS_EVERY)

    def on_unmount(self) -> None:
        self._stop.set()

    # -- actions ---------------------------------------------------------------------

    def action_refresh(self) -> None:
        self.refresh_data()

    def _pending_selected(self) -> proposals.ProposalView | None:
        view = self.selected()
        if view is None or view.status is not ProposalStatus.PENDING:
            self.notify("select a pending proposal", severity="warning")
            return None
        return view

    def action_approve(self) -> None:
        view = self._pending_selected()
        if view is None:
            return
        question = Text(f"Approve {view.id}?\n\n")
        question.append(proposals.effect_notice(view), style="bold yellow")

        def got(ok: bool | None) -> None:
            if ok:
                self._decide(view.id, "approve")

        self.push_screen(Confirm(question), got)

    def action_reject(self) -> None:
        view = self._pending_selected()
        if view is None:
            return

        def got(comment: str | None) -> None:
            if comment is not None and comment.strip():
                self._decide(view.id, "reject", comment=comment)
            elif comment is not None:
                self.notify("a rejection needs a comment", severity="error")

        self.push_screen(Ask(f"Reject {view.id}: comment for the agent"), got)

    def action_edit(self) -> None:
        view = self._pending_selected()
        if view is None:
            return
        title, text = self._edit_text(view)
        self.push_screen(Edit(title, text), lambda edited: self._approve_edited(view, edited))

    def _edit_text(self, view: proposals.ProposalView) -> tuple[str, str]:
        p = view.proposal.payload
        if isinstance(p, CapabilityBlockPayload):
            return "Edit the Dockerfile snippet, then approve", p.dockerfile
        return (
            "Edit the route (JSON, as in a manifest), then approve",
            json.dumps(p.route(), indent=2),
        )

    def _approve_edited(self, view: proposals.ProposalView, edited: str | None) -> None:
        if edited is None:
            return
        if isinstance(view.proposal.payload, CapabilityBlockPayload):
            self._decide(view.id, "approve", dockerfile=edited)
            return
        try:
            route = json.loads(edited)
        except ValueError as exc:
            self.notify(f"not JSON: {exc}", severity="error")
            return
        if not isinstance(route, dict):
            self.notify("the route must be a JSON object", severity="error")
            return
        self._decide(view.id, "approve", route=route)

    def action_edit_external(self) -> None:
        """Edit in $VISUAL/$EDITOR (the console steps aside), then confirm."""
        import os
        import shlex
        import subprocess
        import tempfile

        view = self._pending_selected()
        if view is None:
            return
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
        if not editor:
            self.notify("set $EDITOR (or use e for the in-app editor)", severity="warning")
            return
        _title, text = self._edit_text(view)
        suffix = ".Dockerfile" if view.proposal.tool == "capability-block" else ".json"
        with tempfile.TemporaryDirectory(prefix="bb-edit-") as tmp:
            path = Path(tmp) / f"{view.id}{suffix}"
            path.write_text(text, encoding="utf-8")
            try:
                with self.suspend():
                    code = subprocess.call([*shlex.split(editor), str(path)])
            except Exception as exc:
                self.notify(f"cannot run the editor: {exc}", severity="error")
                return
            edited = path.read_text(encoding="utf-8")
        if code != 0:
            self.notify(f"the editor exited {code}; nothing approved", severity="warning")
            return
        question = Text(f"Approve {view.id} as edited?\n\n")
        question.append_text(safe(edited, 2000, multiline=True))
        question.append("\n\n")
        question.append(proposals.effect_notice(view), style="bold yellow")
        self.push_screen(
            Confirm(question), lambda ok: self._approve_edited(view, edited) if ok else None
        )

    @work(thread=True, group="decide")
    def _decide(self, proposal_id: str, what: str, **kw: Any) -> None:
        try:
            if what == "approve":
                resp = proposals.approve(
                    proposal_id,
                    control_for=self.control,
                    plugins=self.plugins,
                    home=self.home,
                    **kw,
                )
            else:
                resp = proposals.reject(proposal_id, home=self.home, **kw)
        except BotBottleError as exc:
            msg = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
            self.call_from_thread(self.notify, msg, severity="error", timeout=10)
            return
        self.call_from_thread(self.notify, f"{resp.decision.value}: {proposal_id}")
        self.call_from_thread(self.refresh_data)

    def _bottle_selected(self) -> BottleInfo | None:
        table = self.bottles_table
        view = self.selected()
        if self.focused is table or view is None:
            if table.row_count and 0 <= table.cursor_row < len(self.bottles):
                return self.bottles[table.cursor_row]
            return None
        return view.bottle

    def action_agents(self) -> None:
        self.push_screen(AgentsScreen())

    def action_egress(self) -> None:
        bottle = self._bottle_selected()
        if bottle is None:
            self.notify("select a bottle", severity="warning")
            return
        self.push_screen(EgressScreen(bottle))

    def action_stop(self) -> None:
        bottle = self._bottle_selected()
        if bottle is None or not bottle.running:
            self.notify("select a running bottle", severity="warning")
            return

        def got(ok: bool | None) -> None:
            if ok:
                self._stop_bottle(bottle)

        self.push_screen(Confirm(Text(f"Stop bottle {bottle.slug}? The agent is ended.")), got)

    @work(thread=True, group="stop")
    def _stop_bottle(self, bottle: BottleInfo) -> None:
        from bot_bottle.plugins import PluginHost

        host = self.plugins or PluginHost().load()
        try:
            backend = host.create("backends", bottle.backend)
            done = backend.stop(bottle.slug)
        except Exception as exc:
            self.call_from_thread(self.notify, f"stop failed: {exc}", severity="error")
            return
        self.call_from_thread(self.notify, f"stopped {bottle.slug}" if done else "not running")


def main() -> int:
    app = SuperviseApp()
    app.run()
    return 0


__all__ = ["SuperviseApp", "main"]
