"""The backend's lifecycle against the fake API server, through the official client.

Every test runs against the fake validating Kubernetes 1.33 (the
``k8s-1.33.0`` in each test id, :data:`fake_apiserver.K8S_VERSION`): every
body the backend sends is checked against that version's official OpenAPI
schemas, strictly. What the fake cannot show (a real CNI, a real kubelet,
real GC timing) is listed in fake_apiserver.py and the README.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fake_apiserver import K8S_VERSION, FakeApiServer
from k8s_cluster_kit import (
    NAMESPACE,
    PodShell,
    bottle_objects,
    kube_for,
    mini_plan,
    open_network,
)

from bot_bottle.errors import BotBottleError
from bot_bottle_kubernetes.backend import KubernetesBackend
from bot_bottle_kubernetes.fence import FenceOpenError
from bot_bottle_kubernetes.lifecycle import (
    LEASE_SECONDS,
    ORPHAN_GRACE,
    BottleObjects,
    cleanup,
    orphans,
    renew_lease,
)
from bot_bottle_kubernetes.render import render_bottle

assert K8S_VERSION.startswith("1.33")

ALL_KINDS = {"ConfigMap", "Lease", "Secret", "NetworkPolicy", "Pod"}


def _launch(backend: KubernetesBackend, **plan: Any) -> Any:
    return backend.launch(backend.prepare(mini_plan(**plan)))


def _quiet() -> KubernetesBackend:
    return KubernetesBackend(progress=lambda _m: None)


#: The oldest and newest supported minors, besides the pinned one.
SUPPORTED_EDGES = ["1.29.0", K8S_VERSION, "1.35.0"]


@pytest.mark.parametrize(
    "fake", SUPPORTED_EDGES, ids=[f"k8s-{v}" for v in SUPPORTED_EDGES], indirect=True
)
def test_whole_lifecycle_creates_under_the_anchor_and_cascades_away(
    kube_env: FakeApiServer, shell: PodShell
) -> None:
    backend = _quiet()
    with _launch(backend) as bottle:
        objs = kube_env.all(namespace=NAMESPACE)
        anchor = kube_env.get("ConfigMap", NAMESPACE, "bb-shell-0a1b2c")
        assert anchor is not None
        uid = anchor["metadata"]["uid"]
        owned = [
            o
            for o in objs
            if o is not anchor and o["metadata"]["name"] != "bot-bottle-default-deny"
        ]
        assert {o["kind"] for o in owned} == ALL_KINDS
        # The placeholder uid of the render was replaced by the real anchor's.
        for o in owned:
            refs = o["metadata"]["ownerReferences"]
            assert [(r["kind"], r["uid"], r["controller"]) for r in refs] == [
                ("ConfigMap", uid, True)
            ]
        # Every create asked for strict field validation.
        posts = [q for m, _p, q in kube_env.requests if m == "POST"]
        assert posts and all(q.get("fieldValidation") == ["Strict"] for q in posts)
        # The agent pod points its relay at the bundle pod's real IP (rendered again).
        bundle = kube_env.get("Pod", NAMESPACE, "bb-shell-0a1b2c-sidecars")
        agent = kube_env.get("Pod", NAMESPACE, "bb-shell-0a1b2c-agent")
        assert bundle is not None and agent is not None
        assert bundle["status"]["podIP"] in str(agent["spec"])
        assert "bundle-pod-ip.invalid" not in str(agent["spec"])
        # The agent pod was created after the bundle pod, the policies before both.
        order = [p.rsplit("/", 1)[-1] for m, p, _q in kube_env.requests if m == "POST"]
        assert order.index("networkpolicies") < order.index("pods")
        # Active from labels alone, with the anchor's annotations.
        [act] = backend.list_active()
        assert (act.slug, act.agent, act.label) == ("shell-0a1b2c", "shell", "k8s test")
        assert backend.find_orphans() == []
        # The agent CA is in place for the provider.
        assert (shell.root / "bb-shell-0a1b2c-agent/usr/local/share/ca-certificates").is_dir()
        assert bottle.exec(["agent-cli", "--version"]).exit_code == 127
    assert bottle_objects(kube_env) == []
    # The anchor went with a cascading policy.
    deletes = [p for m, p, _q in kube_env.requests if m == "DELETE"]
    assert deletes[0].endswith("/configmaps/bb-shell-0a1b2c")
    assert backend.list_active() == []


def test_a_failure_after_each_create_step_leaves_nothing(
    kube_env: FakeApiServer, shell: PodShell
) -> None:
    # Count the creates of one clean launch (the shared default deny included).
    with _launch(_quiet()):
        pass
    steps = kube_env.creates
    assert steps >= 12
    for nth in range(1, steps + 1):
        kube_env.fail_create(nth)
        failing = pytest.raises(BotBottleError, match=f"injected failure on create #{nth}")
        with failing, _launch(_quiet()):
            pytest.fail("launched despite the injected failure")
        assert bottle_objects(kube_env) == [], f"failure at create #{nth} left objects"
    kube_env.fail_create(None)


def test_an_open_fence_is_torn_down_before_the_agent_runs(
    kube_env: FakeApiServer, shell: PodShell
) -> None:
    shell.network = open_network  # a CNI that ignores NetworkPolicy
    with pytest.raises(FenceOpenError) as err, _launch(_quiet()):
        pytest.fail("launched with an open fence")
    assert "public address 1.1.1.1:443: connected" in err.value.message
    assert "cloud metadata 169.254.169.254:80" in err.value.message
    assert err.value.hint and "NetworkPolicy" in err.value.hint
    assert bottle_objects(kube_env) == []
    # Nothing but the probes ran in the agent pod: no CA copy, no agent.
    assert all(argv[:2] == ["timeout", "3"] for argv in shell.calls)


def test_the_probe_runs_against_a_cluster_ip_never_a_guess(
    kube_env: FakeApiServer, shell: PodShell
) -> None:
    with _launch(_quiet()):
        pass
    probes = [(a[-2], int(a[-1])) for a in shell.calls if a[:2] == ["timeout", "3"]]
    bundle_ip = "10.244.0.10"
    assert probes == [
        (bundle_ip, 18080),
        ("1.1.1.1", 443),
        ("10.96.0.1", 443),  # the fake's `kubernetes` service
        ("169.254.169.254", 80),
        ("172.18.0.2", 10250),  # the agent pod's hostIP
        (bundle_ip, 22),
    ]


def test_another_networkpolicy_selecting_bottle_pods_refuses_before_creating(
    kube_env: FakeApiServer, shell: PodShell
) -> None:
    kube_env.seed(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-all-egress", "namespace": NAMESPACE},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
        }
    )
    creates = kube_env.creates
    with pytest.raises(BotBottleError, match="allow-all-egress") as err, _launch(_quiet()):
        pytest.fail("launched beside a policy that opens the fence")
    assert err.value.hint and "namespace of their own" in err.value.hint
    assert kube_env.creates == creates
    assert bottle_objects(kube_env) == [("NetworkPolicy", "allow-all-egress")]


def test_a_policy_for_other_pods_is_fine(kube_env: FakeApiServer, shell: PodShell) -> None:
    kube_env.seed(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "web-only", "namespace": NAMESPACE},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Egress"],
                "egress": [{}],
            },
        }
    )
    with _launch(_quiet()):
        pass


def test_a_pod_that_fails_to_start_tears_everything_down(
    kube_env: FakeApiServer, shell: PodShell
) -> None:
    kube_env.pod_phase = "Failed"
    with pytest.raises(BotBottleError, match="ended while starting"), _launch(_quiet()):
        pass
    assert bottle_objects(kube_env) == []


def test_a_missing_namespace_says_how_to_make_it(
    kube_env: FakeApiServer, shell: PodShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOT_BOTTLE_K8S_NAMESPACE", "nowhere")
    missing = pytest.raises(BotBottleError, match="namespace nowhere does not exist")
    with missing as err, _launch(_quiet()):
        pass
    assert err.value.hint and "kubectl create namespace nowhere" in err.value.hint


def test_orphans_are_found_by_expired_lease_and_cleaned_by_labels(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    kube = kube_for(fake, tmp_path)
    objects = render_bottle(
        mini_plan(), namespace=NAMESPACE, images={"agent": "a:1", "bundle": "b:1"}
    )
    # A launcher that died after creating everything: no teardown ran.
    BottleObjects(kube, "shell-0a1b2c").create(objects)
    assert orphans(kube) == []  # the Lease is fresh
    later = (
        datetime.now(UTC) + timedelta(seconds=LEASE_SECONDS) + ORPHAN_GRACE + timedelta(seconds=5)
    )
    [item] = orphans(kube, now=later)
    assert (item.backend, item.kind, item.slug, item.name) == (
        "kubernetes",
        "bottle",
        "shell-0a1b2c",
        "bb-shell-0a1b2c",
    )
    # An object whose owner reference never got set goes too (labels alone).
    stray = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "bb-shell-0a1b2c-stray",
            "namespace": NAMESPACE,
            "labels": {
                "app.kubernetes.io/managed-by": "bot-bottle",
                "bot-bottle/slug": "shell-0a1b2c",
            },
        },
    }
    fake.seed(stray)
    assert cleanup(kube, [item]) == [item]
    assert bottle_objects(fake) == []


def test_a_renewed_lease_keeps_the_bottle_active(fake: FakeApiServer, tmp_path: Path) -> None:
    kube = kube_for(fake, tmp_path)
    objects = render_bottle(
        mini_plan(), namespace=NAMESPACE, images={"agent": "a:1", "bundle": "b:1"}
    )
    BottleObjects(kube, "shell-0a1b2c").create(objects)
    lease = fake.get("Lease", NAMESPACE, "bb-shell-0a1b2c")
    assert lease is not None
    # Age the lease as if its launcher stalled...
    stale = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lease["spec"]["renewTime"] = stale
    assert len(orphans(kube)) == 1
    # ...and renew it: a fresh renewTime, a new resourceVersion.
    before = lease["metadata"]["resourceVersion"]
    renewed = renew_lease(kube, "bb-shell-0a1b2c")
    assert renewed["metadata"]["resourceVersion"] != before
    assert orphans(kube) == []


def test_lease_renewal_retries_a_conflict(fake: FakeApiServer, tmp_path: Path) -> None:
    kube = kube_for(fake, tmp_path)
    objects = render_bottle(
        mini_plan(), namespace=NAMESPACE, images={"agent": "a:1", "bundle": "b:1"}
    )
    BottleObjects(kube, "shell-0a1b2c").create(objects)
    real_get = kube.get
    bumped = []

    def racing_get(kind: str, name: str, namespace: str | None = None) -> Any:
        got = real_get(kind, name, namespace)
        if kind == "Lease" and not bumped:
            # Someone else writes between our read and our write.
            bumped.append(True)
            stored = fake.get("Lease", NAMESPACE, name)
            assert stored is not None
            stored["metadata"]["resourceVersion"] = "999999"
        return got

    kube.get = racing_get  # type: ignore[method-assign]
    renewed = renew_lease(kube, "bb-shell-0a1b2c")
    assert bumped and renewed["spec"]["renewTime"]
    assert any(m == "PUT" for m, p, _q in fake.requests if p.endswith("/leases/bb-shell-0a1b2c"))


def test_cascade_delete_of_the_anchor_removes_every_owned_object(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    kube = kube_for(fake, tmp_path)
    objects = render_bottle(
        mini_plan(), namespace=NAMESPACE, images={"agent": "a:1", "bundle": "b:1"}
    )
    BottleObjects(kube, "shell-0a1b2c").create(objects)
    assert len(bottle_objects(fake)) == len(objects)
    assert kube.delete("ConfigMap", "bb-shell-0a1b2c", propagation="Foreground")
    assert bottle_objects(fake) == []
    assert not kube.delete("ConfigMap", "bb-shell-0a1b2c")  # gone: False, no error


def test_a_sigkilled_launcher_leaves_an_orphan_that_cleanup_removes(
    kube_env: FakeApiServer, shell: PodShell, tmp_path: Path
) -> None:
    """A real launcher process, killed with SIGKILL inside the bottle: no
    teardown ran; its Lease stops being renewed; cleanup finds and removes it."""
    ready = tmp_path / "ready"
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from k8s_cluster_kit import mini_plan
        from bot_bottle_kubernetes.backend import KubernetesBackend
        b = KubernetesBackend(progress=lambda m: None)
        with b.launch(b.prepare(mini_plan())):
            open({str(ready)!r}, "w").close()
            time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ))
    try:
        for _ in range(300):
            if ready.exists() or proc.poll() is not None:
                break
            import time

            time.sleep(0.1)
        assert ready.exists(), "the launcher never got its bottle"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(bottle_objects(kube_env)) == 11  # nothing was torn down
    backend = _quiet()
    assert [b.slug for b in backend.list_active()] == ["shell-0a1b2c"]  # lease still fresh
    lease = kube_env.get("Lease", NAMESPACE, "bb-shell-0a1b2c")
    assert lease is not None
    lease["spec"]["renewTime"] = "2026-01-01T00:00:00.000000Z"  # time passes, nobody renews
    assert backend.list_active() == []
    items = backend.find_orphans()
    assert [i.slug for i in items] == ["shell-0a1b2c"]
    assert backend.cleanup(items) == items
    assert bottle_objects(kube_env) == []


def test_the_launcher_renews_the_lease_until_teardown(fake: FakeApiServer, tmp_path: Path) -> None:
    kube = kube_for(fake, tmp_path)
    objects = render_bottle(
        mini_plan(), namespace=NAMESPACE, images={"agent": "a:1", "bundle": "b:1"}
    )
    bottle = BottleObjects(kube, "shell-0a1b2c")
    bottle.create(objects)
    bottle.start_renewing(interval=0.05)
    renewer = bottle._renewer
    assert renewer is not None
    import time

    deadline = time.monotonic() + 10
    while renewer.renewals < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert renewer.renewals >= 3 and renewer.last_error is None
    assert bottle.teardown() == []
    assert not renewer.is_alive()
    assert bottle_objects(fake) == []


def test_stop_deletes_the_agent_pod_of_an_active_bottle(
    kube_env: FakeApiServer, shell: PodShell
) -> None:
    backend = _quiet()
    assert not backend.stop("shell-0a1b2c")
    with _launch(backend):
        assert backend.stop("shell-0a1b2c")
        assert kube_env.get("Pod", NAMESPACE, "bb-shell-0a1b2c-agent") is None
        assert kube_env.get("Pod", NAMESPACE, "bb-shell-0a1b2c-sidecars") is not None
    assert bottle_objects(kube_env) == []


KEYED = """\
---
agent_provider:
  template: shell
env:
  API_KEY: ${BOTTLE_SECRET}
git_gate:
  repos:
    - name: proj
      url: ssh://git@git.example.test/me/proj.git
      host_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHM/us+yJ8sNmo4On6iamuGgHQiQ62/N1DN4AwBLqQy2
      key: {provider: static, path: KEYPATH}
---
"""


def test_a_real_plan_launches_with_its_keys_workspace_and_secret_env(
    kube_env: FakeApiServer,
    shell: PodShell,
    make_kube_plan: Any,
    bot_bottle_home: Path,
    tmp_path: Path,
) -> None:
    """A plan core made from a manifest (git-gate with a static deploy key,
    an agent variable holding a bottle secret, --cwd): the key reaches the
    bundle's Secret, the workspace is seeded, the secret variable reaches
    the agent's execs through stdin and is in no object."""
    import dataclasses
    import json

    key = tmp_path / "deploy_key"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n")
    key.chmod(0o600)
    make_kube_plan("minimal")  # writes the home's manifests
    (bot_bottle_home / "bottles/keyed.md").write_text(KEYED.replace("KEYPATH", str(key)))
    plan = make_kube_plan("keyed", cwd=True)
    assert plan.cwd is not None
    (plan.cwd / "README").write_text("the operator's project\n")
    plan = dataclasses.replace(
        plan,
        agent_image="reg.test/a@sha256:" + "a" * 64,
        bundle_image="reg.test/b@sha256:" + "b" * 64,
    )
    said: list[str] = []
    backend = KubernetesBackend(progress=said.append)
    with backend.launch(backend.prepare(plan)) as bottle:
        assert any("only the agent's commits come back" in m for m in said)
        name = f"bb-{plan.slug}"
        keys = kube_env.get("Secret", NAMESPACE, f"{name}-gate-keys")
        assert keys is not None and len(keys["data"]) == 1
        import base64

        [value] = keys["data"].values()
        assert b"not-a-real-key" in base64.b64decode(value)
        seeded = shell.root / f"{name}-agent" / "workspace" / "README"
        assert seeded.read_text() == "the operator's project\n"
        # The secret-valued agent variable is in no stored object...
        everything = json.dumps(kube_env.all(namespace=NAMESPACE))
        agent_pod = kube_env.get("Pod", NAMESPACE, f"{name}-agent")
        assert agent_pod is not None
        assert "API_KEY" in agent_pod["metadata"]["annotations"]["bot-bottle/exec-env"]
        assert "bottle-secret-value-51be02" not in json.dumps(agent_pod)
        # ...and reaches each exec through stdin.
        shell.programs["printenv"] = 0
        before = len(kube_env.exec_log)
        assert bottle.exec(["printenv"]).exit_code == 0
        session = kube_env.exec_log[before]
        assert session.argv[:2] == ["sh", "-c"]
        assert "bottle-secret-value-51be02" not in " ".join(session.argv)
        assert shell.envs[-1]["API_KEY"] == "bottle-secret-value-51be02"
        # (the bundle's env Secret holds it, base64: never in clear text)
        assert "bottle-secret-value-51be02" not in everything
    assert bottle_objects(kube_env) == []


@pytest.mark.parametrize("step", ["create Secret/", "create Pod/", "fence probe"])
def test_ctrl_c_in_any_phase_removes_what_was_created(
    kube_env: FakeApiServer, shell: PodShell, step: str
) -> None:
    def interrupt(message: str) -> None:
        if message.startswith(step):
            raise KeyboardInterrupt

    backend = KubernetesBackend(progress=interrupt)
    with pytest.raises(KeyboardInterrupt), backend.launch(backend.prepare(mini_plan())):
        pytest.fail("launched through a Ctrl-C")
    assert kube_env.creates > 1
    assert bottle_objects(kube_env) == []


def test_a_teardown_the_server_refuses_is_reported_and_cleanup_finishes_it(
    kube_env: FakeApiServer, shell: PodShell, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = _quiet()
    with _launch(backend):
        kube_env.fail_deletes = True
    err = capsys.readouterr().err
    assert "warning: teardown of shell-0a1b2c could not remove" in err
    assert "injected failure on delete" in err and "`bot-bottle cleanup` retries" in err
    assert len(bottle_objects(kube_env)) == 11
    kube_env.fail_deletes = False
    lease = kube_env.get("Lease", NAMESPACE, "bb-shell-0a1b2c")
    assert lease is not None
    lease["spec"]["renewTime"] = "2026-01-01T00:00:00.000000Z"  # nobody renews it any more
    items = backend.find_orphans()
    assert backend.cleanup(items) == items
    assert bottle_objects(kube_env) == []


def test_sidecar_logs_and_proposals_outlive_the_bottle(
    kube_env: FakeApiServer, shell: PodShell, capsys: pytest.CaptureFixture[str]
) -> None:
    """At teardown the bundle pod's daemon logs go to the bottle's history
    (`bot-bottle logs`) and its supervise queue's proposals with them."""
    from bot_bottle_sidecars.layout import LOG_DIR, QUEUE_DIR

    from bot_bottle.history import BottleHistory

    bundle = shell.root / "bb-shell-0a1b2c-sidecars"
    (bundle / LOG_DIR.lstrip("/")).mkdir(parents=True)
    (bundle / LOG_DIR.lstrip("/") / "egress.jsonl").write_text('{"event": "refused"}\n')
    (bundle / QUEUE_DIR.lstrip("/")).mkdir(parents=True)
    (bundle / QUEUE_DIR.lstrip("/") / "p1.json").write_text('{"id": "p1"}')
    with _launch(_quiet()):
        pass
    history = BottleHistory.for_slug("shell-0a1b2c")
    assert (history.logs_dir / "egress.jsonl").read_text() == '{"event": "refused"}\n'
    assert (history.proposals_dir / "p1.json").read_text() == '{"id": "p1"}'
    assert history.ended
    assert history.info()["backend"] == "kubernetes"
    assert "warning" not in capsys.readouterr().err
