"""What ``bot-bottle info`` shows: a resolved agent without any secret value.

Env entries appear by name with where the value will come from (literal,
asked at launch, or which host variables) — literal values are not shown
either, since a literal may be a credential.
"""

from __future__ import annotations

from typing import Any

from bot_bottle.manifest.env import EnvKind, env_kind, host_vars
from bot_bottle.manifest.models import Route
from bot_bottle.manifest.store import ResolvedAgent


def describe(agent: ResolvedAgent) -> dict[str, Any]:
    bottle = agent.bottle
    gi = agent.git_identity
    env = []
    for name, value in bottle.env.items():
        kind = env_kind(value)
        entry: dict[str, Any] = {"name": name, "source": kind.value}
        if kind is EnvKind.HOST:
            entry["host_vars"] = host_vars(value)
        env.append(entry)
    return {
        "agent": agent.name,
        "source": agent.source,
        "path": str(agent.path),
        "bottle": bottle.name,
        "extends": bottle.chain[1:],
        "files": [str(p) for p in agent.files],
        "agent_provider": bottle.agent_provider.template,
        "git_user": {
            "name": gi.name,
            "name_from": gi.name_from,
            "email": gi.email,
            "email_from": gi.email_from,
        },
        "skills": list(agent.skills),
        "env": env,
        "supervise": bottle.supervise,
        "resources": {
            name: getattr(bottle.resources, name).model_dump()
            for name in ("agent", "bundle", "relay")
        },
        "extra_hosts": bottle.sidecar_extra_hosts(),
        "egress": {
            "log": bottle.egress.log,
            "upstream_ca": bottle.egress.upstream_ca,
            "routes": [_route(r) for r in bottle.egress.routes],
        },
        "git_gate": [
            {
                "name": r.name,
                "url": r.url.url,
                "host": r.url.host,
                "port": r.url.port,
                "path": r.url.path,
                "key_provider": r.key.provider,
            }
            for r in bottle.repos
        ],
        "prompt_lines": len(agent.prompt.splitlines()),
    }


def _route(route: Route) -> dict[str, Any]:
    return {
        "host": route.host,
        "auth": route.auth.scheme if route.auth else None,
        "token_ref": route.auth.token_ref if route.auth else None,
        "matches": [m.model_dump() for m in route.matches],
        "dlp": route.dlp.model_dump(),
        "git_fetch": route.git.fetch,
    }


def _match(match: dict[str, Any]) -> str:
    """One match entry, compactly: ``GET,POST /prefix* =/exact ~regex [Header=v]``."""
    bits = []
    if match["methods"]:
        bits.append(",".join(match["methods"]))
    marks = {"prefix": "{}*", "exact": "={}", "regex": "~{}"}
    if match["paths"]:
        bits.append(" ".join(marks[p["type"]].format(p["value"]) for p in match["paths"]))
    for h in match["headers"]:
        op = "~" if h["type"] == "regex" else "="
        bits.append(f"[{h['name']}{op}{h['value']}]")
    return " ".join(bits)


def _detectors(value: Any) -> str:
    if value is None:
        return "all"
    if value is False:
        return "off"
    return ",".join(value) or "none"


def render(info: dict[str, Any]) -> str:
    lines = [
        f"agent:       {info['agent']} ({info['source']}: {info['path']})",
        f"bottle:      {info['bottle']}"
        + (f" (extends {' -> '.join(info['extends'])})" if info["extends"] else ""),
        f"provider:    {info['agent_provider']}",
    ]
    gu = info["git_user"]
    ident = []
    if gu["name"]:
        ident.append(f"{gu['name']} ({gu['name_from']})")
    if gu["email"]:
        ident.append(f"<{gu['email']}> ({gu['email_from']})")
    lines.append(f"git user:    {' '.join(ident) or '(image default)'}")
    lines.append(f"skills:      {', '.join(info['skills']) or '-'}")
    env_bits = []
    for e in info["env"]:
        if e["source"] == "prompt":
            env_bits.append(f"{e['name']} (asked at launch)")
        elif e["source"] == "host":
            env_bits.append(f"{e['name']} (from ${', $'.join(e['host_vars'])})")
        else:
            env_bits.append(e["name"])
    lines.append(f"env:         {', '.join(env_bits) or '-'}")
    lines.append(f"supervise:   {'on' if info['supervise'] else 'off'}")
    for name, limits in info["resources"].items():
        shown = ", ".join(f"{k} {'unlimited' if v is None else v}" for k, v in limits.items())
        lines.append(f"limits:      {name}: {shown}")
    eg = info["egress"]
    lines.append(
        f"egress:      log={eg['log']}"
        + (f" upstream_ca={eg['upstream_ca']}" if eg["upstream_ca"] else "")
        + ("" if eg["routes"] else " (no routes: nothing is reachable)")
    )
    for r in eg["routes"]:
        bits = [f"  {r['host']}"]
        if r["auth"]:
            bits.append(f"[auth:{r['auth']} from ${r['token_ref']}]")
        if r["matches"]:
            bits.append("only " + " | ".join(_match(m) for m in r["matches"]))
        if r["git_fetch"]:
            bits.append("git fetch")
        dlp = r["dlp"]
        bits.append(
            f"dlp out={_detectors(dlp['outbound_detectors'])} "
            f"in={_detectors(dlp['inbound_detectors'])}"
        )
        lines.append(" ".join(bits))
    lines.append(f"git gate:    {'' if info['git_gate'] else '-'}".rstrip())
    for g in info["git_gate"]:
        lines.append(f"  {g['name']}  {g['url']}  key: {g['key_provider']}")
    if info["extra_hosts"]:
        pins = ", ".join(f"{h} -> {ip}" for h, ip in info["extra_hosts"].items())
        lines.append(f"extra hosts: {pins}")
    lines.append(f"prompt:      {info['prompt_lines']} line(s)")
    lines.append("files:       " + ", ".join(info["files"]))
    return "\n".join(lines) + "\n"
