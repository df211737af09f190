"""Env resolution: literal, ?prompt, ${HOST_VAR}; values only as Secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot_bottle.errors import BotBottleError
from bot_bottle.manifest import EnvKind, Manifest, env_kind, host_vars, resolve_env
from bot_bottle.secrets import Secret

from .conftest import MINIMAL_BOTTLE, Write


def test_kinds() -> None:
    assert env_kind("plain") is EnvKind.LITERAL
    assert env_kind("?prompt") is EnvKind.PROMPT
    assert env_kind("${X}") is EnvKind.HOST
    assert env_kind("cost: $$5") is EnvKind.LITERAL
    assert host_vars("a-${X}-${Y}") == ["X", "Y"]


def test_resolution_gives_secrets() -> None:
    asked: list[str] = []

    def ask(name: str) -> str:
        asked.append(name)
        return "typed"

    out = resolve_env(
        {"A": "lit", "B": "?prompt", "C": "pre-${HOSTV}-$$", "D": "${HOSTV}"},
        host_env={"HOSTV": "hv"},
        ask=ask,
    )
    assert all(isinstance(v, Secret) for v in out.values())
    assert {k: v.reveal() for k, v in out.items()} == {
        "A": "lit",
        "B": "typed",
        "C": "pre-hv-$",
        "D": "hv",
    }
    assert asked == ["B"]
    assert "hv" not in repr(out) and "typed" not in repr(out)


def test_missing_host_variables_are_named_not_valued() -> None:
    with pytest.raises(BotBottleError) as e:
        resolve_env(
            {"TOKEN": "${NOPE}", "OTHER": "s3cret-${ALSO_NOPE}"},
            host_env={"UNRELATED": "zzz"},
            ask=lambda _n: "",
        )
    msg = str(e.value)
    assert "TOKEN needs ${NOPE}" in msg and "OTHER needs ${ALSO_NOPE}" in msg
    assert "s3cret" not in msg


def test_no_env_value_in_reprs_of_resolved_agents(
    write: Write, home: Path, manifest: Manifest
) -> None:
    write(home / "bottles", "b", MINIMAL_BOTTLE + "\nenv: {API_KEY: sk-live-0123456789}")
    write(home / "agents", "a", "bottle: b")
    agent = manifest.agent("a")
    assert "sk-live-0123456789" not in repr(agent)
    assert "sk-live-0123456789" not in repr(agent.bottle)
