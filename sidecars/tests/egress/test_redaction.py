"""Log redaction: the daemon's own secrets and token-shaped strings."""

from __future__ import annotations

import io
import json

from bot_bottle_sidecars.egress.eventlog import EventLog, Redactor


def test_known_secret_is_redacted_in_plain_and_json_escaped_form() -> None:
    out = io.StringIO()
    log = EventLog("blocks", Redactor(['s3"cr\\et-value']), out)
    log.block("refused", path='/a/s3"cr\\et-value/b', note="x")
    line = out.getvalue()
    assert "cr\\\\et" not in line and "[REDACTED]" in line
    assert json.loads(line)["note"] == "x"


def test_token_shapes_are_redacted() -> None:
    redact = Redactor()
    for text in (
        "Authorization: Bearer abcdefghijklmnop",
        "key sk-ant-api03-abcdefghijklmnopqrstuvwxyz",
        "ghp_abcdefghijklmnopqrstuvwxyz0123",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcdefghijk",
        "AKIAABCDEFGHIJKLMNOP",
        "x" * 10 + "0123456789abcdef0123456789abcdef0123456789",
    ):
        assert "[REDACTED]" in redact(text), text


def test_ordinary_text_is_left_alone() -> None:
    redact = Redactor()
    text = "GET /v1/messages api.anthropic.com status 200"
    assert redact(text) == text


def test_off_level_writes_only_the_boot_line() -> None:
    out = io.StringIO()
    log = EventLog("off", Redactor(), out)
    log.boot(routes=1)
    log.block("refused")
    log.traffic("request")
    log.error("boom")
    assert [json.loads(x)["event"] for x in out.getvalue().splitlines()] == ["egress started"]
