"""Cheaper per-request bookkeeping in mitmproxy's core (egress latency, issue #21).

An HTTP request through egress runs four flow hooks (``requestheaders``,
``request``, ``responseheaders``, ``response``). For each, mitmproxy (12.x):

- walks every addon in the chain, and each one's children, looking the hook
  up by name (a generator and a ``getattr`` per addon), then does the same
  again for an ``update`` hook meant for its UIs, which no addon here has;
- builds the hook's argument list with ``dataclasses.fields`` each time;
- type-checks every field of each request and response it builds
  (``MessageData.__post_init__``), a check mitmproxy itself runs only in
  ``__debug__`` mode, i.e. not under ``python -O``;
- hands each hook's completion back to the connection's event lock while
  the event that started the hook still holds it, so every hook costs a
  lock waiter and one more turn of the event loop.

Together about a fifth of the proxy's Python calls per small request.
:func:`install` keeps the semantics and drops the repeated work: the addons
that implement a hook are looked up once per hook name (and again after the
chain changes), each still called inside mitmproxy's ``safecall`` in chain
order with ``AddonHalt`` ending the event; the argument names are taken once
per hook class; the debug type check is skipped as ``python -O`` skips it; a
hook whose addons returned while the event that started it still holds the
lock (all of egress's hooks are synchronous, and mitmproxy starts hook tasks
eagerly) has its completion handled right after that event, on the same
connection, instead of on a later turn of the loop. mitmproxy's layers
queue what arrives while a hook blocks them, so the order each layer sees is
unchanged. Every addon and every hook still runs: nothing the egress addon
judges is touched.

Like ``streams`` and ``tuning``, it checks that mitmproxy still reads as
expected and refuses to start otherwise, so an upgrade is looked at. The
functions it replaces whole (and ``AddonManager``, whose chain changes the
lookup cache must see) are pinned to the exact source reviewed
(:data:`_REVIEWED`): a version that still has the expected lines but does
something more (a new check between addons, a completion sent on error)
would otherwise lose that silently.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import inspect
from typing import Any

_MARK = "_bot_bottle_dispatch"
#: Lines the replaced functions must contain, so the replacements match them.
_EXPECTED: dict[str, tuple[str, ...]] = {
    "trigger_event": (
        "for i in self.chain:",
        "with safecall():",
        "await self.invoke_addon(i, event)",
        "except exceptions.AddonHalt:",
    ),
    "invoke_addon": (
        "for addon, func in self._iter_hooks(addon, event):",
        "res = func(*event.args())",
        "if res is not None and inspect.isawaitable(res):",
    ),
    "args": ("for field in fields(self):", "args.append(getattr(self, field.name))"),
    "__post_init__": ("typecheck.check_option_type(field.name, val, field.type)",),
    "hook_task": (
        "await self.handle_hook(hook)",
        "if hook.blocking:",
        "await self.server_event(events.HookCompleted(hook))",
    ),
    "server_event": (
        "async with self._server_event_lock:",
        "# No `await` beyond this point.",
        "self.hook_task(command)",
    ),
    "handle_hook": (
        "with self.timeout_watchdog.disarm():",
        "(data,) = hook.args()",
        "await self.master.addons.handle_lifecycle(hook)",
        "await data.wait_for_resume()",
    ),
    "disarm": ("self.blocker += 1", "self.blocker -= 1"),
    "wait_for_resume": ("if not self.intercepted:",),
}
#: sha256 of the source of what this module replaces or relies on, as reviewed
#: (mitmproxy 12.3.1). A different text is refused even when the lines above
#: are all there: the replacements do exactly what that text did, no more.
_REVIEWED: dict[str, str] = {
    "hook_task": "9ac79701605262685df6bc57fdba46bc84894961665e5b32d90defebd0780092",
    "server_event": "a2b42657ebe8bf6de9b9064d7b3dde2403a744bb8f75df03691a5c0e735544d7",
    "trigger_event": "b763c59bc4992e33030d38fe5a62368b0437ad4f327ea609b0664db32286a4d9",
    "invoke_addon": "13180532440359de4072c45e3f24aa3ad3b75292ef1ebfa5caa6385160a0be12",
    "args": "5bab95f7aa358e18cbc06abdb02a4d0a1e71274032d765285706a54e5cb2d965",
    "__post_init__": "f65088e210cd9cc1dc277086ee4c7f5701d433b02e6f1d81a2ac22f94c484414",
    "handle_hook": "9f8b52fd798203c9d2401c3e5d8c7f9976c490ac124b17cd55d8afce73b66acf",
    "disarm": "99af75f94eed883af95e538b51be5a8ed6d31ba391d0bc557e4cce5eda9c4cc4",
    "wait_for_resume": "a333ab3b51300b444cf905cf1978619fc5dd0c0a79359a4b599e44df158c1ab9",
    # Every way the chain changes (the cache is dropped by _MUTATORS only),
    # and handle_lifecycle, which hook_task's lean path spells out.
    "AddonManager": "6be8dc580f5c66bf3736170276cc4baf705578616ac379ae574d4120f44242de",
}
#: AddonManager methods that change the chain (they drop the lookup cache).
_MUTATORS = ("add", "remove", "clear", "register")


def _sources() -> dict[str, Any]:
    from mitmproxy import addonmanager, flow, hooks, http
    from mitmproxy.proxy import mode_servers, server

    return {
        "hook_task": server.ConnectionHandler.hook_task,
        "server_event": server.ConnectionHandler.server_event,
        "handle_hook": mode_servers.ProxyConnectionHandler.handle_hook,
        "disarm": server.TimeoutWatchdog.disarm,
        "wait_for_resume": flow.Flow.wait_for_resume,
        "trigger_event": addonmanager.AddonManager.trigger_event,
        "invoke_addon": addonmanager.AddonManager.invoke_addon,
        "args": hooks.Hook.args,
        "__post_init__": getattr(http.MessageData, "__post_init__", None),
    }


def check_compatible() -> None:
    """Raise RuntimeError unless mitmproxy's dispatch reads as this module expects."""
    problems: list[str] = []
    for name, fn in _sources().items():
        if fn is None:
            # MessageData without the debug check (python -O): nothing to skip.
            if name == "__post_init__":
                continue
            problems.append(name)
            continue
        if getattr(fn, _MARK, False):
            continue
        fn = inspect.unwrap(fn)
        src = inspect.getsource(fn)
        missing = [f"{name}: {line}" for line in _EXPECTED[name] if line not in src]
        if not missing and _digest(src) != _REVIEWED[name]:
            missing.append(f"{name} as reviewed")
        problems += missing
    from mitmproxy import addonmanager

    if _digest(inspect.getsource(addonmanager.AddonManager)) != _REVIEWED["AddonManager"]:
        problems.append("AddonManager as reviewed")

    for name in _MUTATORS:
        if not hasattr(addonmanager.AddonManager, name):
            problems.append(f"AddonManager.{name}")
    if problems:
        raise RuntimeError(
            "this mitmproxy version dispatches hooks differently "
            f"({'; '.join(problems)} not found); "
            "bot_bottle_sidecars.egress.dispatch must be updated for it"
        )


def _digest(src: str) -> str:
    return hashlib.sha256(src.encode()).hexdigest()


def installed() -> bool:
    from mitmproxy import addonmanager

    return getattr(addonmanager.AddonManager.trigger_event, _MARK, False)


def _mark(fn: Any) -> Any:
    setattr(fn, _MARK, True)
    return fn


def install() -> None:
    """Replace the dispatch (idempotent); refuses an unexpected mitmproxy."""
    from mitmproxy import addonmanager, exceptions, hooks, http

    check_compatible()
    if installed():
        return
    manager = addonmanager.AddonManager
    safecall = addonmanager.safecall

    def hook_table(self: Any, event: hooks.Hook) -> list[list[Any]]:
        """Per addon of the chain (in order) that has the hook: its functions."""
        cache: dict[str, list[list[Any]]] | None = self.__dict__.get(_MARK)
        if cache is None:
            cache = self.__dict__[_MARK] = {}
        table = cache.get(event.name)
        if table is None:
            # mitmproxy's own lookup (it raises on a non-callable hook attribute).
            table = []
            for top in self.chain:
                funcs = [func for _, func in self._iter_hooks(top, event)]
                if funcs:
                    table.append(funcs)
            cache[event.name] = table
        return table

    @_mark
    async def trigger_event(self: Any, event: hooks.Hook) -> None:
        table = hook_table(self, event)
        if not table:
            return
        args = event.args()
        for funcs in table:
            try:
                with safecall():
                    for func in funcs:
                        res = func(*args)
                        if res is not None and inspect.isawaitable(res):
                            await res
            except exceptions.AddonHalt:
                return

    def invalidating(original: Any) -> Any:
        def wrapper(self: Any, *a: Any, **kw: Any) -> Any:
            # Before and after: a hook may fire while the chain is half changed.
            self.__dict__.pop(_MARK, None)
            try:
                return original(self, *a, **kw)
            finally:
                self.__dict__.pop(_MARK, None)

        wrapper.__wrapped__ = original  # type: ignore[attr-defined]
        wrapper.__name__ = original.__name__
        return wrapper

    names: dict[type, tuple[str, ...]] = {}

    @_mark
    def args(self: hooks.Hook) -> list[Any]:
        cls = type(self)
        fields = names.get(cls)
        if fields is None:
            fields = names[cls] = tuple(f.name for f in dataclasses.fields(self))  # type: ignore[arg-type]
        return [getattr(self, n) for n in fields]

    from mitmproxy import flow
    from mitmproxy.proxy import events, mode_servers, server
    from mitmproxy.utils import asyncio_utils

    handler_cls = server.ConnectionHandler
    original_event = handler_cls.server_event

    async def drain(self: Any) -> None:
        # Hooks that completed while an event held the lock (hook_task below).
        queue: list[Any] | None = self.__dict__.get(_MARK)
        while queue:
            completed = queue.pop(0)
            try:
                await original_event(self, completed)
            except asyncio.CancelledError:
                # Cancelled waiting for the lock (the drainer's connection is
                # closing), so not handled: mitmproxy's own hook task would
                # still deliver it, else the flow waits on its hook for ever.
                queue.insert(0, completed)
                asyncio_utils.create_task(
                    drain(self), name="hook completions", keep_ref=True, client=None
                )
                raise

    @functools.wraps(original_event)
    async def server_event(self: Any, event: Any) -> None:
        await original_event(self, event)
        await drain(self)

    proxy_handle_hook = mode_servers.ProxyConnectionHandler.handle_hook
    update_hook = hooks.UpdateHook
    # Only its name is read by the look-up (hook_table).
    update_probe = update_hook([])
    flow_cls = flow.Flow

    async def handle_hook(self: Any, hook: Any) -> None:
        # ProxyConnectionHandler.handle_hook with AddonManager.handle_lifecycle
        # and TimeoutWatchdog.disarm spelled out (sources pinned), minus the
        # UpdateHook built for each flow hook when no addon has ``update``.
        watchdog = self.timeout_watchdog
        watchdog.can_timeout.clear()
        watchdog.blocker += 1
        try:
            (data,) = hook.args()
            addons = self.master.addons
            await addons.trigger_event(hook)
            if isinstance(data, flow_cls):
                if hook_table(addons, update_probe):
                    await addons.trigger_event(update_hook([data]))
                if data.intercepted:
                    await data.wait_for_resume()
        finally:
            watchdog.blocker -= 1
            if watchdog.blocker == 0:
                watchdog.register_activity()
                watchdog.can_timeout.set()

    from bot_bottle_sidecars.egress import tuning

    @_mark
    async def hook_task(self: Any, hook: Any) -> None:
        # What the layers sent before this hook goes out now, not after it (the
        # writes tuning.py gathers per event): the bytes were final when
        # the layer yielded them (mitmproxy itself writes each at once), and a
        # small response's body is sent before its ``response`` hook runs, so
        # the agent does not wait on that hook's dispatch.
        tuning.flush(self)
        if type(self).handle_hook is proxy_handle_hook:
            await handle_hook(self, hook)
        else:
            await self.handle_hook(hook)
        if hook.blocking:
            if self._server_event_lock.locked():
                # server_event never awaits while it holds the lock: the holder
                # is the event on this very call stack that started the hook
                # (eager tasks run at once), and its wrapper takes this next.
                self.__dict__.setdefault(_MARK, []).append(events.HookCompleted(hook))
            else:
                await self.server_event(events.HookCompleted(hook))

    for name in _MUTATORS:
        setattr(manager, name, invalidating(getattr(manager, name)))
    handler_cls.server_event = server_event  # type: ignore[method-assign]
    handler_cls.hook_task = hook_task  # type: ignore[method-assign]
    manager.trigger_event = trigger_event  # type: ignore[method-assign]
    hooks.Hook.args = args  # type: ignore[method-assign]
    if getattr(http.MessageData, "__post_init__", None) is not None:
        # The dataclass __init__ calls it: replaced by a no-op, not removed.
        http.MessageData.__post_init__ = _mark(lambda self: None)  # type: ignore[attr-defined]
