"""The kube context: doctor's cluster lines against the fake (Kubernetes 1.33,
and 1.28 for the too-old server), and the clear refusal without a context.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fake_apiserver import K8S_VERSION, FakeApiServer, running_fake
from k8s_cluster_kit import NAMESPACE, PodShell, mini_plan

from bot_bottle_kubernetes.backend import KubernetesBackend
from bot_bottle_kubernetes.cluster import ApiFailure, KubeError

assert K8S_VERSION.startswith("1.33")
BIN = Path(sys.executable).parent


def _lines(backend: KubernetesBackend) -> dict[str, tuple[str, str]]:
    return {c.what: (c.level, c.detail) for c in backend.host_checks()}


def test_doctor_on_a_plain_cluster(kube_env: FakeApiServer) -> None:
    lines = _lines(KubernetesBackend())
    assert lines["kubernetes server"] == ("OK", f"v{K8S_VERSION} (>= 1.29)")
    level, detail = lines["NetworkPolicy enforcement"]
    assert level == "WARN" and detail.startswith("unknown")
    assert lines["gVisor RuntimeClass"][0] == "WARN"
    assert lines["gVisor RuntimeClass"][1].startswith("absent")


def test_doctor_sees_an_enforcing_cni_and_runsc(kube_env: FakeApiServer) -> None:
    kube_env.seed(
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "calico-node", "namespace": "kube-system"},
            "spec": {
                "selector": {"matchLabels": {"k8s-app": "calico-node"}},
                "template": {
                    "metadata": {"labels": {"k8s-app": "calico-node"}},
                    "spec": {"containers": [{"name": "calico-node", "image": "calico/node"}]},
                },
            },
        }
    )
    kube_env.seed(
        {
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {"name": "gvisor"},
            "handler": "runsc",
        }
    )
    lines = _lines(KubernetesBackend())
    assert lines["NetworkPolicy enforcement"][0] == "OK"
    assert "Calico" in lines["NetworkPolicy enforcement"][1]
    assert lines["gVisor RuntimeClass"] == ("OK", "present: gvisor")


def test_the_runsc_runtime_class_is_used_only_when_the_cluster_has_it(
    kube_env: FakeApiServer, shell: PodShell
) -> None:
    backend = KubernetesBackend(progress=lambda _m: None)
    with backend.launch(backend.prepare(mini_plan())):
        agent = kube_env.get("Pod", NAMESPACE, "bb-shell-0a1b2c-agent")
        assert agent is not None and "runtimeClassName" not in agent["spec"]
    kube_env.seed(
        {
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {"name": "gvisor"},
            "handler": "runsc",
        }
    )
    with backend.launch(backend.prepare(mini_plan())):
        agent = kube_env.get("Pod", NAMESPACE, "bb-shell-0a1b2c-agent")
        assert agent is not None and agent["spec"]["runtimeClassName"] == "gvisor"


@pytest.mark.parametrize("version", ["1.28.0"], ids=["k8s-1.28.0"])
def test_a_server_older_than_1_29_is_refused(
    version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_fake(version) as old:
        old.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        monkeypatch.setenv("KUBECONFIG", str(old.write_kubeconfig(tmp_path / "kc")))
        monkeypatch.setenv("BOT_BOTTLE_HOME", str(tmp_path / "home"))
        backend = KubernetesBackend(progress=lambda _m: None)
        lines = _lines(backend)
        assert lines["kubernetes server"][0] == "FAIL"
        refused = pytest.raises(KubeError, match=r"v1\.28\.0; bottles need >= 1\.29")
        with refused, backend.launch(backend.prepare(mini_plan())):
            pass
        assert old.creates == 0


def test_strict_field_validation_reaches_the_server(
    kube_env: FakeApiServer, tmp_path: Path
) -> None:
    """Objects go as exact dicts: an unknown field is refused by the server,
    not dropped on the client by the generated models."""
    from k8s_cluster_kit import kube_for

    kube = kube_for(kube_env, tmp_path)
    with pytest.raises(ApiFailure) as err:
        kube.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "x", "namespace": NAMESPACE},
                "data": {},
                "dataa": {},
            }
        )
    assert err.value.status == 422 and "'dataa' was unexpected" in err.value.message


def test_an_unreachable_cluster_fails_before_anything_is_built(
    kube_env: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = (tmp_path / "kubeconfig").read_text().replace(kube_env.url, f"https://127.0.0.1:{port}")
    (tmp_path / "dead").write_text(cfg)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "dead"))
    backend = KubernetesBackend(progress=lambda _m: None)
    backend_line = _lines(backend)["kubernetes cluster"]
    assert backend_line[0] == "FAIL" and "cannot reach" in backend_line[1]
    unreachable = pytest.raises(KubeError, match="cannot reach the Kubernetes API server")
    with unreachable as err, backend.launch(backend.prepare(mini_plan())):
        pass
    assert err.value.hint


@pytest.mark.parametrize("version", [K8S_VERSION], ids=[f"k8s-{K8S_VERSION}"])
def test_context_problems_are_named(
    version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KUBECONFIG", "")
    backend = KubernetesBackend()
    assert not backend.is_available().ok
    assert "no kubeconfig file found" in backend.is_available().detail
    cfg = tmp_path / "kc"
    cfg.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    monkeypatch.setenv("KUBECONFIG", str(cfg))
    assert "names no current context" in backend.is_available().detail
    with running_fake(version) as server:
        server.write_kubeconfig(cfg)
        assert backend.is_available().ok
        monkeypatch.setenv("BOT_BOTTLE_K8S_CONTEXT", "prod")
        assert "context 'prod' is not in the kubeconfig" in backend.is_available().detail
        assert backend.list_active() == [] and backend.find_orphans() == []


@pytest.mark.parametrize("version", [K8S_VERSION], ids=[f"k8s-{K8S_VERSION}"])
def test_start_without_a_kube_context_says_what_to_configure_and_leaves_nothing(
    version: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BOT_BOTTLE_")},
        "HOME": str(tmp_path),
        "BOT_BOTTLE_HOME": str(home),
        "KUBECONFIG": "",
    }
    subprocess.run(
        [BIN / "bot-bottle", "init"], env=env, cwd=tmp_path, check=True, capture_output=True
    )
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    proc = subprocess.run(
        [BIN / "bot-bottle", "start", "demo", "--backend", "kubernetes", "--yes"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "error: backend 'kubernetes' is not available: no kube context" in proc.stderr
    assert "hint: " in proc.stderr and "KUBECONFIG" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_a_server_certificate_the_kubeconfig_does_not_trust_is_refused(
    kube_env: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client verifies the API server against the kubeconfig's CA; a
    server with another CA is an error before anything is created."""
    with running_fake() as impostor:  # same address form, its own CA
        (tmp_path / "mixed").write_text(
            (tmp_path / "kubeconfig").read_text().replace(kube_env.url, impostor.url)
        )
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "mixed"))
        backend = KubernetesBackend(progress=lambda _m: None)
        untrusted = pytest.raises(KubeError, match="CERTIFICATE_VERIFY_FAILED")
        with untrusted, backend.launch(backend.prepare(mini_plan())):
            pass
        assert impostor.creates == 0


def test_list_asks_a_cluster_only_when_this_home_uses_it(
    kube_env: FakeApiServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kubeconfig for unrelated work is not asked on every `list`/`cleanup`;
    and an unreachable cluster warns instead of breaking the other backends."""
    monkeypatch.delenv("BOT_BOTTLE_K8S_NAMESPACE")
    backend = KubernetesBackend()
    before = len(kube_env.requests)
    assert backend.list_active() == [] and backend.find_orphans() == []
    assert len(kube_env.requests) == before  # never asked
    monkeypatch.setenv("BOT_BOTTLE_K8S_NAMESPACE", NAMESPACE)
    assert backend.list_active() == []
    assert len(kube_env.requests) > before
    kube_env.stop()  # the cluster goes away
    assert backend.list_active() == []
    assert "warning: cannot list bottles on the Kubernetes cluster" in capsys.readouterr().err


def test_the_cli_lists_a_cluster_bottle(
    kube_env: FakeApiServer, shell: PodShell, tmp_path: Path
) -> None:
    """`bot-bottle list active --json` (the real CLI) shows a bottle running
    on the cluster, read from its anchor and Lease."""
    import json

    backend = KubernetesBackend(progress=lambda _m: None)
    with backend.launch(backend.prepare(mini_plan())):
        proc = subprocess.run(
            [BIN / "bot-bottle", "list", "active", "--json"],
            env=dict(os.environ),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert "Traceback" not in proc.stderr
    rows = [r for r in json.loads(proc.stdout)["active"] if r["backend"] == "kubernetes"]
    assert [(r["slug"], r["agent"], r["label"]) for r in rows] == [
        ("shell-0a1b2c", "shell", "k8s test")
    ]
