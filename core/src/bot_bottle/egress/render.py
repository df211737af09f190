"""Host side: render a bottle's egress config from its routes and its provider's routes.

Pure: computes the config and the token environment, writes nothing. The
config names token *slots* (``EGRESS_TOKEN_<n>``); the returned environment
maps each slot to its :class:`~bot_bottle.secrets.Secret`, to be handed to the
egress daemon's environment only: no other process in the bundle, and never
the agent, may see a token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from bot_bottle.contracts.provider import ProviderRoute
from bot_bottle.egress.config import (
    DEFAULT_INTROSPECTION_HOST,
    EgressConfig,
    EgressConfigError,
    _describe,
    normalize_host,
)
from bot_bottle.secrets import Secret

TOKEN_SLOT_PREFIX = "EGRESS_TOKEN_"  # noqa: S105 - a variable name prefix, not a secret


@dataclass(frozen=True)
class RouteSpec:
    """A route as the bottle declares it (the manifest's route model maps onto this).

    ``matches`` uses the config's shape: a sequence of
    ``{"paths": [{"type", "value"}], "methods": [...], "headers": [{"name", "value", "type"}]}``.
    ``token`` is the credential to inject with ``auth_scheme``.
    """

    host: str
    ports: tuple[int, ...] = ()
    auth_scheme: Literal["Bearer", "token"] | None = None
    token: Secret | None = None
    matches: tuple[Mapping[str, Any], ...] = ()
    git_fetch: bool = False
    websocket: bool = False
    outbound_detectors: Literal[False] | tuple[str, ...] = False
    inbound_detectors: Literal[False] | tuple[str, ...] = False
    #: Where the route was declared, for error messages (e.g. "bottle dev, routes[2]").
    origin: str = "bottle"


def render_egress_config(
    routes: Sequence[RouteSpec],
    provider_routes: Sequence[ProviderRoute] = (),
    *,
    provider_name: str = "provider",
    log_level: Literal["off", "blocks", "full"] = "blocks",
    upstream_ca: str | None = None,
    introspection_host: str = DEFAULT_INTROSPECTION_HOST,
    extra_hosts: Mapping[str, str] | None = None,
    provider_dlp: Mapping[str, Any] | None = None,
) -> tuple[EgressConfig, dict[str, Secret]]:
    """Build the egress config and the token environment for one bottle.

    Provider routes win their host: a bottle route for the same host is
    dropped (the provider owns its API's credential). Token slots are numbered
    in route order. Raises :class:`EgressConfigError` naming the offending
    route when a route is invalid (bad host, a regex RE2 rejects, auth without
    a token, a token without a scheme).
    """
    provider_hosts: set[str] = set()
    for pr in provider_routes:
        provider_hosts.add(_host(pr.host, f"{provider_name} route {pr.host!r}"))

    raw: list[dict[str, Any]] = []
    origins: list[str] = []
    tokens: list[Secret | None] = []
    for pr in provider_routes:
        _check_auth(pr.auth_scheme, pr.token, f"{provider_name} route {pr.host!r}")
        entry: dict[str, Any] = {"host": pr.host, "source": f"provider:{provider_name}"}
        if pr.auth_scheme:
            entry["auth"] = {"scheme": pr.auth_scheme}
        if provider_dlp:
            entry["dlp"] = dict(provider_dlp)
        raw.append(entry)
        origins.append(f"{provider_name} route {pr.host!r}")
        tokens.append(pr.token)

    for spec in routes:
        host = _host(spec.host, spec.origin)
        if host in provider_hosts:
            continue  # the provider owns this host
        _check_auth(spec.auth_scheme, spec.token, spec.origin)
        entry = {
            "host": spec.host,
            "ports": list(spec.ports),
            "matches": [dict(m) for m in spec.matches],
            "git": {"fetch": spec.git_fetch},
            "websocket": spec.websocket,
            "dlp": {
                "outbound_detectors": _sel(spec.outbound_detectors),
                "inbound_detectors": _sel(spec.inbound_detectors),
            },
            "source": "bottle",
        }
        if spec.auth_scheme:
            entry["auth"] = {"scheme": spec.auth_scheme}
        raw.append(entry)
        origins.append(spec.origin)
        tokens.append(spec.token)

    env: dict[str, Secret] = {}
    for entry, token in zip(raw, tokens, strict=True):
        if "auth" in entry and token is not None:
            slot = f"{TOKEN_SLOT_PREFIX}{len(env) + 1}"
            entry["auth"]["token_slot"] = slot
            env[slot] = token

    doc = {
        "routes": raw,
        "log_level": log_level,
        "upstream_ca": upstream_ca,
        "introspection_host": introspection_host,
        "extra_hosts": dict(extra_hosts or {}),
    }
    try:
        config = EgressConfig.model_validate(doc)
    except ValidationError as exc:
        raise EgressConfigError(
            f"egress routes are invalid: {_describe_routes(exc, origins)}",
            hint="fix the route in the bottle's egress block",
        ) from None
    return config, env


def _sel(value: Literal[False] | Sequence[str]) -> Literal[False] | list[str]:
    return False if value is False else list(value)


def _host(host: str, origin: str) -> str:
    try:
        return normalize_host(host)
    except ValueError as exc:
        raise EgressConfigError(
            f"{origin}: {exc}", hint="routes take a DNS host name like api.example.com"
        ) from None


def _check_auth(scheme: str | None, token: Secret | None, origin: str) -> None:
    if scheme and token is None:
        raise EgressConfigError(
            f"{origin}: auth scheme {scheme!r} has no token",
            hint="give the route a token (e.g. token: ${HOST_VAR}) or drop its auth",
        )
    if token is not None and not scheme:
        raise EgressConfigError(
            f"{origin}: a token is given without an auth scheme",
            hint="set auth scheme Bearer or token",
        )


def _describe_routes(exc: ValidationError, origins: list[str]) -> str:
    # Replace "routes.<i>" with where the route came from.
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = list(err["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "routes" and isinstance(loc[1], int):
            where = origins[loc[1]] if loc[1] < len(origins) else f"routes[{loc[1]}]"
            loc = loc[2:]
        path = ".".join(str(p) for p in loc)
        label = ", ".join(p for p in (where, path) if p)
        parts.append(f"{label}: {err['msg']}" if label else err["msg"])
    return "; ".join(parts) or _describe(exc)
