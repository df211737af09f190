"""One bottle as Kubernetes objects: pure data, no API call (``--dry-run`` shows it).

Why two pods: containers of one pod share its network namespace, so an egress
sidecar inside the agent's pod could only be enforced with NET_ADMIN tricks
that a root agent defeats. The agent gets a pod of its own whose only way out
is the relay (a native sidecar on its loopback) to its bundle pod, and the
NetworkPolicies below close every other route the pod network gives it.

The bundle's files, init plan, daemon users and ports are the sidecar
bundle's own (:mod:`bot_bottle_sidecars.layout`), the same the Docker backend
writes; only the relay's transport differs (the bundle's network address
instead of a shared socket directory: ``network_relay``).

Labels carry ids only (slug, role, home and backend names), so ``cleanup``
selects by them; free text (agent name, label) and timestamps go in
annotations.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from bot_bottle_sidecars.layout import (
    AGENT_READY,
    BUNDLE_READY,
    CA_DIR,
    ETC,
    GATE_ALLOW_DIR,
    GATE_KEYS,
    LOG_DIR,
    PY,
    QUEUE_DIR,
    SECRETS_CA,
    SECRETS_GATE_KEYS,
    SOCK_DIR,
    UPSTREAM_CA,
    agent_relay_argv,
    bundle_files,
    bundle_hosts,
    endpoints,
    network_endpoints,
    shared_dir_users,
)
from bot_bottle_sidecars.layout import DAEMON_USERS as _USERS

from bot_bottle_kubernetes.egress_live import LIVE_DIR, live_init_plan, seed_container

if TYPE_CHECKING:
    from bot_bottle.contracts.backend import BottlePlan
    from bot_bottle.manifest.models import Limits

BACKEND = "kubernetes"
L_SLUG = "bot-bottle/slug"
L_ROLE = "bot-bottle/role"
L_BACKEND = "bot-bottle/backend"
L_HOME = "bot-bottle/home"
L_MANAGED = "app.kubernetes.io/managed-by"
A_AGENT = "bot-bottle/agent"
A_LABEL = "bot-bottle/label"
A_STARTED = "bot-bottle/started"
A_LAUNCHER = "bot-bottle/launcher"
A_SERVICES = "bot-bottle/services"
#: Agent variables kept out of the pod spec (:func:`split_agent_env`).
A_EXEC_ENV = "bot-bottle/exec-env"
#: The namespace-wide policy every bottle relies on (not owned by a bottle).
DEFAULT_DENY = "bot-bottle-default-deny"
#: The anchor's uid before it exists (a dry run, or the first render).
PENDING_UID = "00000000-0000-0000-0000-000000000000"
#: Where the agent relay points before the bundle pod has an address: a
#: name under the reserved .invalid, which the pod (no DNS) cannot resolve.
PENDING_ADDRESS = "bundle-pod-ip.invalid"
WORKSPACE = "/workspace"
#: How long a Lease lives without a renewal: the launcher renews it at a
#: third of this; an expired one marks the bottle an orphan.
LEASE_SECONDS = 60
#: The hard cap of a bottle's pods (a forgotten bottle ends by itself).
DEFAULT_DEADLINE_SECONDS = 24 * 3600
#: The same capabilities as the Docker backend's containers (see
#: ``bot_bottle_docker.backend``): provisioning for the agent's root execs,
#: init's privilege drop for the bundle.
AGENT_ROOT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID")
BUNDLE_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETPCAP", "SETUID")
#: Ranges the bundle never reaches, whatever the cluster: private (RFC 1918),
#: loopback, link-local (cloud metadata at 169.254.169.254), CGNAT (RFC 6598;
#: also Tailscale-style overlays), "this network", multicast and reserved.
BLOCKED_V4 = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
)  # fmt: skip
#: IPv6: unique-local, link-local, loopback, multicast, and the two prefixes
#: that embed an IPv4 address (mapped, NAT64) so they cannot reach the above.
BLOCKED_V6 = ("::1/128", "::ffff:0:0/96", "64:ff9b::/96", "fc00::/7", "fe80::/10", "ff00::/8")
#: kind's and kubeadm's defaults; a cluster with others passes its own.
DEFAULT_POD_CIDRS = ("10.244.0.0/16",)
DEFAULT_SERVICE_CIDRS = ("10.96.0.0/12",)
#: Where the bundle's names resolve: the cluster DNS pods (kube-dns label,
#: which CoreDNS keeps), reached through its service IP after DNAT.
DEFAULT_DNS_NAMESPACE = "kube-system"
DEFAULT_DNS_LABELS: Mapping[str, str] = {"k8s-app": "kube-dns"}
#: Seccomp profile name under the kubelet's seccomp root (see
#: :func:`seccomp_profile_name`); installed on every node by the operator.
SECCOMP_DIR = "bot-bottle"
_KEY_RE = re.compile(r"[^-._a-zA-Z0-9]")

SeccompMode = Literal["localhost", "runtime-default"]


def names(slug: str) -> dict[str, str]:
    """role -> object name, for every object of bottle ``slug``."""
    prefix = f"bb-{slug}"
    return {
        "anchor": prefix,
        "lease": prefix,
        "etc": f"{prefix}-etc",
        "gate-allow": f"{prefix}-gate-allow",
        "env": f"{prefix}-env",
        "ca": f"{prefix}-ca",
        "gate-keys": f"{prefix}-gate-keys",
        "agent": f"{prefix}-agent",
        "sidecars": f"{prefix}-sidecars",
        "policy-agent": f"{prefix}-agent",
        "policy-sidecars": f"{prefix}-sidecars",
    }


def label_selector(
    *, slug: str | None = None, home: str | None = None, role: str | None = None
) -> str:
    """The label selector of bot-bottle's objects on this backend, narrowed
    to one bottle, one state home or one role (``cleanup`` works from it)."""
    parts = {L_MANAGED: "bot-bottle", L_BACKEND: BACKEND}
    for key, value in ((L_SLUG, slug), (L_HOME, home), (L_ROLE, role)):
        if value is not None:
            parts[key] = value
    return ",".join(f"{k}={v}" for k, v in parts.items())


def seccomp_profile_name(profile_json: str) -> str:
    """``localhostProfile`` of the agent's seccomp profile: content-named, so
    a node holding an older profile fails the pod instead of running it."""
    digest = hashlib.sha256(profile_json.encode()).hexdigest()[:16]
    return f"{SECCOMP_DIR}/seccomp-bottle-{digest}.json"


def agent_seccomp_json() -> str:
    """The agent pod's Localhost seccomp profile (``bot_bottle_kubernetes.seccomp``)."""
    # The Docker backend's profile (socket families limited, no io_uring):
    # one profile for both engines, generated in one place. Docker's JSON
    # format is the one the kubelet's runtimes read for Localhost profiles.
    from bot_bottle_docker.seccomp import profile_json

    return profile_json()


def render_namespace(namespace: str) -> list[dict[str, Any]]:
    """Objects the namespace needs once, shared by every bottle in it: the
    default-deny NetworkPolicy (every pod, both directions) that the per-bottle
    policies open holes in. Not owned by any bottle: cleanup leaves it."""
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": DEFAULT_DENY,
                "namespace": namespace,
                "labels": {L_MANAGED: "bot-bottle", L_ROLE: "default-deny"},
            },
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        }
    ]


def render_bottle(
    plan: BottlePlan,
    *,
    namespace: str,
    images: Mapping[str, str],
    anchor_uid: str = PENDING_UID,
    bundle_address: str = PENDING_ADDRESS,
    ca_files: Mapping[str, bytes] | None = None,
    gate_keys: Mapping[str, bytes] | None = None,
    upstream_ca: bytes | None = None,
    reveal: bool = True,
    runtime_class: str | None = None,
    host_users: bool | None = None,
    seccomp: SeccompMode = "localhost",
    pod_cidrs: Sequence[str] = DEFAULT_POD_CIDRS,
    service_cidrs: Sequence[str] = DEFAULT_SERVICE_CIDRS,
    dns_namespace: str = DEFAULT_DNS_NAMESPACE,
    dns_labels: Mapping[str, str] = DEFAULT_DNS_LABELS,
    deadline_seconds: int = DEFAULT_DEADLINE_SECONDS,
    pull_policy: str = "IfNotPresent",
    home: str = "",
    launcher: str = "",
    started: datetime | None = None,
) -> list[dict[str, Any]]:
    """Every object of one bottle, in creation order. PURE.

    * ``ConfigMap bb-<slug>`` (role ``anchor``): the bottle's owner. Every
      other object has an ownerReference to it (``anchor_uid``, known once
      it exists: create it first, then render again with its uid), so
      deleting it deletes the bottle. Its annotations hold the free text
      (agent, label) and the start time.
    * ``Lease bb-<slug>`` (coordination.k8s.io): renewed by the launcher;
      expired, it marks the bottle an orphan for ``cleanup``.
    * ``ConfigMap bb-<slug>-etc``: the bundle's files under
      :data:`~bot_bottle_sidecars.layout.ETC` (init plan, egress and
      git-gate configs, upstream CA); no secret. ``bb-<slug>-gate-allow``:
      the operator's git-gate allow list (empty at launch).
    * ``Secret bb-<slug>-env`` (the bundle's credential slots, as env),
      ``bb-<slug>-ca`` (the bottle CA with its key: ``ca_files``),
      ``bb-<slug>-gate-keys`` (deploy keys: ``gate_keys``). Mounted by the
      bundle pod only; the agent pod references no Secret.
    * ``NetworkPolicy bb-<slug>-agent``: the agent pod sends only to its
      bundle pod's relay ports and receives nothing.
      ``NetworkPolicy bb-<slug>-sidecars``: the bundle receives only from
      its agent pod on those ports; sends to cluster DNS, to the addresses
      the manifest's ``extra_hosts`` pins, and to the internet minus
      private, link-local, CGNAT and the cluster's ``pod_cidrs``/``service_cidrs``.
    * ``Pod bb-<slug>-sidecars``: egress, git-gate, supervise and the
      bundle relay (init's daemons), on ``images["bundle"]``.
    * ``Pod bb-<slug>-agent``: the agent (``images["agent"]``, idle until
      exec'd) and the relay as a native sidecar forwarding its loopback
      ports to ``bundle_address`` (the bundle pod's IP: create the agent
      pod last, rendered with it). No service-account token, no service
      links, no DNS, no Secret; agent variables holding a bottle secret are
      not in its spec either (:func:`split_agent_env`: the launcher passes
      them to each exec; the annotation ``bot-bottle/exec-env`` names them).

    ``reveal=False`` renders every secret value as a placeholder (what a
    dry run prints). Pass the same ``started`` to each render of one bottle
    (it defaults to now) so the objects agree. The namespace's default
    deny is :func:`render_namespace`.
    """
    n = names(plan.slug)
    when = (started or datetime.now(UTC)).astimezone(UTC)
    labels = {L_MANAGED: "bot-bottle", L_BACKEND: BACKEND, L_SLUG: plan.slug}
    if home:
        labels[L_HOME] = home
    annotations = {
        A_AGENT: plan.agent,
        A_LABEL: plan.label or "",
        A_STARTED: when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        A_SERVICES: ",".join(endpoints(plan)),
    }
    if launcher:
        annotations[A_LAUNCHER] = launcher
    owner = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": n["anchor"],
            "uid": anchor_uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]

    def meta(role: str, *, owned: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": n[role],
            "namespace": namespace,
            "labels": {**labels, L_ROLE: role},
            "annotations": dict(annotations),
        }
        if owned:
            out["ownerReferences"] = [dict(o) for o in owner]
        return out

    def secret_data(files: Mapping[str, bytes]) -> dict[str, str]:
        return {
            _key(k): base64.b64encode(v if reveal else b"(hidden)").decode()
            for k, v in sorted(files.items())
        }

    bundle_env = {k: v.reveal().encode() for k, v in plan.bundle_env().items()}
    etc_data, etc_items = _etc_files(plan, upstream_ca)
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta("anchor", owned=False),
            "data": {"bottle.json": json.dumps(_anchor_doc(plan), indent=2, sort_keys=True)},
        },
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta("lease"),
            "spec": {
                "holderIdentity": launcher or "bot-bottle",
                "leaseDurationSeconds": LEASE_SECONDS,
                "acquireTime": _micro(when),
                "renewTime": _micro(when),
            },
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("etc"), "data": etc_data},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("gate-allow"), "data": {}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta("env"),
            "type": "Opaque",
            "data": secret_data(bundle_env),
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta("ca"),
            "type": "Opaque",
            "data": secret_data(ca_files or {}),
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta("gate-keys"),
            "type": "Opaque",
            "data": secret_data(gate_keys or {}),
        },
        _agent_policy(plan, meta("policy-agent")),
        _bundle_policy(
            plan,
            meta("policy-sidecars"),
            blocked=[*pod_cidrs, *service_cidrs],
            dns_namespace=dns_namespace,
            dns_labels=dns_labels,
        ),
        _bundle_pod(
            plan,
            meta("sidecars"),
            n,
            etc_items=etc_items,
            secret_files={"ca": list(ca_files or {}), "gate-keys": list(gate_keys or {})},
            image=images["bundle"],
            pull_policy=pull_policy,
            deadline=deadline_seconds,
        ),
        _agent_pod(
            plan,
            meta("agent"),
            image=images["agent"],
            relay_image=images["bundle"],
            bundle_address=bundle_address,
            reveal=reveal,
            runtime_class=runtime_class,
            host_users=host_users,
            seccomp=seccomp,
            pull_policy=pull_policy,
            deadline=deadline_seconds,
        ),
    ]
    return objects


def split_agent_env(plan: BottlePlan) -> tuple[dict[str, str], dict[str, str]]:
    """The agent's environment as (in the pod spec, given at exec time only).

    A pod spec is readable by whoever may read pods and is stored without
    the encryption at rest Secrets can have; an agent variable whose value
    is one of the bottle's secrets (the values DLP scans for) therefore
    stays out of it, and the launcher hands it to each exec through the
    exec's stdin, never a URL or an object."""
    secret_values = {v.reveal() for v in plan.bundle_env().values() if v.reveal()}
    spec: dict[str, str] = {}
    at_exec: dict[str, str] = {}
    for name, value in sorted(plan.agent_env.items()):
        (at_exec if value.reveal() in secret_values else spec)[name] = value.reveal()
    return spec, at_exec


def _key(name: str) -> str:
    """A ConfigMap/Secret key for a file name (keys allow ``[-._a-zA-Z0-9]``)."""
    return _KEY_RE.sub("_", name)


def _secret_volume(secret: str, files: Sequence[str]) -> dict[str, Any]:
    """A Secret volume, root-only (init copies from it), each key laid out
    under its exact file name (what the daemons' configs name)."""
    out: dict[str, Any] = {"secretName": secret, "defaultMode": 0o400}
    for name in files:
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"{name!r} is not a file name")
    if files:
        out["items"] = [{"key": _key(name), "path": name} for name in sorted(files)]
    return out


def _micro(when: datetime) -> str:
    """A ``MicroTime`` as the API server writes it."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _anchor_doc(plan: BottlePlan) -> dict[str, Any]:
    """What ``list active`` needs without reading pods (no value of env)."""
    return {
        "slug": plan.slug,
        "agent": plan.agent,
        "bottle": plan.bottle,
        "label": plan.label,
        "services": list(endpoints(plan)),
    }


def _etc_files(
    plan: BottlePlan, upstream_ca: bytes | None
) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The etc ConfigMap's data and the volume items that lay it out as
    files under :data:`ETC` (keys cannot hold ``/``)."""
    files = dict(bundle_files(plan, network_relay=True))
    # Egress reads a writable copy, so routes can change live (egress_live).
    files["init-plan.json"] = live_init_plan(files["init-plan.json"])
    if upstream_ca is not None:
        files[UPSTREAM_CA.removeprefix(ETC + "/")] = upstream_ca.decode()
    # Mount points of the in-memory private dirs nested in the read-only
    # volume (CA_DIR, GATE_KEYS): the Docker backend mkdirs them in etc/.
    for nested in (CA_DIR, GATE_KEYS):
        files[f"{nested.removeprefix(ETC + '/')}/.mountpoint"] = ""
    data: dict[str, str] = {}
    items: list[dict[str, str]] = []
    for rel in sorted(files):
        key = _key(rel)
        if key in data:
            key = f"{key}.{hashlib.sha256(rel.encode()).hexdigest()[:8]}"
        data[key] = files[rel]
        items.append({"key": key, "path": rel})
    return data, items


def _selector(slug: str, role: str) -> dict[str, Any]:
    return {"matchLabels": {L_SLUG: slug, L_ROLE: role}}


def _relay_ports(plan: BottlePlan) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in network_endpoints(plan).values()]


def _agent_policy(plan: BottlePlan, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {
            "podSelector": _selector(plan.slug, "agent"),
            "policyTypes": ["Ingress", "Egress"],
            # No ingress rule: nothing reaches the agent pod.
            "ingress": [],
            "egress": [
                {
                    "to": [{"podSelector": _selector(plan.slug, "sidecars")}],
                    "ports": _relay_ports(plan),
                }
            ],
        },
    }


def _bundle_policy(
    plan: BottlePlan,
    metadata: dict[str, Any],
    *,
    blocked: Sequence[str],
    dns_namespace: str,
    dns_labels: Mapping[str, str],
) -> dict[str, Any]:
    v4 = sorted({*BLOCKED_V4, *(c for c in blocked if ":" not in c)})
    v6 = sorted({*BLOCKED_V6, *(c for c in blocked if ":" in c)})
    dns = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": dns_namespace}},
        "podSelector": {"matchLabels": dict(dns_labels)},
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {
            "podSelector": _selector(plan.slug, "sidecars"),
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [{"podSelector": _selector(plan.slug, "agent")}],
                    "ports": _relay_ports(plan),
                }
            ],
            "egress": [
                {
                    "to": [dns],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                },
                {
                    "to": [
                        {"ipBlock": {"cidr": "0.0.0.0/0", "except": v4}},
                        {"ipBlock": {"cidr": "::/0", "except": v6}},
                    ]
                },
                *_pinned_rule(plan),
            ],
        },
    }


def _pinned_rule(plan: BottlePlan) -> list[dict[str, Any]]:
    """The addresses the manifest's ``extra_hosts`` pins names to, each alone:
    the operator named them (a private git server, an internal API), so
    the bundle may reach them although they lie in a closed range. Loopback
    pins need no rule (they never leave the pod)."""
    peers = []
    for ip in sorted(set(plan.extra_hosts.values())):
        addr = ipaddress.ip_address(ip)
        if not addr.is_loopback:
            peers.append({"ipBlock": {"cidr": f"{addr}/{addr.max_prefixlen}"}})
    return [{"to": peers}] if peers else []


def _limits(limits: Limits) -> dict[str, Any]:
    """``resources`` of a container from a manifest ``resources:`` entry.
    pids have no per-container field (the kubelet's podPidsLimit is node-wide)."""
    from bot_bottle.manifest.models import memory_bytes

    out: dict[str, str] = {}
    if limits.memory is not None:
        out["memory"] = str(memory_bytes(limits.memory))
    if limits.cpus is not None:
        out["cpu"] = f"{round(limits.cpus * 1000)}m"
    return {"limits": out, "requests": dict(out)} if out else {}


def _drop_all(add: Sequence[str] = ()) -> dict[str, Any]:
    caps: dict[str, Any] = {"drop": ["ALL"]}
    if add:
        caps["add"] = list(add)
    return caps


def _bundle_pod(
    plan: BottlePlan,
    metadata: dict[str, Any],
    n: Mapping[str, str],
    *,
    etc_items: list[dict[str, str]],
    secret_files: Mapping[str, Sequence[str]],
    image: str,
    pull_policy: str,
    deadline: int,
) -> dict[str, Any]:
    memory = {"medium": "Memory", "sizeLimit": "1Mi"}
    volumes: list[dict[str, Any]] = [
        {"name": "etc",
         "configMap": {"name": n["etc"], "defaultMode": 0o644, "items": etc_items}},
        {"name": "secrets-ca", "secret": _secret_volume(n["ca"], secret_files["ca"])},
        {"name": "secrets-gate-keys",
         "secret": _secret_volume(n["gate-keys"], secret_files["gate-keys"])},
        {"name": "gate-allow", "configMap": {"name": n["gate-allow"], "defaultMode": 0o644}},
        {"name": "ca-private", "emptyDir": dict(memory)},
        {"name": "gate-keys-private", "emptyDir": dict(memory)},
        {"name": "queue", "emptyDir": {}},
        {"name": "logs", "emptyDir": {}},
        {"name": "sock", "emptyDir": {}},
        {"name": "egress-live", "emptyDir": {"sizeLimit": "8Mi"}},
    ]  # fmt: skip
    mounts = [
        {"name": "etc", "mountPath": ETC, "readOnly": True},
        {"name": "secrets-ca", "mountPath": SECRETS_CA, "readOnly": True},
        {"name": "secrets-gate-keys", "mountPath": SECRETS_GATE_KEYS, "readOnly": True},
        {"name": "gate-allow", "mountPath": GATE_ALLOW_DIR, "readOnly": True},
        {"name": "ca-private", "mountPath": CA_DIR},
        {"name": "gate-keys-private", "mountPath": GATE_KEYS},
        {"name": "queue", "mountPath": QUEUE_DIR},
        {"name": "logs", "mountPath": LOG_DIR},
        {"name": "sock", "mountPath": SOCK_DIR},
        {"name": "egress-live", "mountPath": LIVE_DIR},
    ]
    ports = [
        {"name": name, "containerPort": port, "protocol": "TCP"}
        for name, port in network_endpoints(plan).items()
    ]
    container = {
        "name": "sidecars",
        "image": image,
        "imagePullPolicy": pull_policy,
        "envFrom": [{"secretRef": {"name": n["env"]}}],
        "ports": ports,
        "volumeMounts": mounts,
        "resources": _limits(plan.resources.bundle),
        "readinessProbe": _file_probe(f"{SOCK_DIR}/{BUNDLE_READY}"),
        "securityContext": {
            # init starts as root to drop to each daemon's user (Docker: the same).
            "runAsUser": 0,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": _drop_all(BUNDLE_CAPS),
        },
    }
    # emptyDirs are world-writable; the Docker backend grants each shared
    # directory to its one daemon user, and the logs to init (root) alone.
    # The same here, before init starts: chmod first (root owns them), then
    # chown, so CHOWN is the one capability it needs.
    dirs = [{"name": "sock", "mountPath": SOCK_DIR}, {"name": "queue", "mountPath": QUEUE_DIR},
            {"name": "logs", "mountPath": LOG_DIR}]  # fmt: skip
    steps = [f"chmod 0700 {SOCK_DIR} {QUEUE_DIR} {LOG_DIR}"] + [
        f"chown {user.uid}:{user.uid} {path}" for path, user in sorted(shared_dir_users().items())
    ]
    prepare_dirs = {
        "name": "dirs",
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": ["sh", "-euc", " && ".join(steps)],
        "volumeMounts": dirs,
        "securityContext": {
            "runAsUser": 0,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": _drop_all(["CHOWN"]),
        },
    }
    hosts: dict[str, list[str]] = {}
    for name, ip in bundle_hosts(plan).items():
        hosts.setdefault(ip, []).append(name)
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": deadline,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 10,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [prepare_dirs, seed_container(image, pull_policy)],
        "containers": [container],
        "volumes": volumes,
    }
    if hosts:
        spec["hostAliases"] = [
            {"ip": ip, "hostnames": sorted(h)} for ip, h in sorted(hosts.items())
        ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def _file_probe(path: str) -> dict[str, Any]:
    """Ready once ``path`` exists (the relays write their ready file)."""
    return {
        "exec": {"command": [PY, "-c", f"import os,sys; sys.exit(not os.path.exists({path!r}))"]},
        "periodSeconds": 1,
        "failureThreshold": 120,
    }


def _agent_pod(
    plan: BottlePlan,
    metadata: dict[str, Any],
    *,
    image: str,
    relay_image: str,
    bundle_address: str,
    reveal: bool,
    runtime_class: str | None,
    host_users: bool | None,
    seccomp: SeccompMode,
    pull_policy: str,
    deadline: int,
) -> dict[str, Any]:
    if seccomp == "localhost":
        profile: dict[str, Any] = {
            "type": "Localhost",
            "localhostProfile": seccomp_profile_name(agent_seccomp_json()),
        }
    else:
        profile = {"type": "RuntimeDefault"}
    relay_user = _USERS["relay"].uid
    relay = {
        "name": "relay",
        "image": relay_image,
        "imagePullPolicy": pull_policy,
        # A native sidecar (Kubernetes >= 1.29): started before the agent,
        # kept running beside it, stopped after it.
        "restartPolicy": "Always",
        "command": agent_relay_argv(plan, bundle_host=bundle_address),
        "resources": _limits(plan.resources.relay),
        # The agent waits until the relay listens.
        "startupProbe": _file_probe(f"{SOCK_DIR}/{AGENT_READY}"),
        # Its ready file only: nothing shared with the agent container.
        "volumeMounts": [{"name": "relay-run", "mountPath": SOCK_DIR}],
        "securityContext": {
            "runAsUser": relay_user,
            "runAsGroup": relay_user,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": _drop_all(),
        },
    }
    in_spec, at_exec = split_agent_env(plan)
    env = [{"name": k, "value": v if reveal else "(hidden)"} for k, v in in_spec.items()]
    if at_exec:
        # Names only: the values reach the agent through each exec's stdin.
        metadata["annotations"][A_EXEC_ENV] = ",".join(at_exec)
    workdir = WORKSPACE if plan.cwd is not None else plan.provider_plan.guest_home
    agent: dict[str, Any] = {
        "name": "agent",
        "image": image,
        "imagePullPolicy": pull_policy,
        # Idle as root until the launcher execs the agent as its user. A
        # shell as PID 1 reaps what execs leave behind (Docker: --init) and
        # ends on SIGTERM instead of waiting out the grace period.
        "command": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"],
        "env": env,
        "workingDir": workdir,
        "resources": _limits(plan.resources.agent),
        "securityContext": {
            # Root's execs provision (chown, runuser); the agent's own uid
            # has no capability. The Docker agent's set, nothing more.
            "runAsUser": 0,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": _drop_all(AGENT_ROOT_CAPS),
        },
    }
    volumes: list[dict[str, Any]] = [{"name": "relay-run", "emptyDir": {"sizeLimit": "1Mi"}}]
    if plan.cwd is not None:
        # Seeded over exec (tar) by the launcher: no host path on a node.
        agent["volumeMounts"] = [{"name": "workspace", "mountPath": WORKSPACE}]
        volumes.append({"name": "workspace", "emptyDir": {}})
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": deadline,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # No DNS: the one nameserver is the pod's own loopback, where
        # nothing listens on port 53 (the API requires one with "None").
        "dnsPolicy": "None",
        "dnsConfig": {"nameservers": ["127.0.0.1"], "searches": [], "options": []},
        "hostname": plan.slug[:63],
        "terminationGracePeriodSeconds": 5,
        "securityContext": {"seccompProfile": profile},
        "initContainers": [relay],
        "containers": [agent],
        "volumes": volumes,
    }
    if runtime_class is not None:
        spec["runtimeClassName"] = runtime_class
    if host_users is not None:
        spec["hostUsers"] = host_users
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


#: kubernetes-sigs/agent-sandbox's CRD (served and stored version).
SANDBOX_API_VERSION = "agents.x-k8s.io/v1beta1"


def render_sandbox(
    agent_pod: Mapping[str, Any], *, shutdown_time: datetime | None = None
) -> dict[str, Any]:
    """The agent pod as an agent-sandbox ``Sandbox`` (optional; for clusters
    that run the kubernetes-sigs/agent-sandbox controller, which then makes
    the pod from this template). The template keeps the pod's labels, so
    the bottle's NetworkPolicies select the pod the controller makes; the
    ``Sandbox`` itself takes the pod's place under the anchor. No Service
    (nothing may reach the agent); at ``shutdown_time`` (the pods'
    deadline, by default) the controller deletes it."""
    meta = agent_pod["metadata"]
    spec = agent_pod["spec"]
    labels = {**meta["labels"], L_ROLE: "sandbox"}
    started = datetime.strptime(meta["annotations"][A_STARTED], "%Y-%m-%dT%H:%M:%SZ")
    end = shutdown_time or datetime.fromtimestamp(
        started.replace(tzinfo=UTC).timestamp() + int(spec["activeDeadlineSeconds"]), UTC
    )
    return {
        "apiVersion": SANDBOX_API_VERSION,
        "kind": "Sandbox",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": dict(meta["annotations"]),
            "ownerReferences": [dict(o) for o in meta.get("ownerReferences", [])],
        },
        "spec": {
            "podTemplate": {
                "metadata": {
                    "labels": dict(meta["labels"]),
                    "annotations": dict(meta["annotations"]),
                },
                "spec": json.loads(json.dumps(spec)),
            },
            "service": False,
            "shutdownPolicy": "Delete",
            "shutdownTime": end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }
