"""The NetworkPolicy evaluator against the API's documented semantics, so a
matrix it proves means something: each case here is one the Kubernetes
documentation (concepts/services-networking/network-policies) states, and
each would pass wrongly under a plausible misreading."""

from __future__ import annotations

from typing import Any

import pytest

from bot_bottle_kubernetes.netpol import Cluster, Pod, policy_types, selector_matches


def _policy(ns: str, spec: dict[str, Any], name: str = "p") -> dict[str, Any]:
    return {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns}, "spec": spec}


@pytest.fixture
def cluster() -> Cluster:
    c = Cluster()
    c.add_namespace("a", {"team": "x"})
    c.add_namespace("b", {"team": "y"})
    c.add_pod(Pod("web", "a", {"app": "web"}, "10.0.0.1", {"http": (8080, "TCP")}))
    c.add_pod(Pod("db", "a", {"app": "db"}, "10.0.0.2"))
    c.add_pod(Pod("web-b", "b", {"app": "web"}, "10.0.1.1"))
    c.add_pod(Pod("cli-b", "b", {"app": "client"}, "10.0.1.2"))
    return c


def test_no_policy_allows_everything(cluster: Cluster) -> None:
    assert cluster.allowed("10.0.1.2", "10.0.0.1", 5432)
    assert cluster.allowed("10.0.0.1", "203.0.113.9", 443)


def test_default_deny_ingress_leaves_egress_open(cluster: Cluster) -> None:
    # No policyTypes, no rules: Ingress only (egress is not mentioned).
    cluster.policies.append(_policy("a", {"podSelector": {}}))
    assert not cluster.allowed("10.0.1.2", "10.0.0.1", 80)
    assert cluster.allowed("10.0.0.1", "203.0.113.9", 443)
    assert cluster.allowed("10.0.1.2", "10.0.1.1", 80)  # namespace b is not isolated


def test_policy_types_default_adds_egress_when_egress_rules_exist() -> None:
    assert policy_types({"spec": {"podSelector": {}}}) == {"Ingress"}
    assert policy_types({"spec": {"podSelector": {}, "egress": []}}) == {"Ingress", "Egress"}
    assert policy_types({"spec": {"podSelector": {}, "policyTypes": ["Egress"]}}) == {"Egress"}


def test_default_deny_egress(cluster: Cluster) -> None:
    cluster.policies.append(_policy("a", {"podSelector": {}, "policyTypes": ["Egress"]}))
    assert not cluster.allowed("10.0.0.1", "203.0.113.9", 443)
    assert not cluster.allowed("10.0.0.1", "10.0.0.2", 5432)
    assert cluster.allowed("10.0.1.2", "10.0.0.1", 80)  # ingress still open


def test_allow_all_rule_is_an_empty_rule(cluster: Cluster) -> None:
    cluster.policies.append(_policy("a", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    cluster.policies.append(
        _policy("a", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]}, "allow")
    )
    assert cluster.allowed("10.0.1.2", "10.0.0.1", 1234)
    assert not cluster.allowed("10.0.1.2", "10.0.0.2", 1234)  # policies add up per pod


def test_pod_selector_alone_means_the_policys_own_namespace(cluster: Cluster) -> None:
    cluster.policies.append(
        _policy(
            "a",
            {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
            },
        )
    )
    assert cluster.allowed("10.0.0.1", "10.0.0.2", 5432)  # web in a
    assert not cluster.allowed("10.0.1.1", "10.0.0.2", 5432)  # web in b: not selected


def test_namespace_and_pod_selector_in_one_peer_is_and_in_two_is_or(cluster: Cluster) -> None:
    both = {"namespaceSelector": {"matchLabels": {"team": "y"}},
            "podSelector": {"matchLabels": {"app": "client"}}}  # fmt: skip
    cluster.policies.append(
        _policy("a", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [both]}]})
    )
    assert cluster.allowed("10.0.1.2", "10.0.0.2", 5432)  # client in team y
    assert not cluster.allowed("10.0.1.1", "10.0.0.2", 5432)  # web in team y
    either = [{"namespaceSelector": {"matchLabels": {"team": "y"}}},
              {"podSelector": {"matchLabels": {"app": "client"}}}]  # fmt: skip
    cluster.policies[0] = _policy(
        "a", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": either}]}
    )
    assert cluster.allowed("10.0.1.1", "10.0.0.2", 5432)  # any pod of team y


def test_ip_block_with_except(cluster: Cluster) -> None:
    block = {"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}}
    cluster.policies.append(
        _policy("a", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [block]}]})
    )
    assert cluster.allowed("10.0.0.1", "172.17.0.9", 443)
    assert not cluster.allowed("10.0.0.1", "172.17.1.9", 443)
    assert not cluster.allowed("10.0.0.1", "172.18.0.1", 443)
    # An IPv6 address is never inside an IPv4 block.
    assert not cluster.allowed("10.0.0.1", "::ffff:172.17.0.9", 443)


def test_ports_protocol_ranges_and_named_ports(cluster: Cluster) -> None:
    cluster.policies.append(
        _policy(
            "a",
            {
                "podSelector": {},
                "ingress": [
                    {"ports": [{"port": 5432}]},  # protocol defaults to TCP
                    {"ports": [{"protocol": "UDP", "port": 9000, "endPort": 9010}]},
                    {"ports": [{"port": "http"}]},  # the destination's named port
                ],
            },
        )
    )
    assert cluster.allowed("10.0.1.2", "10.0.0.2", 5432)
    assert not cluster.allowed("10.0.1.2", "10.0.0.2", 5432, "UDP")
    assert cluster.allowed("10.0.1.2", "10.0.0.2", 9005, "UDP")
    assert not cluster.allowed("10.0.1.2", "10.0.0.2", 9011, "UDP")
    assert cluster.allowed("10.0.1.2", "10.0.0.1", 8080)  # web names 8080 "http"
    assert not cluster.allowed("10.0.1.2", "10.0.0.2", 8080)  # db has no such name


def test_both_ends_must_allow(cluster: Cluster) -> None:
    cluster.policies.append(_policy("b", {"podSelector": {}, "egress": [{}]}, "b-out"))
    cluster.policies.append(_policy("a", {"podSelector": {}}, "a-deny"))
    assert not cluster.allowed("10.0.1.2", "10.0.0.1", 80)  # b may send, a refuses
    cluster.policies[1] = _policy("a", {"podSelector": {}, "ingress": [{}]}, "a-open")
    cluster.policies.append(_policy("b", {"podSelector": {}, "policyTypes": ["Egress"]}, "b-deny"))
    # Policies add up: b-out still allows the egress b-deny alone would not.
    assert cluster.allowed("10.0.1.2", "10.0.0.1", 80)


def test_label_selector_expressions() -> None:
    labels = {"tier": "db", "env": "prod"}
    assert selector_matches({}, labels)
    in_expr = {"key": "tier", "operator": "In", "values": ["db", "cache"]}
    assert selector_matches({"matchExpressions": [in_expr]}, labels)
    assert not selector_matches(
        {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}, labels
    )
    assert selector_matches(
        {"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, labels
    )
    assert not selector_matches({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, labels)
    assert not selector_matches(
        {"matchLabels": {"tier": "db"}, "matchExpressions": [{"key": "x", "operator": "Exists"}]},
        labels,
    )
