"""Shared by ``start``, ``run`` and ``resume``: load the agent, pick backend and provider, plan."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from bot_bottle.contracts.backend import Backend, PreparedBottle
    from bot_bottle.contracts.provider import AgentProvider
    from bot_bottle.manifest.store import ResolvedAgent
    from bot_bottle.plan import BottlePlan
    from bot_bottle.plugins import PluginHost


def add_backend_args(p: argparse.ArgumentParser) -> None:
    from bot_bottle.contracts.backend import DEFAULT_BACKEND

    p.add_argument(
        "--backend", default=DEFAULT_BACKEND, help=f"backend plugin (default: {DEFAULT_BACKEND})"
    )
    p.add_argument(
        "--cwd",
        type=Path,
        help="host directory mounted at /workspace in the agent (default: none)",
    )
    p.add_argument("--label", help="a free-text label shown by 'list active'")
    add_gvisor_arg(p, help="do not use gVisor (runsc) even when the engine has it")


def add_gvisor_arg(p: argparse.ArgumentParser, *, help: str) -> None:
    """The Docker backend's one option, kept on the command line it always had;
    it reaches the backend through the plan's ``backend_options``."""
    p.add_argument("--no-gvisor", dest="gvisor", action="store_false", help=help)


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"gvisor": bool(getattr(args, "gvisor", True))}


def no_prompt(name: str) -> str:
    from bot_bottle.errors import BotBottleError

    raise BotBottleError(
        f"env {name} is '?prompt', but this command asks nothing",
        hint=f"export the value and use '${{{name}}}' in the bottle, or use 'bot-bottle start'",
    )


@dataclass(frozen=True)
class PlannedLaunch:
    """What ``start`` and ``run`` launch: the plan, the components that run
    it, and the provider's validated options (None when it has none)."""

    plan: BottlePlan
    backend: Backend
    provider: AgentProvider
    options: BaseModel | None


def plan_for(args: argparse.Namespace, agent_name: str, *, interactive: bool) -> PlannedLaunch:
    from bot_bottle.manifest.store import Manifest
    from bot_bottle.plugins import PluginHost

    host = PluginHost().load()
    agent = Manifest.discover(host=host).agent(agent_name)
    return plan_agent(
        args, host, agent, backend_name=args.backend, label=args.label, interactive=interactive
    )


def plan_agent(
    args: argparse.Namespace,
    host: PluginHost,
    agent: ResolvedAgent,
    *,
    backend_name: str,
    label: str | None,
    interactive: bool,
) -> PlannedLaunch:
    """Plan ``agent`` on ``backend_name`` with the command line's ``--cwd``
    and backend options; ``start``, ``run`` and ``resume`` all launch this way."""
    from bot_bottle.errors import BotBottleError
    from bot_bottle.plan import make_plan

    template = agent.bottle.agent_provider.template
    provider = host.create("agent_providers", template)
    backend = host.create("backends", backend_name)
    cwd = args.cwd.resolve() if args.cwd else None
    if cwd is not None and not cwd.is_dir():
        raise BotBottleError(f"--cwd {cwd} is not a directory")
    plan = make_plan(
        agent,
        provider,
        backend=backend_name,
        host=host,
        label=label,
        cwd=cwd,
        host_env=os.environ,
        ask=None if interactive else no_prompt,
        backend_options=backend_options(args),
        endpoint_host=backend.agent_endpoint_host,
    )
    return PlannedLaunch(plan, backend, provider, agent.resolved_bottle.provider_options)


def print_preflight(plan: BottlePlan, prepared: PreparedBottle, backend: Backend) -> None:
    import io

    from bot_bottle.termtext import visible

    out = io.StringIO()
    _preflight(plan, backend, out)
    # Agent, bottle, route and env names and the cwd come from the manifest.
    sys.stderr.write(visible(out.getvalue(), allow_newlines=True))


def _preflight(plan: BottlePlan, backend: Backend, out: Any) -> None:
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
    for name, state in backend.preflight(plan).items():
        out.write(f"   {name}: {state}")
    if s["cwd"]:
        out.write(f"   workspace: {s['cwd']} -> /workspace")
    out.write("\n")
    for name, limits in s["resources"].items():
        out.write(f"  limits {name}: {limits}\n")
