"""The optional agent-sandbox wrapper: the agent pod as a ``Sandbox``
(agents.x-k8s.io/v1beta1), validated against the CRD's schema pinned in
``data/sandbox-crd-v1beta1.json`` (kubernetes-sigs/agent-sandbox at the
commit it names, Apache-2.0), made strict the way a server with
``fieldValidation=Strict`` treats a structural schema: an unknown field is
an error, not pruned."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bot_bottle_kubernetes.render import render_bottle, render_sandbox

PINNED = json.loads((Path(__file__).parent / "data/sandbox-crd-v1beta1.json").read_text())


def _strict(node: Any) -> Any:
    """Every object schema with properties and no open map or preserve flag
    refuses other properties (what Strict field validation does)."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


SCHEMA = _strict(PINNED["openAPIV3Schema"])


def _sandbox(make_kube_plan: Any, launch_inputs: dict[str, Any], **render: Any) -> dict[str, Any]:
    objects = render_bottle(make_kube_plan("full", cwd=True), **{**launch_inputs, **render})
    pod = next(
        o for o in objects if o["kind"] == "Pod" and o["metadata"]["name"].endswith("-agent")
    )
    return render_sandbox(pod)


def test_the_pinned_schema_is_the_served_v1beta1() -> None:
    assert PINNED["crd"] == "sandboxes.agents.x-k8s.io" and PINNED["version"] == "v1beta1"
    assert len(PINNED["commit"]) == 40


@pytest.mark.parametrize("variant", [{}, {"runtime_class": "gvisor", "host_users": False}])
def test_sandbox_validates_against_the_pinned_crd(
    variant: dict[str, Any], make_kube_plan: Any, launch_inputs: dict[str, Any]
) -> None:
    sandbox = _sandbox(make_kube_plan, launch_inputs, **variant)
    jsonschema.validate(sandbox, SCHEMA)
    assert sandbox["apiVersion"] == "agents.x-k8s.io/v1beta1"
    template = sandbox["spec"]["podTemplate"]
    # The pod the controller makes carries the labels the policies select on.
    assert template["metadata"]["labels"]["bot-bottle/role"] == "agent"
    assert template["spec"]["automountServiceAccountToken"] is False
    assert template["spec"]["dnsPolicy"] == "None"
    assert sandbox["spec"]["service"] is False


@pytest.mark.parametrize(
    "inject",
    [
        lambda s: s["spec"].update(podTemplat={}),
        lambda s: s["spec"]["podTemplate"]["spec"]["containers"][0].update(imagePolicy="x"),
        lambda s: s["spec"]["podTemplate"]["metadata"].update(name="x"),
        lambda s: s["spec"].update(operatingMode="Paused"),
        lambda s: s["spec"].pop("podTemplate"),
    ],
    ids=["unknown-spec-field", "unknown-container-field", "template-name", "bad-enum", "missing"],
)
def test_the_pinned_schema_refuses_broken_sandboxes(
    inject: Any, make_kube_plan: Any, launch_inputs: dict[str, Any]
) -> None:
    sandbox = copy.deepcopy(_sandbox(make_kube_plan, launch_inputs))
    inject(sandbox)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(sandbox, SCHEMA)
