"""The reflected-credential check of response headers: its shortcut for
headers without the token gives what the full pipeline gives (reflect.py)."""

from __future__ import annotations

import pytest
from bot_bottle_sidecars.egress import reflect

from bot_bottle.secrets import Secret

TOKEN = "sk-reflect-0123456789abcdefXYZ"


def _fields(*pairs: tuple[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((k.encode(), v.encode("utf-8", "surrogateescape")) for k, v in pairs)


CASES = [
    _fields(),
    _fields(("Content-Type", "application/json"), ("Content-Length", "12")),
    _fields(("X-Echo", f"Bearer {TOKEN}")),
    _fields(("X-Echo", TOKEN.upper())),
    *[((b"Server", b"x"), (b"X-Debug", b"<" + form + b">")) for form in reflect.forms(TOKEN)],
    # The token split over two headers is not one match, in both paths.
    _fields(("A", TOKEN[:10]), ("B", TOKEN[10:])),
    # The token as a header *name*.
    _fields((TOKEN, "1")),
    # Undecodable bytes in a value around the token.
    ((b"X-Raw", b"\xff\xfe" + TOKEN.encode() + b"\x80"),),
]


@pytest.mark.parametrize("fields", CASES)
def test_the_shortcut_agrees_with_the_pipeline(fields: tuple[tuple[bytes, bytes], ...]) -> None:
    guard = reflect.ReflectionGuard(Secret(TOKEN))
    fast = guard.scan_headers(fields)
    full = guard.pipeline.scan_response(0, fields, None)
    assert fast == full
    assert bool(full) == any(
        f.lower() in b"".join(k + b": " + v + b"\n" for k, v in fields).lower()
        for f in reflect.forms(TOKEN)
    )


def test_a_header_holding_the_token_is_found() -> None:
    guard = reflect.ReflectionGuard(Secret(TOKEN))
    found = guard.scan_headers(_fields(("Content-Type", "text/plain"), ("X-Echo", TOKEN)))
    assert [f.rule for f in found] == [reflect.RULE]
    assert found[0].location.name == "X-Echo"
