"""mitmproxy's header look-ups and option reads without the generic detours (egress/hotpath.py)."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from bot_bottle_sidecars.egress import hotpath
from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy import http, options
from mitmproxy.coretypes import multidict

FIELDS: list[tuple[bytes, bytes]] = [
    (b"Host", b"api.example.test"),
    (b"content-length", b"12"),
    (b"X-Dup", b"one"),
    (b"x-dup", b"two"),
    (b"X-Raw", b"caf\xc3\xa9 \xff"),  # UTF-8 and a byte that is not
    (b"Empty", b""),
]
KEYS: list[Any] = [
    "host",
    "HOST",
    b"Content-Length",
    "x-dup",
    b"X-DUP",
    "x-raw",
    "empty",
    "absent",
    b"absent",
    "caf\udcc3",  # a surrogate-escaped name
    "",
]


def original_get_all(h: http.Headers, key: Any) -> list[str]:
    # mitmproxy's Headers.get_all, spelled out from its source (as reviewed).
    name = http._always_bytes(key)  # pyright: ignore[reportPrivateUsage]
    found = multidict._MultiDict.get_all(h, name)  # pyright: ignore[reportPrivateUsage]
    return [http._native(x) for x in found]  # pyright: ignore[reportPrivateUsage]


def original_get(h: http.Headers, key: Any, default: Any = None) -> Any:
    try:
        values = original_get_all(h, key)
        if not values:
            raise KeyError(key)
        return h._reduce_values(values)  # pyright: ignore[reportPrivateUsage]
    except KeyError:
        return default


def raised_during(fn: Callable[[], Any]) -> list[str]:
    """Names of the exceptions raised (and maybe caught) while ``fn`` runs."""
    raised: list[str] = []
    mon = sys.monitoring
    tool = mon.DEBUGGER_ID if mon.get_tool(mon.DEBUGGER_ID) is None else mon.OPTIMIZER_ID
    mon.use_tool_id(tool, "hotpath-test")
    mon.register_callback(
        tool, mon.events.RAISE, lambda code, off, exc: raised.append(type(exc).__name__)
    )
    mon.set_events(tool, mon.events.RAISE)
    try:
        fn()
    finally:
        mon.set_events(tool, 0)
        mon.register_callback(tool, mon.events.RAISE, None)
        mon.free_tool_id(tool)
    return raised


def test_install_is_idempotent_and_checks_mitmproxy() -> None:
    hotpath.install()
    assert hotpath.installed()
    get_all = http.Headers.get_all
    hotpath.install()
    assert http.Headers.get_all is get_all
    hotpath.check_compatible()


@pytest.mark.parametrize("key", KEYS)
def test_lookups_answer_what_mitmproxy_answers(key: Any) -> None:
    hotpath.install()
    h = http.Headers(FIELDS)
    assert h.get_all(key) == original_get_all(h, key)
    assert h.get(key) == original_get(h, key)
    assert h.get(key, "dflt") == original_get(h, key, "dflt")
    assert (key in h) == bool(original_get_all(h, key))
    if original_get_all(h, key):
        assert h[key] == original_get(h, key)
    else:
        with pytest.raises(KeyError):
            h[key]


def test_keys_of_another_type_fail_as_before() -> None:
    hotpath.install()
    h = http.Headers(FIELDS)
    for bad in (3, 1.5, object()):
        with pytest.raises(TypeError):
            h.get(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            original_get(h, bad)
    with pytest.raises(AttributeError):
        h.get(None)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        original_get(h, None)


def test_lookups_follow_changes_to_the_headers() -> None:
    hotpath.install()
    h = http.Headers(FIELDS)
    h["X-New"] = "v"
    del h["x-dup"]
    h.add("X-New", "w")
    assert h.get("x-new") == "v, w"
    assert "x-dup" not in h
    assert h.get_all("X-NEW") == ["v", "w"]


def test_an_absent_header_is_looked_up_without_an_exception() -> None:
    # What the replacement saves: mitmproxy raised and caught a KeyError for
    # every absent header a layer asked for (most of them, per request).
    hotpath.install()
    h = http.Headers(FIELDS)
    assert raised_during(lambda: (h.get("transfer-encoding"), "expect" in h)) == []
    assert "KeyError" in raised_during(lambda: Mapping.get(h, "transfer-encoding"))


def test_options_read_as_before_and_mutable_values_are_still_copies() -> None:
    hotpath.install()
    opts = options.Options()
    assert opts.listen_port is None
    assert opts.ssl_insecure is False
    assert opts.mode == ["regular"]
    opts.update(listen_port=8080, ssl_insecure=True, allow_hosts=["a.test"])
    assert (opts.listen_port, opts.ssl_insecure) == (8080, True)
    hosts = opts.allow_hosts
    hosts.append("b.test")
    assert opts.allow_hosts == ["a.test"]  # the caller got a copy
    assert opts.allow_hosts is not opts.allow_hosts


def test_a_mitmproxy_whose_headers_differ_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        inspect,
        "getsource",
        lambda obj, _real=inspect.getsource: (
            _real(obj) + "\n    def _kconv(key): return key.casefold()\n"
            if obj is http.Headers
            else _real(obj)
        ),
    )
    with pytest.raises(RuntimeError, match=r"Headers as reviewed"):
        hotpath.check_compatible()


def test_headers_with_their_own_get_or_a_subclass_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http.Headers, "get", lambda self, key, default=None: default, raising=False)
    with pytest.raises(RuntimeError, match=r"Headers.get from Mapping"):
        hotpath.check_compatible()
    monkeypatch.undo()

    class Sub(http.Headers):
        pass

    try:
        with pytest.raises(RuntimeError, match=r"no subclass of Headers"):
            hotpath.check_compatible()
    finally:
        del Sub
        import gc

        gc.collect()
    hotpath.check_compatible()


def _outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return ("ok", fn())
    except Exception as exc:  # the same exception type, or the same answer
        return ("raised", type(exc))


_names = st.one_of(
    st.sampled_from([b"Authorization", b"AUTHORIZATION", b"content-encoding", b"Content-Length"]),
    st.binary(max_size=12),
)


@settings(max_examples=500, deadline=None)
@given(
    fields=st.lists(st.tuples(_names, st.binary(max_size=12)), max_size=8),
    key=st.one_of(
        st.text(max_size=14),
        st.binary(max_size=14),
        st.sampled_from(["authorization", "Content-Encoding", "\udcff", "\ud800", "K\u212a"]),
    ),
)
def test_lookups_answer_what_mitmproxy_answers_for_any_fields_and_key(
    fields: list[tuple[bytes, bytes]], key: str | bytes
) -> None:
    """Any bytes in names and values (non-UTF-8, non-ASCII, case pairs),
    any key (surrogates, unencodable, Kelvin sign): the same answer or the
    same exception as mitmproxy's own look-ups."""
    hotpath.install()
    h = http.Headers(fields)
    assert _outcome(lambda: h.get_all(key)) == _outcome(lambda: original_get_all(h, key))
    assert _outcome(lambda: h.get(key)) == _outcome(lambda: original_get(h, key))
    assert _outcome(lambda: key in h) == _outcome(lambda: bool(original_get_all(h, key)))
