"""Test 3 of #24: the reachability matrix of the rendered NetworkPolicies
(Kubernetes 1.29-1.35 NetworkPolicy semantics, networking.k8s.io/v1),
evaluated by :mod:`bot_bottle_kubernetes.netpol` over two bottles in one
namespace, the cluster DNS and an unrelated pod. Addresses are literals in
the evaluator only: no packet is sent."""

from __future__ import annotations

from typing import Any

import pytest
from bot_bottle_sidecars.layout import NETWORK_PORTS

from bot_bottle_kubernetes.netpol import Cluster, Pod, foreign_policies, selects
from bot_bottle_kubernetes.render import render_bottle, render_namespace

NS = "bottles"
PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:4700:4700::1111"
METADATA = "169.254.169.254"
API_SERVICE = "10.96.0.1"
NODE = "172.18.0.2"  # a kind node: the API server's endpoint and the kubelet
KUBE_DNS = "10.244.0.2"
#: Private, CGNAT, loopback and v6 forms of them a bundle must not reach.
CLUSTER_RANGES = ["10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "127.0.0.1",
                  "fd00::1", "fe80::1", "::ffff:10.0.0.1", "64:ff9b::a00:1"]  # fmt: skip


def _pod(objects: list[dict[str, Any]], role: str, ip: str) -> Pod:
    obj = next(
        o
        for o in objects
        if o["kind"] == "Pod" and o["metadata"]["labels"]["bot-bottle/role"] == role
    )
    return Pod.from_object(obj, ip)


class Bottle:
    def __init__(self, cluster: Cluster, objects: list[dict[str, Any]], net: str) -> None:
        self.objects = objects
        self.bundle = cluster.add_pod(_pod(objects, "sidecars", f"{net}.17"))
        self.agent = cluster.add_pod(_pod(objects, "agent", f"{net}.18"))
        cluster.add_policies(objects)


@pytest.fixture
def world(
    make_kube_plan: Any, launch_inputs: dict[str, Any]
) -> tuple[Cluster, Bottle, Bottle, Pod]:
    cluster = Cluster()
    cluster.add_namespace(NS)
    cluster.add_policies(render_namespace(NS))
    inputs = {**launch_inputs, "namespace": NS}
    a = Bottle(cluster, render_bottle(make_kube_plan("full", agent="a1"), **inputs), "10.244.1")
    b = Bottle(cluster, render_bottle(make_kube_plan("full", agent="b1"), **inputs), "10.244.2")
    cluster.add_pod(Pod("coredns", "kube-system", {"k8s-app": "kube-dns"}, KUBE_DNS))
    other = cluster.add_pod(Pod("web", "default", {"app": "web"}, "10.244.3.3"))
    return cluster, a, b, other


def test_agent_reaches_only_its_bundles_relay_ports(world: Any) -> None:
    cluster, a, b, _other = world
    # The full bottle serves all three endpoints, on the bundle's relay ports.
    ports = {name: port for name, (port, _proto) in a.bundle.named_ports.items()}
    assert ports == NETWORK_PORTS
    for port in ports.values():
        assert cluster.allowed(a.agent, a.bundle, port)
        assert not cluster.allowed(a.agent, a.bundle, port, "UDP")
        assert not cluster.allowed(a.agent, b.bundle, port)  # another bottle's bundle
    # The daemons' own ports and anything else on its bundle: closed.
    for port in (8080, 9418, 8765, 22, 53, 10250):
        assert not cluster.allowed(a.agent, a.bundle, port)


def test_agent_reaches_nothing_else(world: Any) -> None:
    cluster, a, b, other = world
    targets = [PUBLIC_V4, PUBLIC_V6, METADATA, API_SERVICE, KUBE_DNS, *CLUSTER_RANGES]
    for ip in targets:
        for port in (53, 80, 443, 6443):
            assert not cluster.allowed(a.agent, ip, port), ip
        assert not cluster.allowed(a.agent, ip, 53, "UDP"), ip
    assert not cluster.allowed(a.agent, NODE, 10250)  # the kubelet (by policy; see README)
    assert not cluster.allowed(a.agent, NODE, 6443)
    assert not cluster.allowed(a.agent, b.agent, NETWORK_PORTS["proxy"])
    assert not cluster.allowed(a.agent, other, 80)


def test_nothing_reaches_an_agent(world: Any) -> None:
    cluster, a, b, other = world
    for src in (a.bundle, b.bundle, b.agent, other, PUBLIC_V4, NODE):
        for port in (22, 8080, NETWORK_PORTS["proxy"], 10250):
            assert not cluster.allowed(src, a.agent, port), src


def test_bundle_receives_only_from_its_agent(world: Any) -> None:
    cluster, a, b, other = world
    port = NETWORK_PORTS["proxy"]
    assert cluster.allowed(a.agent, a.bundle, port)
    for src in (b.agent, b.bundle, other, PUBLIC_V4, NODE):
        assert not cluster.allowed(src, a.bundle, port), src


def test_bundle_reaches_the_internet_and_dns_only(world: Any) -> None:
    cluster, a, b, other = world
    assert cluster.allowed(a.bundle, PUBLIC_V4, 443)
    assert cluster.allowed(a.bundle, PUBLIC_V4, 22)  # egress's routes say which hosts
    assert cluster.allowed(a.bundle, PUBLIC_V6, 443)
    assert cluster.allowed(a.bundle, KUBE_DNS, 53, "UDP")
    assert cluster.allowed(a.bundle, KUBE_DNS, 53)
    assert not cluster.allowed(a.bundle, KUBE_DNS, 9153)  # CoreDNS metrics
    for ip in (METADATA, API_SERVICE, NODE, *CLUSTER_RANGES):
        assert not cluster.allowed(a.bundle, ip, 443), ip
    assert not cluster.allowed(a.bundle, NODE, 10250)
    for pod in (a.agent, b.bundle, b.agent, other):
        assert not cluster.allowed(a.bundle, pod, NETWORK_PORTS["proxy"]), pod.name


def test_bundle_reaches_the_addresses_extra_hosts_pins(world: Any) -> None:
    """The full bottle pins api.example.test to 10.9.8.7 (a private address):
    the bundle reaches that one address, not its neighbours; the agent never."""
    cluster, a, _b, _other = world
    assert cluster.allowed(a.bundle, "10.9.8.7", 443)
    assert not cluster.allowed(a.bundle, "10.9.8.8", 443)
    assert not cluster.allowed(a.agent, "10.9.8.7", 443)


def test_configured_cluster_ranges_are_closed_to_the_bundle(
    make_kube_plan: Any, launch_inputs: dict[str, Any]
) -> None:
    """A cluster whose pods or services live outside the private ranges
    (here 198.18/15 and a global v6 prefix) passes them; without that, they
    would count as the internet."""
    weird_pods, weird_services = "198.18.0.0/15", "2001:db8:5::/112"
    for configured, expect in ((True, False), (False, True)):
        cluster = Cluster()
        cluster.add_policies(render_namespace(NS))
        extra = (
            {"pod_cidrs": (weird_pods,), "service_cidrs": (weird_services,)} if configured else {}
        )
        objs = render_bottle(
            make_kube_plan("minimal"), **{**launch_inputs, "namespace": NS, **extra}
        )
        bundle = cluster.add_pod(_pod(objs, "sidecars", "198.18.0.17"))
        cluster.add_policies(objs)
        assert cluster.allowed(bundle, "198.18.4.4", 443) is expect
        assert cluster.allowed(bundle, "2001:db8:5::1", 443) is expect


def test_minimal_bottle_serves_the_proxy_port_only(
    make_kube_plan: Any, launch_inputs: dict[str, Any]
) -> None:
    cluster = Cluster()
    cluster.add_policies(render_namespace(NS))
    objs = render_bottle(make_kube_plan("minimal"), **{**launch_inputs, "namespace": NS})
    bundle = cluster.add_pod(_pod(objs, "sidecars", "10.244.1.17"))
    agent = cluster.add_pod(_pod(objs, "agent", "10.244.1.18"))
    cluster.add_policies(objs)
    assert cluster.allowed(agent, bundle, NETWORK_PORTS["proxy"])
    assert not cluster.allowed(agent, bundle, NETWORK_PORTS["git"])
    assert not cluster.allowed(agent, bundle, NETWORK_PORTS["mcp"])


def test_without_the_bottle_policies_the_default_deny_still_holds(world: Any) -> None:
    """The namespace default deny is what a missing per-bottle policy falls
    back to: closed, not open."""
    cluster, a, _b, _other = world
    cluster.policies = [
        p for p in cluster.policies if p["metadata"]["name"] == "bot-bottle-default-deny"
    ]
    assert not cluster.allowed(a.agent, a.bundle, NETWORK_PORTS["proxy"])
    assert not cluster.allowed(a.bundle, PUBLIC_V4, 443)


def test_without_any_policy_the_agent_would_reach_everything(world: Any) -> None:
    """The negative control: the pod network itself fences nothing (what a
    CNI without NetworkPolicy enforcement gives; the fence probe's job)."""
    cluster, a, b, _other = world
    cluster.policies = []
    assert cluster.allowed(a.agent, METADATA, 80)
    assert cluster.allowed(a.agent, b.bundle, NETWORK_PORTS["proxy"])
    assert cluster.allowed(a.agent, PUBLIC_V4, 443)


def test_each_bottle_policy_selects_its_own_pods_only(world: Any) -> None:
    _cluster, a, b, other = world
    for policy in (o for o in a.objects if o["kind"] == "NetworkPolicy"):
        assert selects(policy, NS, a.agent.labels) != selects(policy, NS, a.bundle.labels)
        assert not selects(policy, NS, b.agent.labels)
        assert not selects(policy, NS, b.bundle.labels)
        assert not selects(policy, other.namespace, other.labels)


def test_a_foreign_policy_selecting_bottle_pods_is_found(world: Any) -> None:
    """An allow-all policy someone else put in the namespace would open the
    fence (policies add up): it is what the launch refuses on."""
    cluster, a, _b, _other = world
    pods = [a.agent.labels, a.bundle.labels]
    assert foreign_policies(cluster.policies, NS, pods) == []
    allow_all = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-egress", "namespace": NS},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
    }
    elsewhere = {**allow_all, "metadata": {"name": "x", "namespace": "default"}}
    cluster.policies += [allow_all, elsewhere]
    assert cluster.allowed(a.agent, METADATA, 80)  # what it would do
    assert foreign_policies(cluster.policies, NS, pods) == ["allow-egress"]


def test_the_label_selector_finds_exactly_one_bottles_objects(world: Any) -> None:
    from bot_bottle_kubernetes.netpol import selector_matches
    from bot_bottle_kubernetes.render import label_selector

    _cluster, a, b, _other = world
    slug = a.agent.labels["bot-bottle/slug"]
    match_labels = dict(kv.split("=", 1) for kv in label_selector(slug=slug).split(","))
    selector = {"matchLabels": match_labels}
    found = [
        o for o in a.objects + b.objects if selector_matches(selector, o["metadata"]["labels"])
    ]
    assert found == a.objects  # every object of bottle a, none of b
