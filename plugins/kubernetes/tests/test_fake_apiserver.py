"""The fake API server behaves as the real one does where the backend relies on
it (Kubernetes 1.33 schemas and semantics), checked through the official
client's own typed API, not through the backend's code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fake_apiserver import K8S_VERSION, FakeApiServer, selector_matches
from k8s_cluster_kit import NAMESPACE


def _core(fake: FakeApiServer, tmp_path: Path) -> Any:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(fake.write_kubeconfig(tmp_path / "kc")))
    return client.CoreV1Api(api)


def _cm(
    name: str, labels: dict[str, str] | None = None, owner: str | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NAMESPACE, "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner}
        ]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {}}


def test_version_is_the_pinned_one(fake: FakeApiServer, tmp_path: Path) -> None:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(fake.write_kubeconfig(tmp_path / "kc")))
    info = client.VersionApi(api).get_code()
    assert info.git_version == f"v{K8S_VERSION}"


def test_create_conflicts_and_not_found_carry_kubernetes_statuses(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    from kubernetes.client.exceptions import ApiException

    core = _core(fake, tmp_path)
    core.create_namespaced_config_map(NAMESPACE, _cm("a"), field_validation="Strict")
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(NAMESPACE, _cm("a"), field_validation="Strict")
    assert err.value.status == 409 and '"AlreadyExists"' in str(err.value.body)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("nope", NAMESPACE)
    assert err.value.status == 404 and '"NotFound"' in str(err.value.body)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("other", _cm("b"))
    assert err.value.status == 400  # body namespace differs from the URL's


def test_schema_violations_are_refused(fake: FakeApiServer) -> None:
    code, body = _raw(
        fake,
        "POST",
        "/api/v1/namespaces/bot-bottle/pods",
        b'{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{}}',
    )
    assert code == 422 and "containers" in body["message"]  # a required field
    code, body = _raw(
        fake,
        "POST",
        "/api/v1/namespaces/bot-bottle/pods",
        b'{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},'
        b'"spec":{"containers":[{"name":"c","image":"i","privileged":true}]}}',
    )
    assert code == 422 and "'privileged' was unexpected" in body["message"]  # misplaced field
    code, body = _raw(
        fake,
        "POST",
        "/api/v1/namespaces/bot-bottle/configmaps",
        b'{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}',
    )
    assert code == 400  # kind does not match the URL


def _raw(fake: FakeApiServer, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    import http.client
    import json

    host, port = fake.httpd.server_address[:2]
    conn = http.client.HTTPSConnection(
        str(host), port, timeout=10, context=fake.client_ssl_context()
    )
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def test_label_selectors(fake: FakeApiServer, tmp_path: Path) -> None:
    core = _core(fake, tmp_path)
    for name, labels in {"a": {"x": "1", "y": "2"}, "b": {"x": "2"}, "c": {}}.items():
        core.create_namespaced_config_map(NAMESPACE, _cm(name, labels))

    def names(sel: str) -> list[str]:
        items = core.list_namespaced_config_map(NAMESPACE, label_selector=sel).items
        return sorted(i.metadata.name for i in items)

    assert names("x=1") == ["a"]
    assert names("x") == ["a", "b"]
    assert names("!x") == ["c"]
    assert names("x!=1") == ["b", "c"]
    assert names("x in (1,2),y") == ["a"]
    assert names("x notin (1)") == ["b", "c"]
    assert selector_matches("", {})


def test_garbage_collection_follows_owner_references(fake: FakeApiServer, tmp_path: Path) -> None:
    core = _core(fake, tmp_path)
    owner = core.create_namespaced_config_map(NAMESPACE, _cm("owner"))
    uid = owner.metadata.uid
    core.create_namespaced_config_map(NAMESPACE, _cm("child", owner=uid))
    # Orphan keeps the dependent and strips its reference.
    core.delete_namespaced_config_map("owner", NAMESPACE, propagation_policy="Orphan")
    child = core.read_namespaced_config_map("child", NAMESPACE)
    assert not child.metadata.owner_references
    # A dependent of an owner that does not exist is collected.
    core.create_namespaced_config_map(NAMESPACE, _cm("stray", owner="no-such-uid"))
    names = [i.metadata.name for i in core.list_namespaced_config_map(NAMESPACE).items]
    assert "stray" not in names and "child" in names


def test_replace_with_a_stale_resource_version_conflicts(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    from kubernetes.client.exceptions import ApiException

    core = _core(fake, tmp_path)
    made = core.create_namespaced_config_map(NAMESPACE, _cm("a"))
    body = _cm("a")
    body["metadata"]["resourceVersion"] = made.metadata.resource_version
    core.replace_namespaced_config_map("a", NAMESPACE, body)
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("a", NAMESPACE, body)  # the old version again
    assert err.value.status == 409 and '"Conflict"' in str(err.value.body)


def test_an_unscripted_exec_never_passes(fake: FakeApiServer, tmp_path: Path) -> None:
    from k8s_cluster_kit import kube_for

    fake.seed(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": NAMESPACE},
            "spec": {"containers": [{"name": "agent", "image": "a:1"}]},
        }
    )
    result = kube_for(fake, tmp_path).exec("p", "agent", ["true"])
    assert result.exit_code == 126 and b"no exec handler" in result.stderr
