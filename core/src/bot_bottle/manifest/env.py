"""Resolving a bottle's ``env`` at launch: values become :class:`Secret`.

Three forms, checked at load time (:mod:`bot_bottle.manifest.models`):

* a literal: ``LOG_LEVEL: debug``;
* ``?prompt``: the operator is asked at launch, without echo;
* ``${HOST_VAR}`` anywhere in the value: the host's variable is
  interpolated (``$$`` is a literal ``$``).

Every resolved value is a :class:`~bot_bottle.secrets.Secret`, literal or
not, so no code path has to decide which values may be printed: none are.
Errors name the variable, never its value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum

from bot_bottle.errors import BotBottleError
from bot_bottle.manifest.models import PROMPT, env_value_parts
from bot_bottle.secrets import Secret


class EnvKind(StrEnum):
    LITERAL = "literal"
    PROMPT = "prompt"
    HOST = "host"  # interpolates host variables


def env_kind(value: str) -> EnvKind:
    if value.strip().lower() == PROMPT:
        return EnvKind.PROMPT
    if any(kind == "var" for kind, _ in env_value_parts(value)):
        return EnvKind.HOST
    return EnvKind.LITERAL


def host_vars(value: str) -> list[str]:
    """The host variables ``value`` interpolates (for preflight summaries)."""
    if env_kind(value) is EnvKind.PROMPT:
        return []
    return [text for kind, text in env_value_parts(value) if kind == "var"]


def _ask_without_echo(name: str) -> str:
    import getpass

    return getpass.getpass(f"value for {name} (not echoed): ")


def resolve_env(
    env: Mapping[str, str],
    *,
    host_env: Mapping[str, str],
    ask: Callable[[str], str] = _ask_without_echo,
) -> dict[str, Secret]:
    """Resolve every entry of ``env``. ``ask(name)`` is called for each
    ``?prompt`` entry (default: a no-echo terminal prompt)."""
    out: dict[str, Secret] = {}
    missing: list[str] = []
    for name, value in env.items():
        kind = env_kind(value)
        if kind is EnvKind.PROMPT:
            out[name] = Secret(ask(name))
            continue
        text = ""
        for part, piece in env_value_parts(value):
            if part == "text":
                text += piece
            elif piece in host_env:
                text += host_env[piece]
            else:
                missing.append(f"{name} needs ${{{piece}}}")
        out[name] = Secret(text)
    if missing:
        raise BotBottleError(
            "host environment variables are not set: " + "; ".join(missing),
            hint="export them in the shell that runs bot-bottle, or change the bottle's env",
        )
    return out
