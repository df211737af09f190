"""The bundle pod and its files: the sidecar bundle's own layout (the same
``bot_bottle_sidecars.layout`` the Docker backend writes), with the relay
daemon on the pod's address; the ConfigMap lays out every file."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from bot_bottle_sidecars.init.plan import parse_plan
from bot_bottle_sidecars.layout import (
    DAEMON_USERS,
    ETC,
    NETWORK_PORTS,
    SECRETS_CA,
    SECRETS_GATE_KEYS,
    UPSTREAM_CA,
    bundle_files,
)

from bot_bottle_kubernetes.egress_live import live_init_plan
from bot_bottle_kubernetes.render import render_bottle


def _by_role(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["labels"]["bot-bottle/role"]: o for o in objects}


def test_etc_configmap_holds_the_bundles_files_with_the_network_relay(
    make_kube_plan: Any, launch_inputs: dict[str, Any]
) -> None:
    plan = make_kube_plan("full")
    objs = _by_role(render_bottle(plan, **launch_inputs))
    data = objs["etc"]["data"]
    volume = next(v for v in objs["sidecars"]["spec"]["volumes"] if v["name"] == "etc")
    files = {item["path"]: data[item["key"]] for item in volume["configMap"]["items"]}
    # Every file the Docker backend writes is there, at the same path...
    expected = bundle_files(plan, network_relay=True)
    # (egress reads the writable copy the egress-config init container makes)
    expected["init-plan.json"] = live_init_plan(expected["init-plan.json"])
    assert {k: files[k] for k in expected} == expected
    assert files[UPSTREAM_CA.removeprefix(ETC + "/")] == launch_inputs["upstream_ca"].decode()
    # ...and init accepts the plan: the relay daemon serves the pod's address.
    init = parse_plan(json.loads(files["init-plan.json"]))
    assert {d.name: d.user for d in init.daemons} == {n: u.name for n, u in DAEMON_USERS.items()}
    relay = next(d for d in init.daemons if d.name == "relay")
    for port in NETWORK_PORTS.values():
        assert any(a.startswith(f"tcp:0.0.0.0:{port}=") for a in relay.argv)
    # The other daemons still listen on loopback only.
    for daemon in init.daemons:
        if daemon.name != "relay":
            assert "0.0.0.0" not in " ".join(daemon.argv)  # noqa: S104


def test_bundle_pod_mounts_secrets_where_init_copies_them_from(
    make_kube_plan: Any, launch_inputs: dict[str, Any]
) -> None:
    objs = _by_role(render_bottle(make_kube_plan("full"), **launch_inputs))
    container = objs["sidecars"]["spec"]["containers"][0]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in objs["sidecars"]["spec"]["volumes"]}
    for path, role in ((SECRETS_CA, "ca"), (SECRETS_GATE_KEYS, "gate-keys")):
        mount = mounts[path]
        assert mount["readOnly"] is True
        secret = volumes[mount["name"]]["secret"]
        assert secret["secretName"] == objs[role]["metadata"]["name"]
        assert secret["defaultMode"] == 0o400  # init (root) alone reads them
    assert container["envFrom"] == [{"secretRef": {"name": objs["env"]["metadata"]["name"]}}]
    # The Docker bundle's capabilities, nothing more.
    caps = container["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    assert set(caps["add"]) == {
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "KILL",
        "SETGID",
        "SETPCAP",
        "SETUID",
    }
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # extra_hosts pins (and the introspection name) as hostAliases.
    aliases = {h for a in objs["sidecars"]["spec"]["hostAliases"] for h in a["hostnames"]}
    assert "api.example.test" in aliases


def test_every_object_but_the_anchor_is_owned_by_it(
    make_kube_plan: Any, launch_inputs: dict[str, Any]
) -> None:
    objects = render_bottle(make_kube_plan("minimal"), **launch_inputs)
    anchor = objects[0]
    assert anchor["metadata"]["labels"]["bot-bottle/role"] == "anchor"
    assert "ownerReferences" not in anchor["metadata"]
    for obj in objects[1:]:
        (ref,) = obj["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"]) == (
            "ConfigMap",
            anchor["metadata"]["name"],
            launch_inputs["anchor_uid"],
        )
    # Labels are ids only; the free text is in annotations.
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert set(labels) == {
            "app.kubernetes.io/managed-by", "bot-bottle/backend", "bot-bottle/slug",
            "bot-bottle/role", "bot-bottle/home",
        }  # fmt: skip
        assert obj["metadata"]["annotations"]["bot-bottle/agent"] == "a1"


def test_rendering_is_deterministic_given_the_start(
    make_kube_plan: Any, launch_inputs: dict[str, Any]
) -> None:
    from datetime import UTC, datetime

    plan = make_kube_plan("full")
    when = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)
    first = render_bottle(plan, **launch_inputs, started=when)
    again = render_bottle(plan, **{**launch_inputs, "bundle_address": "10.244.9.9"}, started=when)
    differ = [a["metadata"]["name"] for a, b in zip(first, again, strict=True) if a != b]
    assert differ == [first[-1]["metadata"]["name"]]  # only the agent pod names the address


def test_secret_files_keep_their_exact_names(
    make_kube_plan: Any, launch_inputs: dict[str, Any]
) -> None:
    """A Secret key allows fewer characters than a file name: the volume's
    items lay each key out under the name the daemons' configs use."""
    keys = {"proj+mirror key": b"KEY-1", "plain": b"KEY-2"}
    objs = _by_role(render_bottle(make_kube_plan("full"), **{**launch_inputs, "gate_keys": keys}))
    data = objs["gate-keys"]["data"]
    volume = next(
        v for v in objs["sidecars"]["spec"]["volumes"] if v["name"] == "secrets-gate-keys"
    )
    laid_out = {i["path"]: base64.b64decode(data[i["key"]]) for i in volume["secret"]["items"]}
    assert laid_out == keys
    with pytest.raises(ValueError, match="not a file name"):
        render_bottle(make_kube_plan("full"), **{**launch_inputs, "gate_keys": {"../x": b"k"}})
