"""The sidecar bundle's files and init plan for one bottle, as data.

It lives with the bundle's Dockerfile (which creates :data:`DAEMON_USERS`
with these ids) and its init (``bot_bottle_sidecars.init.plan`` reads what
:func:`init_plan` writes), so one distribution owns every fact the image
and the host must agree on. Backends that run the bundle in a container
write :func:`bundle_files` into a host directory mounted at :data:`ETC` and
start the bundle with the init plan.

Inside the bundle every daemon listens on loopback only; the relay daemon
serves each endpoint also as a Unix socket in :data:`SOCK_DIR`, the one
directory shared with the agent side (see ``bot_bottle_sidecars.relay``).

Every daemon runs as its own user (:data:`DAEMON_USERS`; the bundle image
creates them with these ids), so none can read another's environment or
files. Who may read what:

* :data:`ETC` (init plan, egress and git-gate configs, pinned known_hosts,
  upstream CA certificate; no secret): every daemon, read-only.
* The bottle CA key and the deploy keys are mounted read-only under
  :data:`SECRETS_IN`, which only root (init) can enter; init copies them into
  :data:`CA_DIR` (egress's user only) and :data:`GATE_KEYS` (git-gate's user
  only), tmpfs mounts, before it starts those daemons.
* :data:`LOG_DIR` (the host's ``history/<slug>/logs``): init alone writes
  every daemon's output there (``bot_bottle_sidecars.init.logsink``); the
  host directory is the host user's, 0700, so no daemon user can enter it.
* :data:`QUEUE_DIR`: supervise's user, read-write; :data:`SOCK_DIR`: the
  relay's user (the bundle's relay daemon and the agent-side relay
  container), read-write. The host grants those two users access to its
  directories (:func:`shared_dir_users`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot_bottle.egress.from_manifest import UPSTREAM_CA_SIDECAR_PATH
from bot_bottle.gitgate.allow import ALLOW_FILE
from bot_bottle.gitgate.plan import KNOWN_SECRET_PREFIX as GITGATE_SECRET_PREFIX
from bot_bottle.plan import GIT_PORT, LOOPBACK, MCP_PORT, PROXY_PORT

if TYPE_CHECKING:
    from bot_bottle.contracts.backend import BottlePlan

ETC = "/etc/bot-bottle"
#: Private copy of the bottle CA (key included): egress's user only.
CA_DIR = f"{ETC}/ca"
EGRESS_CONFIG = f"{ETC}/egress/egress.json"
#: The bottle's ``egress.upstream_ca``, where the plan's egress config names it.
UPSTREAM_CA = UPSTREAM_CA_SIDECAR_PATH
INIT_PLAN = f"{ETC}/init-plan.json"
GATE_ROOT = f"{ETC}/git-gate"
#: Private copies of the deploy keys: git-gate's user only.
GATE_KEYS = f"{GATE_ROOT}/keys"
#: Root-only directory (0700 in the image) the host's secret files are
#: mounted under, read-only; init copies each daemon's into its private dir.
SECRETS_IN = "/run/bot-bottle/secrets"
SECRETS_CA = f"{SECRETS_IN}/ca"
SECRETS_GATE_KEYS = f"{SECRETS_IN}/git-gate-keys"
GATE_BASE = "/var/lib/bot-bottle/git"
QUEUE_DIR = "/var/lib/bot-bottle/queue"
#: The bottle's kept logs (``bot_bottle.history``): written by init alone.
LOG_DIR = "/var/log/bot-bottle"
#: The operator's allow list for git-gate (``bot_bottle.gitgate.allow``),
#: written by the host, mounted read-only; no secret in it.
GATE_ALLOW_DIR = "/var/lib/bot-bottle/gate-allow"
SOCK_DIR = "/run/bot-bottle/sock"
BUNDLE_READY = "bundle.ready"
AGENT_READY = "agent.ready"
#: init's summary of every daemon's state (JSON, replaced atomically): the
#: host's ``list active`` and both relays' 503 text read it.
INIT_STATUS = "init-status.json"
PY = "/opt/bot-bottle/bin/python"


@dataclass(frozen=True)
class DaemonUser:
    name: str
    #: uid and gid (the same number); fixed so the host can grant access by id.
    uid: int


#: daemon -> its user in the bundle image (sidecars/Dockerfile creates them).
#: The ids sit above the usual ranges of host accounts (1000-59999) and below
#: systemd's dynamic ones (61184+).
DAEMON_USERS = {
    "egress": DaemonUser("bb-egress", 60101),
    "git-gate": DaemonUser("bb-gitgate", 60102),
    "supervise": DaemonUser("bb-supervise", 60103),
    "relay": DaemonUser("bb-relay", 60104),
}

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


#: endpoint -> port the bundle's relay serves on the bundle's own network
#: address, for a backend whose agent side reaches the bundle over a network
#: instead of a shared socket directory (Kubernetes: agent and bundle are two
#: pods). Not the daemons' loopback ports: a wildcard listener would clash
#: with them.
NETWORK_PORTS = {"proxy": 18080, "git": 19418, "mcp": 18765}


def network_endpoints(plan: BottlePlan) -> dict[str, int]:
    """The bundle's network ports this bottle serves (see :data:`NETWORK_PORTS`)."""
    return {name: NETWORK_PORTS[name] for name in endpoints(plan)}


def socket_path(name: str) -> str:
    return f"{SOCK_DIR}/{name}.sock"


#: endpoint -> (protocol, daemon serving it): what a relay answers while
#: that daemon is down (an HTTP 503 or a git ERR packet naming it).
ENDPOINT_DAEMONS = {"proxy": ("http", "egress"), "git": ("git", "git-gate"),
                    "mcp": ("http", "supervise")}  # fmt: skip


def _down_args(listens: dict[str, str], daemon: str | None = None) -> list[str]:
    args = ["--status", f"{SOCK_DIR}/{INIT_STATUS}"]
    for name, listen in listens.items():
        protocol, serving = ENDPOINT_DAEMONS[name]
        args += ["--down", f"{listen}={protocol}:{daemon or serving}"]
    return args


#: At most this many git connections reach git-gate at once; the rest wait
#: in the relay. Each runs the access hook (a Python process, ~35 MB): 100
#: parallel fetches took the bundle past 1 GiB, and git daemon's own
#: --max-connections ends the oldest connection instead of queueing.
GIT_CONCURRENCY = 8


def bundle_relay_argv(plan: BottlePlan, *, network: bool = False) -> list[str]:
    """The bundle's relay daemon: each endpoint served as a Unix socket in
    :data:`SOCK_DIR`, or with ``network`` on every address of the bundle at
    its :data:`NETWORK_PORTS` port (what the network fence then limits)."""
    if network:
        listens = {n: f"tcp:0.0.0.0:{port}" for n, port in network_endpoints(plan).items()}
    else:
        listens = {n: f"unix:{socket_path(n)}" for n in endpoints(plan)}
    pairs = [f"{listens[n]}=tcp:{LOOPBACK}:{port}" for n, port in endpoints(plan).items()]
    limits = [f"--limit={listens['git']}={GIT_CONCURRENCY}"] if "git" in listens else []
    # supervise starts on its first connection (init_plan): a probe would start it.
    lazy = [f"--no-wait={listens['mcp']}"] if "mcp" in listens else []
    return [
        PY, "-m", "bot_bottle_sidecars.relay", "--wait-targets",
        "--ready-file", f"{SOCK_DIR}/{BUNDLE_READY}", *_down_args(listens), *limits, *lazy,
        *pairs,
    ]  # fmt: skip


def agent_relay_argv(
    plan: BottlePlan, listen_host: str | None = None, *, bundle_host: str | None = None
) -> list[str]:
    """The relay serving the agent's endpoints at ``listen_host`` (default:
    the plan's ``agent_host``; Docker runs it in a container sharing only the
    agent's network namespace). A backend whose agent reaches a *name* it
    pins at launch passes the address that name resolves to. Its target
    refuses only when the bundle's relay daemon is down (the bundle relay
    answers for the other daemons itself). The target is the bundle's
    sockets, or with ``bundle_host`` that address at the bundle's
    :data:`NETWORK_PORTS` (the bundle relay started with ``network``; the
    two-pod engines)."""
    host = listen_host or plan.agent_host
    listens = {n: f"tcp:{host}:{port}" for n, port in endpoints(plan).items()}
    if bundle_host is not None:
        target = f"[{bundle_host}]" if ":" in bundle_host else bundle_host
        net = network_endpoints(plan)
        pairs = [f"{listens[n]}=tcp:{target}:{net[n]}" for n in endpoints(plan)]
    else:
        pairs = [f"{listens[n]}=unix:{socket_path(n)}" for n in endpoints(plan)]
    return [
        PY, "-m", "bot_bottle_sidecars.relay",
        "--ready-file", f"{SOCK_DIR}/{AGENT_READY}", *_down_args(listens, "relay"), *pairs,
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


def init_plan(plan: BottlePlan, *, network_relay: bool = False) -> dict[str, object]:
    """What the bundle's init starts; ``network_relay``: the relay daemon
    serves the bundle's network address (:func:`bundle_relay_argv`)."""
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
            "user": DAEMON_USERS["egress"].name,
            "copy": [{"from": SECRETS_CA, "to": CA_DIR}],
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
                    "--allow-file",
                    f"{GATE_ALLOW_DIR}/{ALLOW_FILE}",
                ],
                "env": [f"{GITGATE_SECRET_PREFIX}*"],
                "user": DAEMON_USERS["git-gate"].name,
                # Under memory pressure its per-fetch processes die first,
                # not egress (a fetch is retried; the proxy is everything).
                "oom_score_adj": 800,
                "copy": [{"from": SECRETS_GATE_KEYS, "to": GATE_KEYS}],
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
                    # The Host header the agent sends (DNS-rebinding guard).
                    "--allowed-host",
                    f"{plan.agent_host}:{MCP_PORT}",
                    "--egress-introspection-url",
                    introspection_url(plan),
                ],
                "user": DAEMON_USERS["supervise"].name,
                "oom_score_adj": 500,
                # Most bottles sit idle for long stretches, and many never
                # call supervise: its ~60 MiB (the MCP SDK) and a second of
                # CPU at launch are paid on the agent's first call instead.
                "on_demand": f"{LOOPBACK}:{MCP_PORT}",
            }
        )
    daemons.append(
        {
            "name": "relay",
            "argv": bundle_relay_argv(plan, network=network_relay),
            "user": DAEMON_USERS["relay"].name,
        }
    )
    from bot_bottle.history import LOG_KEEP, LOG_MAX_BYTES

    return {
        "grace_seconds": 2,
        "log_dir": LOG_DIR,
        "log_max_bytes": LOG_MAX_BYTES,
        "log_keep": LOG_KEEP,
        "status_file": f"{SOCK_DIR}/{INIT_STATUS}",
        "daemons": daemons,
    }


def shared_dir_users() -> dict[str, DaemonUser]:
    """Host directories mounted read-write (:data:`SOCK_DIR`, :data:`QUEUE_DIR`)
    and the one daemon user that must be able to write each."""
    return {SOCK_DIR: DAEMON_USERS["relay"], QUEUE_DIR: DAEMON_USERS["supervise"]}


def bundle_files(plan: BottlePlan, *, network_relay: bool = False) -> dict[str, str]:
    """Files under :data:`ETC` (relative paths): init plan, egress config,
    git-gate config and pinned known_hosts. No secret is in any of them."""
    plan_text = json.dumps(init_plan(plan, network_relay=network_relay), indent=2)
    files: dict[str, str] = {"init-plan.json": plan_text}
    if plan.egress_config is not None:
        files["egress/egress.json"] = plan.egress_config.model_dump_json(indent=2)
    if plan.gitgate is not None and plan.gitgate.enabled:
        for rel, text in plan.gitgate.files().items():
            files[f"git-gate/{rel}"] = text
    return files
