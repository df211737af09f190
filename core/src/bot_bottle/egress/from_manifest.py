"""Host side: a bottle's egress config from its manifest.

Maps the effective :class:`~bot_bottle.manifest.Bottle` (``egress.routes[]``,
``egress.log``, ``egress.upstream_ca``, ``extra_hosts``) plus the provider's
routes onto :func:`~bot_bottle.egress.render.render_egress_config`:

* ``auth.token_ref`` names a *host* environment variable; its value is read
  here into a :class:`~bot_bottle.secrets.Secret` and handed back in the
  token environment (``EGRESS_TOKEN_<n>``), never written to the config;
* a route's ``dlp`` selection is resolved against the installed detector
  plugins: key absent means every installed detector of that direction, so
  the rendered config (and the agent's introspection) names each one;
  ``false`` is off; a list is checked (each detector must scan that direction);
* the bottle's other secrets (``?prompt`` answers and ``${HOST_VAR}``
  values of its ``env``) go in ``EGRESS_SECRET_<n>`` slots, for the
  ``known_secrets`` detector: the egress daemon holds them in memory only;
* ``upstream_ca`` is a host file; the config names where the launcher mounts
  it in the sidecar (:data:`UPSTREAM_CA_SIDECAR_PATH` by default).

Everything returned for the daemon's environment must reach the egress daemon
and no other process: git-gate, supervise and the agent never see a token.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bot_bottle.contracts.dlp import Direction, DlpDetector
from bot_bottle.contracts.provider import ProviderRoute
from bot_bottle.egress.config import (
    DEFAULT_INTROSPECTION_HOST,
    EgressConfig,
    EgressConfigError,
    is_ip_literal,
)
from bot_bottle.egress.render import RouteSpec, render_egress_config
from bot_bottle.errors import BotBottleError, PluginError
from bot_bottle.secrets import Secret

if TYPE_CHECKING:
    from bot_bottle.manifest.models import Bottle, Route
    from bot_bottle.plugins import PluginHost

#: Environment slots of the bottle's non-token secrets (known_secrets input).
KNOWN_SECRET_PREFIX = "EGRESS_SECRET_"  # noqa: S105 - a variable name prefix, not a secret
#: Where the launcher mounts the bottle's ``upstream_ca`` inside the sidecar
#: (next to the config, in the directory the host renders).
UPSTREAM_CA_SIDECAR_PATH = "/etc/bot-bottle/egress/upstream-ca.pem"
#: Shorter values would match ordinary text (the known_secrets detector
#: ignores them too): ``?prompt``-ing "yes" must not block every request.
MIN_KNOWN_SECRET_LEN = 8

Selection = Literal[False] | tuple[str, ...]


@dataclass(frozen=True)
class EgressPlan:
    """The egress daemon's config and the secrets its environment needs."""

    config: EgressConfig
    #: ``EGRESS_TOKEN_<n>`` -> the route's credential (the config names the slot).
    tokens: dict[str, Secret]
    #: ``EGRESS_SECRET_<n>`` -> a bottle secret DLP must not let out.
    known_secrets: dict[str, Secret] = field(default_factory=dict)
    #: The host file to mount at ``config.upstream_ca``, if any.
    upstream_ca: Path | None = None

    def daemon_env(self) -> dict[str, Secret]:
        """Every variable the egress daemon (and only it) must get."""
        return {**self.tokens, **self.known_secrets}


def egress_from_manifest(
    bottle: Bottle,
    *,
    host: PluginHost,
    host_env: Mapping[str, str],
    provider_routes: Sequence[ProviderRoute] = (),
    provider_name: str = "provider",
    provider_dlp: Mapping[str, Any] | None = None,
    env_secrets: Mapping[str, Secret] | None = None,
    upstream_ca_path: str = UPSTREAM_CA_SIDECAR_PATH,
    introspection_host: str = DEFAULT_INTROSPECTION_HOST,
) -> EgressPlan:
    """Render ``bottle``'s egress config.

    ``host`` supplies the DLP detector plugins (to resolve "every installed
    detector"); ``host_env`` the variables ``auth.token_ref`` names.
    ``provider_routes`` come from the provider's plan; they win their host
    over a bottle route, and are scanned with every installed detector unless
    ``provider_dlp`` (``{"outbound_detectors": ..., "inbound_detectors": ...}``)
    says otherwise. ``env_secrets`` is the bottle's resolved ``env``
    (:func:`bot_bottle.manifest.resolve_env`); its prompted and interpolated
    values become known secrets, its literals do not.

    Raises :class:`~bot_bottle.errors.BotBottleError` naming the route and the
    variable when a token variable is unset, and for any invalid route.
    """
    detectors = _Detectors(host)
    specs: list[RouteSpec] = []
    missing: list[str] = []
    for index, route in enumerate(bottle.egress.routes):
        origin = f"bottle {bottle.name!r} egress.routes[{index}] ({route.host})"
        token: Secret | None = None
        if route.auth is not None:
            value = host_env.get(route.auth.token_ref)
            if not value:
                missing.append(f"{route.auth.token_ref} (auth.token_ref of {origin})")
            else:
                token = Secret(value)
        specs.append(_spec(route, origin, token, detectors))
    if missing:
        raise BotBottleError(
            "host environment variables for egress credentials are not set or empty: "
            + "; ".join(missing),
            hint="export each variable in the shell that runs bot-bottle, "
            "or remove the route's auth block",
        )
    if provider_dlp is None:
        provider_dlp = {
            "outbound_detectors": list(detectors.installed(Direction.OUTBOUND)),
            "inbound_detectors": list(detectors.installed(Direction.INBOUND)),
        }
    ca_host = _upstream_ca(bottle)
    config, tokens = render_egress_config(
        specs,
        provider_routes,
        provider_name=provider_name,
        log_level=bottle.egress.log,
        upstream_ca=upstream_ca_path if ca_host is not None else None,
        introspection_host=introspection_host,
        extra_hosts=_extra_hosts(bottle),
        provider_dlp=provider_dlp,
    )
    known = _known_secrets(bottle, env_secrets or {}, tokens.values())
    return EgressPlan(config=config, tokens=tokens, known_secrets=known, upstream_ca=ca_host)


def _spec(route: Route, origin: str, token: Secret | None, detectors: _Detectors) -> RouteSpec:
    matches = tuple(m.model_dump(mode="json") for m in route.matches)
    return RouteSpec(
        host=route.host,
        ports=tuple(route.ports),
        websocket=route.websocket,
        auth_scheme=route.auth.scheme if route.auth is not None else None,
        token=token,
        matches=matches,
        git_fetch=route.git.fetch,
        outbound_detectors=detectors.select(
            route.dlp.outbound_detectors, Direction.OUTBOUND, origin
        ),
        inbound_detectors=detectors.select(route.dlp.inbound_detectors, Direction.INBOUND, origin),
        origin=origin,
    )


class _Detectors:
    """The installed DLP detectors' directions, each plugin built once."""

    def __init__(self, host: PluginHost) -> None:
        self._host = host
        self._directions: dict[str, Direction] = {}

    def _direction(self, name: str) -> Direction:
        if name not in self._directions:
            component = self._host.component("dlp_detectors", name)
            if component.distribution is None:
                # Egress and git-gate run in the bundle image, which carries
                # installed distributions only: refuse now, not after a
                # minute of waiting for egress to start.
                raise PluginError(
                    f"dlp detector {name!r} comes from the contrib plugin "
                    f"{component.plugin!r}, which the sidecar bundle cannot carry",
                    hint="package it as a distribution and install it next to bot-bottle, "
                    "or leave it out (BOT_BOTTLE_DISABLED_PLUGINS="
                    f"{component.plugin} for this command)",
                )
            detector = component.create()
            if not isinstance(detector, DlpDetector):
                raise PluginError(
                    f"dlp detector {name!r} is not a DlpDetector (got {type(detector).__name__})",
                    hint="fix or disable the plugin that registers it",
                )
            self._directions[name] = detector.direction
        return self._directions[name]

    def installed(self, direction: Direction) -> tuple[str, ...]:
        """Every installed detector that scans ``direction``."""
        self._host.require_family("dlp_detectors")
        names = [c.name for c in self._host.components("dlp_detectors")]
        return tuple(n for n in names if self._direction(n).covers(direction))

    def select(
        self, selection: Literal[False] | list[str] | None, direction: Direction, origin: str
    ) -> Selection:
        if selection is False:
            return False
        if selection is None:
            return self.installed(direction)
        for name in selection:
            scans = self._direction(name)
            if not scans.covers(direction):
                raise EgressConfigError(
                    f"{origin}: dlp detector {name!r} scans {scans.value} traffic, "
                    f"not {direction.value}",
                    hint=f"list it under dlp.{scans.value}_detectors instead",
                )
        return tuple(dict.fromkeys(selection))


def _upstream_ca(bottle: Bottle) -> Path | None:
    raw = bottle.egress.upstream_ca
    if raw is None:
        return None
    path = Path(raw).expanduser()
    if not path.is_file():
        raise EgressConfigError(
            f"bottle {bottle.name!r}: egress.upstream_ca {raw} is not a file",
            hint="point upstream_ca at a PEM CA bundle on this host, or remove it",
        )
    return path


def _extra_hosts(bottle: Bottle) -> dict[str, str]:
    # Repos' pins too: the sidecars share one hosts file. A pin whose name is
    # itself an IP address means nothing to a resolver.
    return {h: ip for h, ip in bottle.sidecar_extra_hosts().items() if not is_ip_literal(h)}


def _known_secrets(
    bottle: Bottle, env_secrets: Mapping[str, Secret], tokens: Iterable[Secret]
) -> dict[str, Secret]:
    from bot_bottle.manifest.env import EnvKind, env_kind

    seen = {t.reveal() for t in tokens}
    out: dict[str, Secret] = {}
    for name, spec in bottle.env.items():
        secret = env_secrets.get(name)
        if secret is None or env_kind(spec) is EnvKind.LITERAL:
            # A literal is written in the bottle file for all to read; as a
            # known secret it would block every request mentioning it.
            continue
        value = secret.reveal()
        if len(value) < MIN_KNOWN_SECRET_LEN or value in seen:
            continue
        seen.add(value)
        out[f"{KNOWN_SECRET_PREFIX}{len(out) + 1}"] = secret
    return out
