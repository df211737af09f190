"""The host's Codex login, read at plan time, and the dummy login the agent gets.

``~/.codex/auth.json`` (or ``$CODEX_HOME/auth.json``) holds either an API
key (``OPENAI_API_KEY``) or a ChatGPT login (``tokens``: ``id_token``,
``access_token`` -- both JWTs -- ``refresh_token``, ``account_id``). The
real access token (or key) goes to egress as a :class:`Secret`; the agent's
``auth.json`` gets dummy JWTs that carry the real token's ``exp``: Codex
refreshes when its local token's ``exp`` lapses, and a refresh with the
placeholder refresh token fails and drops it to the sign-in screen (the
seed's *codex_auth* bug). The dummies are built from scratch (own header,
only the claims Codex reads), so no part of a real token reaches the agent.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot_bottle.errors import BotBottleError
from bot_bottle.provider_kit import PLACEHOLDER
from bot_bottle.secrets import Secret

#: Claims Codex reads from the ID token (plan, account, email).
_ID_CLAIMS = ("email", "email_verified", "https://api.openai.com/auth",
              "https://api.openai.com/profile")  # fmt: skip
_ACCESS_CLAIMS = ("https://api.openai.com/auth",)
_DUMMY_SIGNATURE = base64.urlsafe_b64encode(b"bot-bottle placeholder: not a signature")


class CodexAuthError(BotBottleError):
    """The host's Codex login is missing or unusable."""


@dataclass(frozen=True)
class HostLogin:
    """What the host's ``auth.json`` gave: the credential egress injects and
    the dummy ``auth.json`` text the agent gets."""

    mode: str  # "chatgpt" or "apikey"
    token: Secret
    agent_auth_json: str
    expires_at: int | None = None


def auth_path(host_env: Mapping[str, str], codex_home: str | None = None) -> Path:
    if codex_home:
        return Path(codex_home).expanduser() / "auth.json"
    if host_env.get("CODEX_HOME"):
        return Path(host_env["CODEX_HOME"]).expanduser() / "auth.json"
    home = host_env.get("HOME")
    return (Path(home) if home else Path.home()) / ".codex" / "auth.json"


def read_host_login(path: Path, *, now: float | None = None) -> HostLogin:
    """Read ``path``; errors name the file and never quote its content."""
    hint = "run 'codex login' on the host (or turn forward_host_credentials off)"
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CodexAuthError(
            f"forward_host_credentials is on but there is no Codex login at {path}", hint=hint
        ) from None
    except OSError as exc:
        raise CodexAuthError(f"cannot read {path}: {exc.strerror}", hint=hint) from None
    try:
        data = json.loads(raw)
    except ValueError:
        raise CodexAuthError(f"{path} is not valid JSON", hint=hint) from None
    if not isinstance(data, dict):
        raise CodexAuthError(f"{path} does not hold a Codex login object", hint=hint)
    tokens = data.get("tokens")
    if isinstance(tokens, dict) and tokens.get("access_token"):
        return _chatgpt_login(path, data, tokens, now=time.time() if now is None else now)
    key = data.get("OPENAI_API_KEY")
    if isinstance(key, str) and key.strip():
        agent = {"OPENAI_API_KEY": PLACEHOLDER, "tokens": None, "last_refresh": None}
        return HostLogin("apikey", Secret(key.strip()), json.dumps(agent, indent=2) + "\n")
    raise CodexAuthError(f"{path} holds neither ChatGPT tokens nor an API key", hint=hint)


def _chatgpt_login(
    path: Path, data: dict[str, Any], tokens: dict[str, Any], *, now: float
) -> HostLogin:
    access = str(tokens["access_token"])
    access_claims = jwt_claims(access, what=f"the access token in {path}")
    id_token = tokens.get("id_token")
    id_claims = (
        jwt_claims(str(id_token), what=f"the ID token in {path}")
        if isinstance(id_token, str)
        else {}
    )
    exp = access_claims.get("exp")
    if isinstance(exp, int | float) and exp <= now:
        raise CodexAuthError(
            f"the Codex login in {path} expired at "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(exp))}",
            hint="run codex once on the host (it refreshes the login), then start the bottle",
        )
    agent = {
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": dummy_jwt(id_claims or access_claims, _ID_CLAIMS),
            "access_token": dummy_jwt(access_claims, _ACCESS_CLAIMS),
            "refresh_token": PLACEHOLDER,
            # The account id is an identifier, not a credential; Codex sends
            # it as the ChatGPT-Account-Id header.
            "account_id": tokens.get("account_id"),
        },
        "last_refresh": data.get("last_refresh"),
    }
    return HostLogin(
        "chatgpt",
        Secret(access),
        json.dumps(agent, indent=2) + "\n",
        expires_at=int(exp) if isinstance(exp, int | float) else None,
    )


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_claims(token: str, *, what: str) -> dict[str, Any]:
    """The payload of a JWT, without checking its signature (not ours to check)."""
    parts = token.split(".")
    try:
        if len(parts) != 3:
            raise ValueError
        claims = json.loads(_b64url_decode(parts[1]))
    except (ValueError, binascii.Error):
        raise CodexAuthError(
            f"{what} is not a JWT", hint="run 'codex login' on the host again"
        ) from None
    if not isinstance(claims, dict):
        raise CodexAuthError(f"{what} has no claims object", hint="run 'codex login' again")
    return claims


def dummy_jwt(claims: Mapping[str, Any], keep: tuple[str, ...]) -> str:
    """A JWT with the real ``exp``/``iat`` and the claims Codex reads, an
    ``alg: none`` header that says what it is, and no real signature."""
    header = {"alg": "none", "typ": "JWT", "bot_bottle": "placeholder"}
    body: dict[str, Any] = {"bot_bottle": "placeholder: egress injects the real token"}
    for name in ("exp", "iat", *keep):
        if name in claims:
            body[name] = claims[name]
    return ".".join(
        (
            _b64url(json.dumps(header, separators=(",", ":")).encode()),
            _b64url(json.dumps(body, separators=(",", ":")).encode()),
            _DUMMY_SIGNATURE.rstrip(b"=").decode(),
        )
    )
