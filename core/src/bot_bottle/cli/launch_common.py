"""Shared by ``start`` and ``run``: load the agent, pick backend and provider, plan."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def add_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="docker", help="backend plugin (default: docker)")
    p.add_argument(
        "--cwd",
        type=Path,
        help="host directory mounted at /workspace in the agent (default: none)",
    )
    p.add_argument("--label", help="a free-text label shown by 'list active'")
    p.add_argument(
        "--no-gvisor",
        dest="gvisor",
        action="store_false",
        help="do not use gVisor (runsc) even when the engine has it",
    )


def no_prompt(name: str) -> str:
    from bot_bottle.errors import BotBottleError

    raise BotBottleError(
        f"env {name} is '?prompt', but this command asks nothing",
        hint=f"export the value and use '${{{name}}}' in the bottle, or use 'bot-bottle start'",
    )


def plan_for(args: argparse.Namespace, agent_name: str, *, interactive: bool) -> Any:
    """Return (plan, backend, provider, options)."""
    from bot_bottle.errors import BotBottleError
    from bot_bottle.manifest.store import Manifest
    from bot_bottle.plan import make_plan
    from bot_bottle.plugins import PluginHost

    host = PluginHost().load()
    manifest = Manifest.discover(host=host)
    agent = manifest.agent(agent_name)
    template = agent.bottle.agent_provider.template
    try:
        provider = host.create("agent_providers", template)
        backend = host.create("backends", args.backend)
    except BotBottleError:
        raise
    cwd = args.cwd.resolve() if args.cwd else None
    if cwd is not None and not cwd.is_dir():
        raise BotBottleError(f"--cwd {cwd} is not a directory")
    plan = make_plan(
        agent,
        provider,
        backend=args.backend,
        host=host,
        label=args.label,
        cwd=cwd,
        host_env=os.environ,
        ask=None if interactive else no_prompt,
        gvisor=args.gvisor,
    )
    return plan, backend, provider, agent.resolved_bottle.provider_options


def _gvisor_state(plan: Any) -> str:
    if plan.backend != "docker":
        return "n/a"
    from bot_bottle.dockerhost import DockerUnreachable, probe

    try:
        runtimes = probe(timeout=2.0).runtimes
    except DockerUnreachable:
        return "unknown (engine unreachable)"
    if "runsc" not in runtimes:
        return "not registered (runc)"
    return "runsc registered (used if the launch probe shows a bottle works under it)"


def print_preflight(plan: Any, prepared: Any) -> None:
    import io

    from bot_bottle.termtext import visible

    out = io.StringIO()
    _preflight(plan, out)
    # Agent, bottle, route and env names and the cwd come from the manifest.
    sys.stderr.write(visible(out.getvalue(), allow_newlines=True))


def _preflight(plan: Any, out: Any) -> None:
    s = plan.summary()
    out.write(f"bottle {s['slug']}: agent {s['agent']} (bottle {s['bottle']}, ")
    out.write(f"provider {s['provider']}, backend {s['backend']})\n")
    out.write(f"  egress routes: {', '.join(s['egress_routes']) or '(none: nothing leaves)'}\n")
    if s["credential_slots"]:
        out.write(f"  credentials injected by egress: {len(s['credential_slots'])}\n")
    if s["git_gate_repos"]:
        out.write(f"  git-gate: {', '.join(s['git_gate_repos'])}\n")
    out.write(f"  env: {', '.join(s['env'])}\n")
    out.write(f"  supervise: {'on' if s['supervise'] else 'off'}")
    out.write(f"   gvisor: {_gvisor_state(plan) if s['gvisor'] else 'off (--no-gvisor)'}")
    if s["cwd"]:
        out.write(f"   workspace: {s['cwd']} -> /workspace")
    out.write("\n")
    for name, limits in s["resources"].items():
        out.write(f"  limits {name}: {limits}\n")
