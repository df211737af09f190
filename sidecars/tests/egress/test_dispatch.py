"""mitmproxy's hook dispatch with the look-ups done once (egress/dispatch.py)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import pytest
from bot_bottle_sidecars.egress import dispatch
from mitmproxy import addonmanager, exceptions, hooks, http, master, options
from mitmproxy.proxy.layers.http._hooks import HttpRequestHook, HttpResponseHook
from mitmproxy.test import tflow


class Recorder:
    def __init__(self, name: str, calls: list[str], *, fail: bool = False, halt: bool = False):
        self.name = name
        self.calls = calls
        self.fail = fail
        self.halt = halt

    def request(self, flow: http.HTTPFlow) -> None:
        self.calls.append(f"{self.name}:{flow.request.path}")
        if self.fail:
            raise ValueError(f"{self.name} failed")
        if self.halt:
            raise exceptions.AddonHalt


class AsyncRecorder(Recorder):
    async def request(self, flow: http.HTTPFlow) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        self.calls.append(f"{self.name}:async")


class Parent:
    """An addon with a child addon (mitmproxy walks ``addons``)."""

    def __init__(self, child: Any) -> None:
        self.addons = [child]


def run(scenario: Any) -> Any:
    dispatch.install()

    async def inner() -> Any:
        m = master.Master(options.Options())
        return await scenario(m)

    return asyncio.run(inner())


def test_install_is_idempotent_and_checks_mitmproxy() -> None:
    dispatch.install()
    assert dispatch.installed()
    trigger = addonmanager.AddonManager.trigger_event
    dispatch.install()
    assert addonmanager.AddonManager.trigger_event is trigger
    dispatch.check_compatible()


def test_hooks_run_in_chain_order_children_and_async_included() -> None:
    calls: list[str] = []

    async def scenario(m: master.Master) -> None:
        m.addons.add(Recorder("a", calls), Parent(Recorder("child", calls)))
        m.addons.add(AsyncRecorder("b", calls))
        await m.addons.trigger_event(HttpRequestHook(tflow.tflow()))

    run(scenario)
    assert calls == ["a:/path", "child:/path", "b:async"]


def test_a_failing_addon_is_logged_and_the_next_one_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    async def scenario(m: master.Master) -> None:
        m.addons.add(Recorder("a", calls, fail=True), Recorder("b", calls))
        await m.addons.trigger_event(HttpRequestHook(tflow.tflow()))

    with caplog.at_level(logging.ERROR):
        run(scenario)
    assert calls == ["a:/path", "b:/path"]
    assert "Addon error: a failed" in caplog.text


def test_addon_halt_ends_the_event() -> None:
    calls: list[str] = []

    async def scenario(m: master.Master) -> None:
        m.addons.add(Recorder("a", calls, halt=True), Recorder("b", calls))
        await m.addons.trigger_event(HttpRequestHook(tflow.tflow()))

    run(scenario)
    assert calls == ["a:/path"]


def test_the_lookup_follows_changes_to_the_chain() -> None:
    calls: list[str] = []

    async def scenario(m: master.Master) -> None:
        a = Recorder("a", calls)
        m.addons.add(a)
        flow = tflow.tflow()
        await m.addons.trigger_event(HttpRequestHook(flow))
        m.addons.add(Recorder("b", calls))
        await m.addons.trigger_event(HttpRequestHook(flow))
        m.addons.remove(a)
        await m.addons.trigger_event(HttpRequestHook(flow))
        # A hook no addon has is a no-op (response: none here).
        await m.addons.trigger_event(HttpResponseHook(flow))

    run(scenario)
    assert calls == ["a:/path", "a:/path", "b:/path", "b:/path"]


def test_a_hook_attribute_that_is_not_callable_is_still_an_error() -> None:
    class Broken:
        request = "not a function"

    async def scenario(m: master.Master) -> None:
        m.addons.add(Broken())
        with pytest.raises(exceptions.AddonManagerError, match="not callable"):
            await m.addons.trigger_event(HttpRequestHook(tflow.tflow()))

    run(scenario)


def test_hook_args_and_messages_are_unchanged() -> None:
    dispatch.install()
    flow = tflow.tflow()
    assert HttpRequestHook(flow).args() == [flow]
    assert hooks.UpdateHook([flow]).args() == [[flow]]
    # The debug-only type check is skipped; the dataclass still builds the message.
    req = http.Request.make("GET", "https://example.test/x")
    assert req.headers is not None and req.content == b""


def test_a_mitmproxy_that_dispatches_differently_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def trigger_event(self: Any, event: hooks.Hook) -> None:
        for addon in self.chain:
            await self.invoke_addon(addon, event)

    monkeypatch.setattr(addonmanager.AddonManager, "trigger_event", trigger_event)
    with pytest.raises(RuntimeError, match=r"dispatches hooks differently.*safecall"):
        dispatch.check_compatible()
    with pytest.raises(RuntimeError):
        dispatch.install()
    assert addonmanager.AddonManager.trigger_event is trigger_event


def test_hook_completion_is_handled_by_the_wrapper_of_the_event_holding_the_lock() -> None:
    from mitmproxy.proxy import server

    dispatch.install()
    assert getattr(server.ConnectionHandler.hook_task, "_bot_bottle_dispatch", False)
    # The server_event wrapper drains the completions hook_task queued.
    assert hasattr(server.ConnectionHandler.server_event, "__wrapped__")


def test_a_mitmproxy_whose_events_may_await_under_the_lock_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mitmproxy.proxy import server

    async def server_event(self: Any, event: Any) -> None:
        async with self._server_event_lock:
            for command in self.layer.handle_event(event):
                await self.hook_task(command)

    monkeypatch.setattr(server.ConnectionHandler, "server_event", server_event)
    with pytest.raises(RuntimeError, match="No `await` beyond this point"):
        dispatch.check_compatible()


def test_a_mitmproxy_that_keeps_the_expected_lines_but_adds_a_check_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every line check_compatible looks for is here, plus a stop between
    # addons once the flow is killed: the replacement would drop that stop.
    from mitmproxy.addonmanager import safecall

    async def trigger_event(self: Any, event: hooks.Hook) -> None:
        for i in self.chain:
            flow = getattr(event, "flow", None)
            if flow is not None and flow.error is not None:
                return
            try:
                with safecall():
                    await self.invoke_addon(i, event)
            except exceptions.AddonHalt:
                return

    monkeypatch.setattr(addonmanager.AddonManager, "trigger_event", trigger_event)
    with pytest.raises(RuntimeError, match=r"trigger_event as reviewed"):
        dispatch.check_compatible()


def test_a_hook_task_that_completes_hooks_on_error_too_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mitmproxy.proxy import events, server

    async def hook_task(self: Any, hook: Any) -> None:
        try:
            await self.handle_hook(hook)
        finally:
            if hook.blocking:
                await self.server_event(events.HookCompleted(hook))

    monkeypatch.setattr(server.ConnectionHandler, "hook_task", hook_task)
    with pytest.raises(RuntimeError, match=r"hook_task as reviewed"):
        dispatch.check_compatible()


def test_an_addon_manager_with_another_way_to_change_the_chain_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The lookup cache is dropped by the mutators it knows; a class whose text
    # differs may change the chain some other way.
    monkeypatch.setattr(
        inspect,
        "getsource",
        lambda obj, _real=inspect.getsource: (
            _real(obj) + "\n    def insert(self, i, addon): ...\n"
            if obj is addonmanager.AddonManager
            else _real(obj)
        ),
    )
    with pytest.raises(RuntimeError, match=r"AddonManager as reviewed"):
        dispatch.check_compatible()


def test_a_hook_completion_queued_for_a_cancelled_drain_is_still_delivered() -> None:
    """The task that drains the completions may be cancelled while it waits
    for the connection's lock (another event queued behind the one that
    started the hook, and closing the drainer's connection). The completion
    it held must still reach the layer (the next event's drain), or the flow
    would wait on its hook for ever; mitmproxy's own hook task never drops it."""
    from mitmproxy.proxy import context, events, server
    from mitmproxy.test import tflow as tf

    dispatch.install()
    seen: list[str] = []
    flow = tf.tflow()
    started: list[asyncio.Task[None]] = []

    class Layer:
        def handle_event(self, event: Any) -> list[Any]:
            seen.append(type(event).__name__)
            if type(event).__name__ == "Start":
                return [HttpRequestHook(flow)]
            return []

    class Handler(server.ConnectionHandler):
        async def handle_hook(self, hook: Any) -> None:
            # Another event arrives while the first still holds the lock.
            started.append(asyncio.ensure_future(self.server_event(events.Wakeup(None))))  # type: ignore[arg-type]

    async def scenario() -> None:
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        ctx = context.Context(tf.tclient_conn(), options.Options())
        handler = Handler(ctx)
        handler.layer = Layer()  # type: ignore[assignment]
        first = asyncio.ensure_future(handler.server_event(events.Start()))
        # first now waits, in its drain, behind the Wakeup for the lock.
        assert not first.done()
        first.cancel()
        await asyncio.gather(first, *started, return_exceptions=True)
        for _ in range(10):
            await asyncio.sleep(0)

    asyncio.run(scenario())
    assert seen[0] == "Start"
    assert "HookCompleted" in seen, seen


class _Handler:
    """What the lean hook path reads of a ProxyConnectionHandler."""

    def __init__(self, m: master.Master) -> None:
        from mitmproxy.proxy import server

        async def never() -> None:
            return None

        self.master = m
        self.timeout_watchdog = server.TimeoutWatchdog(60, never)
        self._server_event_lock = asyncio.Lock()
        self.transports: dict[Any, Any] = {}


def lean_handler(m: master.Master) -> Any:
    from mitmproxy.proxy import mode_servers

    # A ProxyConnectionHandler without sockets: hook_task takes the lean path
    # for exactly this class's handle_hook.
    cls = type("Handler", (mode_servers.ProxyConnectionHandler,), {})
    handler = cls.__new__(cls)
    handler.__dict__.update(_Handler(m).__dict__)
    return handler


class UpdateRecorder(Recorder):
    def update(self, flows: list[http.HTTPFlow]) -> None:
        self.calls.append(f"{self.name}:update:{len(flows)}")


def run_hook(addon: Any, flow: http.HTTPFlow, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, int]:
    built: list[int] = []
    init = hooks.UpdateHook.__init__

    def counting(self: Any, *a: Any, **kw: Any) -> None:
        built.append(1)
        init(self, *a, **kw)

    monkeypatch.setattr(hooks.UpdateHook, "__init__", counting)

    async def scenario(m: master.Master) -> Any:
        m.addons.add(addon)
        handler = lean_handler(m)
        hook = HttpRequestHook(flow)
        hook.blocking = False  # no layer here to hand the completion to
        await handler.hook_task(hook)
        return handler

    return run(scenario), len(built)


def test_the_lean_hook_path_runs_the_hook_and_update_for_an_addon_that_has_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    handler, built = run_hook(UpdateRecorder("a", calls), tflow.tflow(), monkeypatch)
    assert calls == ["a:/path", "a:update:1"]
    assert built == 1
    # The watchdog is re-armed as TimeoutWatchdog.disarm leaves it.
    assert handler.timeout_watchdog.blocker == 0
    assert handler.timeout_watchdog.can_timeout.is_set()


def test_the_lean_hook_path_builds_no_update_hook_nobody_handles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What the lean path saves: mitmproxy built and dispatched an UpdateHook
    # after every flow hook, for UIs this proxy does not have.
    calls: list[str] = []
    handler, built = run_hook(Recorder("a", calls), tflow.tflow(), monkeypatch)
    assert calls == ["a:/path"]
    assert built == 0
    assert handler.timeout_watchdog.blocker == 0


def test_the_lean_hook_path_waits_for_an_intercepted_flow() -> None:
    calls: list[str] = []
    flow = tflow.tflow()

    class Interceptor(Recorder):
        def request(self, flow: http.HTTPFlow) -> None:
            super().request(flow)
            flow.intercept()

    async def scenario(m: master.Master) -> list[Any]:
        m.addons.add(Interceptor("a", calls))
        handler = lean_handler(m)
        hook = HttpRequestHook(flow)
        hook.blocking = False
        task = asyncio.ensure_future(handler.hook_task(hook))
        await asyncio.sleep(0.01)
        seen = [task.done(), handler.timeout_watchdog.can_timeout.is_set()]
        flow.resume()
        await task
        return [*seen, handler.timeout_watchdog.can_timeout.is_set()]

    # Waiting on the agent's flow disarms the timeout, as disarm() does.
    assert run(scenario) == [False, False, True]
    assert calls == ["a:/path"]


def test_a_mitmproxy_whose_proxy_handler_handles_hooks_differently_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mitmproxy.proxy import mode_servers

    async def handle_hook(self: Any, hook: Any) -> None:
        with self.timeout_watchdog.disarm():
            (data,) = hook.args()
            await self.master.addons.handle_lifecycle(hook)
            self.log(f"hook {hook.name}")
            await data.wait_for_resume()

    monkeypatch.setattr(mode_servers.ProxyConnectionHandler, "handle_hook", handle_hook)
    with pytest.raises(RuntimeError, match=r"handle_hook as reviewed"):
        dispatch.check_compatible()


def test_what_the_layers_sent_before_a_hook_goes_out_before_the_hook_runs() -> None:
    # tuning.py gathers an event's writes; a response's bytes yielded before
    # its ``response`` hook must not wait for that hook's dispatch.
    import types

    from bot_bottle_sidecars.egress import tuning

    sent: list[bytes] = []
    seen_by_hook: list[list[bytes]] = []

    class Writer:
        def write(self, data: bytes) -> None:
            sent.append(data)

        def write_eof(self) -> None: ...

        def close(self) -> None: ...

    class Watcher:
        def request(self, flow: http.HTTPFlow) -> None:
            seen_by_hook.append(list(sent))

    async def scenario(m: master.Master) -> None:
        m.addons.add(Watcher())
        handler = lean_handler(m)
        writer = Writer()
        gathered = tuning.CoalescingWrites(writer)  # type: ignore[arg-type]
        handler.transports["agent"] = types.SimpleNamespace(writer=writer)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
        assert sent == [] and gathered.pending
        hook = HttpRequestHook(tflow.tflow())
        hook.blocking = False
        await handler.hook_task(hook)

    run(scenario)
    assert seen_by_hook == [[b"HTTP/1.1 200 OK\r\n\r\n"]]
