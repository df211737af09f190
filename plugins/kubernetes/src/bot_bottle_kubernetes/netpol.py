"""NetworkPolicy semantics (networking.k8s.io/v1), evaluated over plain objects.

No cluster runs here, so the fence the rendered policies build is proven by
evaluating them: :meth:`Cluster.allowed` answers whether a connection is
permitted by the policies in force, following the API's documented rules:

* A pod is isolated for a direction once any policy in its namespace selects
  it (``podSelector``) with that direction in ``policyTypes``; an isolated
  pod admits only what some selecting policy's rules allow (policies add up).
* ``policyTypes`` absent: ``Ingress``, plus ``Egress`` when ``egress`` is set.
* A rule with no ``from``/``to`` matches every peer; with no ``ports``, every
  port. A peer with ``podSelector`` alone means pods of the policy's own
  namespace; ``namespaceSelector`` alone, every pod of the matching
  namespaces; both in one peer, both must match. ``ipBlock`` matches an
  address in ``cidr`` and in none of ``except``.
* A connection passes when the source's egress and the destination's
  ingress both allow it (a reply of an allowed connection is not judged).

One choice where the API leaves it to the implementation: whether an
``ipBlock`` matches pod addresses. Here it does (the more permissive
reading), so a denial proven here holds on either kind of CNI. What policy
never covers (the node's own traffic, host-network pods) is out of scope,
as it is for the API; the backend's fence probe checks a real cluster.

Also :func:`foreign_policies`: the policies not rendered by bot-bottle
that select bottle pods (a launch refuses while there is one).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Labels = Mapping[str, str]


def selector_matches(selector: Mapping[str, Any] | None, labels: Labels) -> bool:
    """A ``LabelSelector``: matchLabels and matchExpressions, all ANDed;
    an empty selector matches everything."""
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], list(expr.get("values") or [])
        if op == "In":
            ok = key in labels and labels[key] in values
        elif op == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif op == "Exists":
            ok = key in labels
        elif op == "DoesNotExist":
            ok = key not in labels
        else:
            raise ValueError(f"unknown selector operator {op!r}")
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: Labels
    ip: str
    #: container port name -> (number, protocol), for named ports in rules.
    named_ports: Mapping[str, tuple[int, str]] = field(default_factory=dict)

    @classmethod
    def from_object(cls, obj: Mapping[str, Any], ip: str) -> Pod:
        """A rendered Pod object, given the address the cluster would assign."""
        meta = obj["metadata"]
        named: dict[str, tuple[int, str]] = {}
        spec = obj["spec"]
        for c in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            for p in c.get("ports", []):
                if "name" in p:
                    named[p["name"]] = (int(p["containerPort"]), p.get("protocol", "TCP"))
        return cls(meta["name"], meta["namespace"], dict(meta.get("labels", {})), ip, named)


Endpoint = Pod | str


def policy_types(policy: Mapping[str, Any]) -> set[str]:
    spec = policy["spec"]
    if spec.get("policyTypes"):
        return set(spec["policyTypes"])
    return {"Ingress", "Egress"} if "egress" in spec else {"Ingress"}


def selects(policy: Mapping[str, Any], namespace: str, labels: Labels) -> bool:
    """True when ``policy`` applies to a pod with ``labels`` in ``namespace``."""
    meta = policy["metadata"]
    return meta.get("namespace") == namespace and selector_matches(
        policy["spec"].get("podSelector"), labels
    )


def foreign_policies(
    policies: Iterable[Mapping[str, Any]], namespace: str, pod_labels: Iterable[Labels]
) -> list[str]:
    """Names of the policies bot-bottle did not render that select any of
    these pods. Policies add up, so one with an allow rule widens the
    fence: a launch refuses while there is any."""
    pods = list(pod_labels)
    return sorted(
        p["metadata"]["name"]
        for p in policies
        if (p["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") != "bot-bottle"
        and any(selects(p, namespace, labels) for labels in pods)
    )


@dataclass
class Cluster:
    """Namespaces (name -> labels), pods and the NetworkPolicies in force."""

    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    pods: list[Pod] = field(default_factory=list)
    policies: list[Mapping[str, Any]] = field(default_factory=list)

    def add_namespace(self, name: str, labels: Labels | None = None) -> None:
        # The API server sets this label on every namespace (1.21+).
        self.namespaces[name] = {"kubernetes.io/metadata.name": name, **(labels or {})}

    def add_pod(self, pod: Pod) -> Pod:
        if pod.namespace not in self.namespaces:
            self.add_namespace(pod.namespace)
        self.pods.append(pod)
        return pod

    def add_policies(self, objects: Iterable[Mapping[str, Any]]) -> None:
        self.policies += [o for o in objects if o.get("kind") == "NetworkPolicy"]

    def _pod_at(self, ip: str) -> Pod | None:
        return next((p for p in self.pods if p.ip == ip), None)

    def _resolve(self, end: Endpoint) -> tuple[Pod | None, str]:
        if isinstance(end, Pod):
            return end, end.ip
        return self._pod_at(end), end

    def _peer_matches(
        self, peer: Mapping[str, Any], policy_ns: str, pod: Pod | None, ip: str
    ) -> bool:
        if "ipBlock" in peer:
            block = peer["ipBlock"]
            addr = ipaddress.ip_address(ip)
            if not _in(addr, block["cidr"]):
                return False
            return not any(_in(addr, c) for c in block.get("except") or [])
        if pod is None:
            return False
        pod_sel, ns_sel = peer.get("podSelector"), peer.get("namespaceSelector")
        if ns_sel is None:
            if pod.namespace != policy_ns:
                return False
        elif not selector_matches(ns_sel, self.namespaces.get(pod.namespace, {})):
            return False
        return selector_matches(pod_sel, pod.labels)

    @staticmethod
    def _port_matches(
        ports: Sequence[Mapping[str, Any]] | None, dst: Pod | None, port: int, protocol: str
    ) -> bool:
        if not ports:
            return True
        for rule in ports:
            if rule.get("protocol", "TCP") != protocol:
                continue
            want = rule.get("port")
            if want is None:
                return True
            if isinstance(want, str):
                # A named port resolves against the destination pod's ports.
                named = dst.named_ports.get(want) if dst is not None else None
                if named is not None and named == (port, protocol):
                    return True
                continue
            end = rule.get("endPort", want)
            if want <= port <= end:
                return True
        return False

    def _direction_allows(
        self,
        direction: str,
        subject: Pod,
        peer_pod: Pod | None,
        peer_ip: str,
        dst: Pod | None,
        port: int,
        protocol: str,
    ) -> bool:
        section, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        applying = [
            p
            for p in self.policies
            if selects(p, subject.namespace, subject.labels) and direction in policy_types(p)
        ]
        if not applying:
            return True  # not isolated in this direction
        for policy in applying:
            ns = policy["metadata"]["namespace"]
            for rule in policy["spec"].get(section) or []:
                peers = rule.get(peers_key)
                if peers and not any(
                    self._peer_matches(peer, ns, peer_pod, peer_ip) for peer in peers
                ):
                    continue
                if self._port_matches(rule.get("ports"), dst, port, protocol):
                    return True
        return False

    def allowed(self, src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP") -> bool:
        """May ``src`` open a connection to ``dst`` on ``port``? A string is an
        address: a pod's own when a pod has it, else one outside the cluster."""
        src_pod, src_ip = self._resolve(src)
        dst_pod, dst_ip = self._resolve(dst)
        if src_pod is not None and not self._direction_allows(
            "Egress", src_pod, dst_pod, dst_ip, dst_pod, port, protocol
        ):
            return False
        return dst_pod is None or self._direction_allows(
            "Ingress", dst_pod, src_pod, src_ip, dst_pod, port, protocol
        )


def _in(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, cidr: str) -> bool:
    net = ipaddress.ip_network(cidr, strict=False)
    return addr.version == net.version and addr in net
