"""Secret values never show by accident (invariant 9)."""

from __future__ import annotations

import io
import json
import pickle

import pytest

from bot_bottle.log import configure_logging, get_logger
from bot_bottle.secrets import Secret


def test_secret_is_masked_in_repr_str_and_format() -> None:
    s = Secret("sk-live-123")
    assert "sk-live-123" not in repr(s) + str(s) + f"{s}" + f"{s!r}" + repr([s])
    assert s.reveal() == "sk-live-123"


def test_secret_refuses_to_pickle() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(Secret("x"))


def test_json_logs_mask_secret_objects_and_secret_named_fields() -> None:
    out = io.StringIO()
    configure_logging("json", stream=out)
    get_logger("t").info("launch", credential=Secret("AAA-secret"), api_token="BBB-secret")
    line = json.loads(out.getvalue())
    assert "AAA-secret" not in out.getvalue() and "BBB-secret" not in out.getvalue()
    assert line["event"] == "launch" and line["level"] == "info" and "timestamp" in line
    configure_logging("console")


def test_console_logs_are_one_readable_line() -> None:
    out = io.StringIO()
    configure_logging("console", stream=out)
    get_logger("t").warning("plugin failed", plugin="x")
    assert out.getvalue() == "warning: plugin failed (plugin=x)\n"
    configure_logging("console")
