"""The sidecar bundle's files and init plan for one bottle, as data.

Backends that run the bundle in a container (Docker; the microVM backends
run their sidecars in Docker too) write :func:`bundle_files` into a host
directory mounted at :data:`ETC` and start the bundle with the init plan.

Inside the bundle every daemon listens on loopback only; the relay daemon
serves each endpoint also as a Unix socket in :data:`SOCK_DIR`, the one
directory shared with the agent side (see ``bot_bottle_sidecars.relay``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from bot_bottle.plan import GIT_PORT, LOOPBACK, MCP_PORT, PROXY_PORT

if TYPE_CHECKING:
    from bot_bottle.plan import BottlePlan

ETC = "/etc/bot-bottle"
CA_DIR = f"{ETC}/ca"
EGRESS_CONFIG = f"{ETC}/egress/egress.json"
UPSTREAM_CA = f"{ETC}/upstream-ca.pem"
INIT_PLAN = f"{ETC}/init-plan.json"
GATE_ROOT = f"{ETC}/git-gate"
GATE_KEYS = f"{GATE_ROOT}/keys"
GATE_BASE = "/var/lib/bot-bottle/git"
QUEUE_DIR = "/var/lib/bot-bottle/queue"
SOCK_DIR = "/run/bot-bottle/sock"
BUNDLE_READY = "bundle.ready"
AGENT_READY = "agent.ready"
PY = "/opt/bot-bottle/bin/python"

#: endpoint name -> port (the same on both ends of the relay)
ENDPOINTS = {"proxy": PROXY_PORT, "git": GIT_PORT, "mcp": MCP_PORT}


def endpoints(plan: BottlePlan) -> dict[str, int]:
    """The endpoints this bottle serves (git only with repos, mcp only with supervise)."""
    out = {"proxy": PROXY_PORT}
    if plan.gitgate is not None and plan.gitgate.enabled:
        out["git"] = GIT_PORT
    if plan.supervise:
        out["mcp"] = MCP_PORT
    return out


def socket_path(name: str) -> str:
    return f"{SOCK_DIR}/{name}.sock"


def bundle_relay_argv(plan: BottlePlan) -> list[str]:
    pairs = [f"unix:{socket_path(n)}=tcp:{LOOPBACK}:{port}" for n, port in endpoints(plan).items()]
    return [
        PY, "-m", "bot_bottle_sidecars.relay", "--wait-targets",
        "--ready-file", f"{SOCK_DIR}/{BUNDLE_READY}", *pairs,
    ]  # fmt: skip


def agent_relay_argv(plan: BottlePlan) -> list[str]:
    """Runs in a container sharing only the agent's network namespace."""
    pairs = [f"tcp:{LOOPBACK}:{port}=unix:{socket_path(n)}" for n, port in endpoints(plan).items()]
    return [
        PY, "-m", "bot_bottle_sidecars.relay",
        "--ready-file", f"{SOCK_DIR}/{AGENT_READY}", *pairs,
    ]  # fmt: skip


def introspection_host(plan: BottlePlan) -> str:
    from bot_bottle.egress.config import DEFAULT_INTROSPECTION_HOST

    cfg = plan.egress_config
    return cfg.introspection_host if cfg is not None else DEFAULT_INTROSPECTION_HOST


def introspection_url(plan: BottlePlan) -> str:
    """supervise reads the route table from egress directly (no proxy): the
    bundle pins the introspection name to its loopback (:func:`bundle_hosts`)."""
    return f"http://{introspection_host(plan)}:{PROXY_PORT}/routes"


def bundle_hosts(plan: BottlePlan) -> dict[str, str]:
    """``/etc/hosts`` pins of the bundle: the bottle's, plus the introspection name."""
    return {**plan.extra_hosts, introspection_host(plan): LOOPBACK}


def init_plan(plan: BottlePlan) -> dict[str, object]:
    daemons: list[dict[str, object]] = [
        {
            "name": "egress",
            "argv": [
                PY,
                "-m",
                "bot_bottle_sidecars.egress",
                "--config",
                EGRESS_CONFIG,
                "--confdir",
                CA_DIR,
                "--listen-host",
                LOOPBACK,
                "--listen-port",
                str(PROXY_PORT),
            ],
            "env": ["EGRESS_TOKEN_*", "EGRESS_SECRET_*"],
        }
    ]
    if plan.gitgate is not None and plan.gitgate.enabled:
        daemons.append(
            {
                "name": "git-gate",
                "argv": [
                    PY,
                    "-m",
                    "bot_bottle_sidecars.gitgate",
                    "--config",
                    plan.gitgate.config_path,
                    "--base",
                    GATE_BASE,
                    "--port",
                    str(GIT_PORT),
                    "--listen",
                    LOOPBACK,
                ],
            }
        )
    if plan.supervise:
        daemons.append(
            {
                "name": "supervise",
                "argv": [
                    PY,
                    "-m",
                    "bot_bottle_sidecars.supervise",
                    "--queue-dir",
                    QUEUE_DIR,
                    "--bottle-slug",
                    plan.slug,
                    "--host",
                    LOOPBACK,
                    "--port",
                    str(MCP_PORT),
                    "--allowed-host",
                    f"{LOOPBACK}:{MCP_PORT}",
                    "--egress-introspection-url",
                    introspection_url(plan),
                ],
            }
        )
    daemons.append({"name": "relay", "argv": bundle_relay_argv(plan)})
    return {"grace_seconds": 2, "daemons": daemons}


def bundle_files(plan: BottlePlan) -> dict[str, str]:
    """Files under :data:`ETC` (relative paths): init plan, egress config,
    git-gate config and pinned known_hosts. No secret is in any of them."""
    files: dict[str, str] = {"init-plan.json": json.dumps(init_plan(plan), indent=2)}
    if plan.egress_config is not None:
        files["egress/egress.json"] = plan.egress_config.model_dump_json(indent=2)
    if plan.gitgate is not None and plan.gitgate.enabled:
        for rel, text in plan.gitgate.files().items():
            files[f"git-gate/{rel}"] = text
    return files
