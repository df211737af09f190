"""Test 1 of #24: every rendered object validates strictly (unknown fields
refused) against the official OpenAPI schemas of each supported minor
version, as the ``kubernetes-validate`` wheel ships them (offline)."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from bot_bottle_kubernetes.render import render_bottle, render_namespace

#: Native sidecars (restartPolicy on an init container) are on by default
#: from 1.29: the oldest minor served.
VERSIONS = ["1.29", "1.30", "1.31", "1.32", "1.33", "1.34", "1.35"]

#: Renderings that together cover every optional field.
VARIANTS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "full-gvisor-userns": (
        "full",
        {"cwd": True},
        {"runtime_class": "gvisor", "host_users": False, "seccomp": "localhost"},
    ),
    "minimal-runc-runtime-default": (
        "minimal",
        {"gvisor": False},
        {"seccomp": "runtime-default", "pod_cidrs": ("fd00:10:244::/56",)},
    ),
}


def _objects(make_kube_plan: Any, launch_inputs: dict[str, Any], variant: str) -> list[Any]:
    bottle, plan_kw, render_kw = VARIANTS[variant]
    plan = make_kube_plan(bottle, **plan_kw)
    return [
        *render_namespace(launch_inputs["namespace"]),
        *render_bottle(plan, **{**launch_inputs, **render_kw}),
    ]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("version", VERSIONS)
def test_rendered_objects_validate_strictly(
    version: str, variant: str, make_kube_plan: Any, launch_inputs: dict[str, Any]
) -> None:
    objects = _objects(make_kube_plan, launch_inputs, variant)
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == ["ConfigMap", "Lease", "NetworkPolicy", "Pod", "Secret"]
    for obj in objects:
        # validate() picks the newest schema not newer than asked; it must
        # be exactly this minor, or the test would name a version it did not use.
        used = kubernetes_validate.validate(obj, version, strict=True)
        assert used == version, (obj["kind"], used)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_validator_refuses_what_a_server_would(
    version: str, make_kube_plan: Any, launch_inputs: dict[str, Any]
) -> None:
    """The check can fail: an unknown field, a wrong type, a misspelt enum-less
    field in the agent pod are each refused under the same schemas."""
    objects = _objects(make_kube_plan, launch_inputs, "full-gvisor-userns")
    pod = next(o for o in objects if o["kind"] == "Pod" and o["metadata"]["name"].endswith("agent"))
    unknown = copy.deepcopy(pod)
    unknown["spec"]["automountServiceAcountToken"] = False  # misspelt: silently dropped by default
    wrong_type = copy.deepcopy(pod)
    wrong_type["spec"]["activeDeadlineSeconds"] = "86400"
    nested = copy.deepcopy(pod)
    nested["spec"]["initContainers"][0]["securityContext"]["capabilities"]["remove"] = ["ALL"]
    for broken in (unknown, wrong_type, nested):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, version, strict=True)


def test_every_supported_version_is_shipped_offline() -> None:
    from kubernetes_validate import utils

    shipped = {utils.major_minor(v) for v in utils.all_versions()}
    assert set(VERSIONS) <= shipped
