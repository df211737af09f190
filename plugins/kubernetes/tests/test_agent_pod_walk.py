"""Test 4 of #24: a walk over the agent pod's whole spec proves it holds no
Secret reference (env valueFrom, envFrom, volumes, projected sources, image
pull secrets), no service-account token and no DNS; and that the bottle's
secret values appear in no object but the bundle's Secrets. Objects are
rendered for the Kubernetes 1.29-1.35 API (the fields are the same in each)."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from bot_bottle_kubernetes.render import A_EXEC_ENV, render_bottle

ROUTE_TOKEN = "route-token-value-7f3a9c"
BOTTLE_SECRET = "bottle-secret-value-51be02"


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def secret_references(pod: dict[str, Any]) -> list[str]:
    """Every path in ``pod`` that makes the kubelet hand a Secret or a token
    to its containers, or names one."""
    found: list[str] = []
    spec = pod["spec"]
    if spec.get("automountServiceAccountToken") is not False:
        found.append(".spec.automountServiceAccountToken is not false")
    for path, node in _walk(spec, ".spec"):
        if not isinstance(node, dict):
            continue
        for key in node:
            lowered = key.lower()
            # secret, secretKeyRef, secretRef, imagePullSecrets, secretName...
            if "secret" in lowered or key == "serviceAccountToken":
                found.append(f"{path}.{key}")
            if key == "valueFrom" or key == "envFrom":
                found.append(f"{path}.{key}")  # nothing is taken from an object
    return found


def dns_leaks(pod: dict[str, Any]) -> list[str]:
    spec = pod["spec"]
    out: list[str] = []
    if spec.get("dnsPolicy") != "None":
        out.append(f"dnsPolicy {spec.get('dnsPolicy')!r}")
    servers = (spec.get("dnsConfig") or {}).get("nameservers", [])
    out += [f"nameserver {s}" for s in servers if s not in ("127.0.0.1", "::1")]
    if (spec.get("dnsConfig") or {}).get("searches"):
        out.append("search domains")
    if spec.get("enableServiceLinks") is not False:
        out.append("service links (every service's address as env)")
    if spec.get("hostNetwork"):
        out.append("hostNetwork")
    return out


def _agent_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(
        o
        for o in objects
        if o["kind"] == "Pod" and o["metadata"]["labels"]["bot-bottle/role"] == "agent"
    )


@pytest.fixture(params=["full", "minimal"])
def objects(request: Any, make_kube_plan: Any, launch_inputs: dict[str, Any]) -> list[Any]:
    plan = make_kube_plan(request.param, cwd=True)
    return render_bottle(plan, **launch_inputs)


def test_agent_pod_has_no_secret_no_token_no_dns(objects: list[dict[str, Any]]) -> None:
    pod = _agent_pod(objects)
    assert secret_references(pod) == []
    assert dns_leaks(pod) == []
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never" and spec["activeDeadlineSeconds"] > 0
    assert not spec.get("hostPID") and not spec.get("hostIPC")
    # Only in-pod volumes: nothing from the node, no object.
    assert {next(k for k in v if k != "name") for v in spec["volumes"]} <= {"emptyDir"}


def test_bottle_secret_values_are_only_in_the_bundle_secrets(
    objects: list[dict[str, Any]],
) -> None:
    for obj in objects:
        text = json.dumps(obj)
        if obj["kind"] == "Secret":
            continue
        assert ROUTE_TOKEN not in text, obj["metadata"]["name"]
        assert BOTTLE_SECRET not in text, obj["metadata"]["name"]
        for secret in ("-----BEGIN OPENSSH PRIVATE KEY", "KEY"):
            assert base64.b64encode(secret.encode()).decode() not in text


def test_a_secret_valued_agent_variable_is_named_not_carried(
    make_kube_plan: Any, launch_inputs: dict[str, Any]
) -> None:
    pod = _agent_pod(render_bottle(make_kube_plan("full"), **launch_inputs))
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["LITERAL"] == "plain"  # an ordinary value stays in the spec
    assert "API_KEY" not in env
    assert pod["metadata"]["annotations"][A_EXEC_ENV] == "API_KEY"


def test_secrets_are_mounted_by_the_bundle_pod_only(objects: list[dict[str, Any]]) -> None:
    secrets = {o["metadata"]["name"] for o in objects if o["kind"] == "Secret"}
    bundle = next(
        o
        for o in objects
        if o["kind"] == "Pod" and o["metadata"]["labels"]["bot-bottle/role"] == "sidecars"
    )
    named: set[str] = set()
    for _path, node in _walk(bundle["spec"]):
        if isinstance(node, dict):
            if "secretName" in node:
                named.add(node["secretName"])
            if "secretRef" in node:
                named.add(node["secretRef"]["name"])
    assert named == secrets
    assert bundle["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize(
    "inject",
    [
        lambda s: s["containers"][0]["env"].append(
            {"name": "T", "valueFrom": {"secretKeyRef": {"name": "x", "key": "t"}}}
        ),
        lambda s: s["containers"][0].setdefault("envFrom", []).append({"secretRef": {"name": "x"}}),
        lambda s: s["volumes"].append({"name": "s", "secret": {"secretName": "x"}}),
        lambda s: s["volumes"].append(
            {"name": "p", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}
        ),
        lambda s: s["volumes"].append(
            {"name": "p", "projected": {"sources": [{"secret": {"name": "x"}}]}}
        ),
        lambda s: s.update(imagePullSecrets=[{"name": "regcred"}]),
        lambda s: s.pop("automountServiceAccountToken"),
        lambda s: (
            s["initContainers"][0]
            .setdefault("env", [])
            .append({"name": "T", "valueFrom": {"configMapKeyRef": {"name": "x", "key": "t"}}})
        ),
    ],
    ids=[
        "secretKeyRef",
        "envFrom",
        "secret-volume",
        "projected-token",
        "projected-secret",
        "pull-secret",
        "default-token",
        "sidecar-valueFrom",
    ],
)
def test_the_walk_finds_each_kind_of_reference(inject: Any, objects: list[dict[str, Any]]) -> None:
    pod = copy.deepcopy(_agent_pod(objects))
    inject(pod["spec"])
    assert secret_references(pod) != []


@pytest.mark.parametrize(
    "inject",
    [
        lambda s: s.update(dnsPolicy="ClusterFirst"),
        lambda s: s["dnsConfig"]["nameservers"].append("10.96.0.10"),
        lambda s: s.update(enableServiceLinks=True),
        lambda s: s.update(hostNetwork=True),
    ],
    ids=["cluster-first", "nameserver", "service-links", "host-network"],
)
def test_the_walk_finds_each_kind_of_dns(inject: Any, objects: list[dict[str, Any]]) -> None:
    pod = copy.deepcopy(_agent_pod(objects))
    inject(pod["spec"])
    assert dns_leaks(pod) != []
