"""A running bottle's egress routes, changed without a restart.

A change is validated with the manifest's own route model (and rendered by
the same code as at launch, DLP defaults included), recorded in the audit
log, written to the bottle's rendered config (the backend's atomic
``write_config``: write-then-rename in a mounted directory, or over exec in
a cluster) and applied with the egress daemon's SIGHUP
reload. Then the daemon's live table is read back: a daemon that refused the
file keeps its old table, so a mismatch means the change did not happen. The
old file is put back (the file and the table must agree for the next change)
and the caller gets the daemon's reason.

Credentials: a live route carries none. A credential reaches egress only
through the daemon's environment, set when the bottle starts; a route that
needs one goes in the manifest (``auth.token_ref`` names a host variable).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from bot_bottle import audit
from bot_bottle.contracts.backend import EgressControl
from bot_bottle.egress.config import EgressConfig, EgressConfigError, Route
from bot_bottle.errors import BotBottleError

if TYPE_CHECKING:
    from bot_bottle.plugins import PluginHost

RELOAD_TIMEOUT = 15.0
RELOAD_FAILED = "reload failed; keeping the previous routes"


class EgressReloadError(BotBottleError):
    """The daemon did not take the new table (it keeps the old one)."""


@dataclass(frozen=True)
class RouteChange:
    slug: str
    host: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def load_config(control: EgressControl) -> EgressConfig:
    source = f"bottle {control.slug}'s egress config"
    return EgressConfig.parse(control.read_config(), source=source)


def build_route(spec: Mapping[str, Any], *, plugins: PluginHost | None = None) -> Route:
    """``spec`` is an ``egress.routes[]`` entry as a manifest writes it."""
    from bot_bottle.egress.from_manifest import _Detectors, _spec
    from bot_bottle.egress.render import render_egress_config
    from bot_bottle.manifest.models import Route as ManifestRoute

    try:
        route = ManifestRoute.model_validate(dict(spec))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "route"
        raise EgressConfigError(
            f"invalid route: {where}: {first['msg']}",
            hint="a route is written as in a manifest's egress.routes[] (host, ports, matches)",
        ) from None
    if route.auth is not None:
        raise EgressConfigError(
            f"a live route cannot carry a credential ({route.host})",
            hint="credentials reach egress only when a bottle starts: add the route with "
            "auth.token_ref to the bottle's manifest and start a new bottle",
        )
    if plugins is None:
        from bot_bottle.plugins import PluginHost

        plugins = PluginHost().load()
    spec_ = _spec(route, f"live route {route.host}", None, _Detectors(plugins))
    config, _tokens = render_egress_config([spec_])
    return config.routes[0]


def _with_routes(config: EgressConfig, routes: list[Route]) -> EgressConfig:
    try:
        return EgressConfig.model_validate({**config.model_dump(), "routes": routes})
    except ValidationError as exc:
        raise EgressConfigError(
            f"the new route table is invalid: {exc.errors(include_url=False)[0]['msg']}",
            hint="nothing was changed",
        ) from None


def _canon(routes: Any) -> str:
    items = routes if isinstance(routes, list) else []
    return json.dumps(sorted(items, key=lambda r: str(r.get("host"))), sort_keys=True)


def apply_config(
    control: EgressControl, new: EgressConfig, *, timeout: float | None = None
) -> None:
    """Write ``new`` and reload; return once the daemon enforces it.

    Raises :class:`EgressReloadError` (the old file restored) when the
    daemon refuses it or does not take it within ``timeout``.
    """
    old = control.read_config()
    control.write_config(new.dump_json().encode())
    signalled = time.time()
    want = _canon([r.describe() for r in new.routes])
    deadline = time.monotonic() + (RELOAD_TIMEOUT if timeout is None else timeout)
    reason = "the egress daemon did not report the new table in time"
    # Any error from here on puts the old file back: a new one left behind
    # would be enforced at the daemon's next reload (or carried into the
    # next change) while the operator and the audit were told it failed.
    # That includes errors no backend wraps (a dropped exec connection).
    try:
        try:
            control.signal_reload()
        except BotBottleError as exc:
            reason = exc.message
            deadline = 0.0
        while time.monotonic() < deadline:
            try:
                live = control.live_routes()
            except BotBottleError as exc:
                reason = exc.message
                live = None
            if live is not None and _canon(live.get("routes")) == want:
                return
            try:
                events = control.events(since=signalled - 1)
            except BotBottleError:
                events = []  # the log unreadable for now: the table read back decides
            failed = [e for e in events if e.get("event") == RELOAD_FAILED]
            if failed:
                reason = f"egress refused the new config: {failed[-1].get('error', '?')}"
                break
            time.sleep(0.1)
    except BaseException:
        with contextlib.suppress(Exception):
            control.write_config(old)
            control.signal_reload()
        raise
    control.write_config(old)
    control.signal_reload()
    raise EgressReloadError(
        f"bottle {control.slug}: {reason}; it keeps its previous routes",
        hint="nothing changed; check 'bot-bottle egress routes SLUG' and the bundle's log",
    )


def allow(
    control: EgressControl,
    spec: Mapping[str, Any],
    *,
    plugins: PluginHost | None = None,
    comment: str | None = None,
    proposal: str | None = None,
) -> RouteChange:
    """Add (or replace) the route ``spec`` in the running bottle."""
    config = load_config(control)
    route = build_route(spec, plugins=plugins)
    current = config.route_for(route.host)
    if current is not None and current.auth is not None:
        raise EgressConfigError(
            f"{route.host} is a credential route of bottle {control.slug}",
            hint="change credential routes in the manifest; a live edit could widen "
            "what the credential is sent with",
        )
    if current is not None and current.source != "bottle":
        raise EgressConfigError(
            f"{route.host} is the provider's route ({current.source})",
            hint="the provider's routes are not edited live",
        )
    routes = [r for r in config.routes if r.host != route.host] + [route]
    new = _with_routes(config, routes)
    change = RouteChange(
        control.slug, route.host, current.describe() if current else None, route.describe()
    )
    audit.record(
        "egress.allow",
        bottle=control.slug,
        route=route.host,
        before=change.before,
        after=change.after,
        comment=comment or None,
        proposal=proposal,
    )
    _apply_or_record(control, new, "egress.allow", route.host)
    return change


def deny(control: EgressControl, host: str, *, comment: str | None = None) -> RouteChange:
    """Remove the route for ``host`` from the running bottle."""
    from bot_bottle.egress.config import normalize_host

    try:
        host = normalize_host(host)
    except ValueError as exc:
        raise EgressConfigError(str(exc), hint="give the route's host name") from None
    config = load_config(control)
    current = config.route_for(host)
    if current is None:
        raise EgressConfigError(
            f"bottle {control.slug} has no route for {host}",
            hint=f"see 'bot-bottle egress routes {control.slug}'",
        )
    new = _with_routes(config, [r for r in config.routes if r.host != host])
    change = RouteChange(control.slug, host, current.describe(), None)
    audit.record(
        "egress.deny",
        bottle=control.slug,
        route=host,
        before=change.before,
        after=None,
        comment=comment or None,
    )
    _apply_or_record(control, new, "egress.deny", host)
    return change


def _apply_or_record(control: EgressControl, new: EgressConfig, action: str, host: str) -> None:
    try:
        apply_config(control, new)
    except BotBottleError as exc:
        # The decision was logged before it was tried; log that it failed.
        audit.record(f"{action}.failed", bottle=control.slug, route=host, error=exc.message)
        raise


def refusals(control: EgressControl, since: float | None = None) -> list[dict[str, Any]]:
    """Egress's recent refusals (host, rule, time), oldest first."""
    return [e for e in control.events(since) if e.get("event") == "refused"]
