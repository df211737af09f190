"""The agent's commits come back also when the launcher does not tear down
itself: ``stop`` and ``cleanup`` (after a SIGKILLed launcher) bring them back
through the same scanned path before the agent pod goes.

Kubernetes 1.33 (the fake API server's schemas), the real ``kubernetes``
client, real git on both sides (the scripted pod's workspace is a real
repository), a real launcher process killed with SIGKILL. What the state
dir keeps is checked to hold no secret value.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from bot_bottle_sidecars.layout import LOG_DIR
from k8s_cluster_kit import PodShell, bottle_objects
from test_bring_back import TOKEN, git, repo_plan_for, run_bottle

from bot_bottle.cli import main
from bot_bottle.history import BottleHistory
from bot_bottle.state import PENDING, StateDir
from bot_bottle_kubernetes.backend import KubernetesBackend
from bot_bottle_kubernetes.pending_back import RECORD, WorkspaceRecord

NAMESPACE = "bot-bottle"
LAST_LINE = json.dumps(
    {
        "event": "refused",
        "host": "late.example",
        "daemon": "egress",
        "timestamp": "2026-12-04T19:00:00Z",
    }
)


@pytest.fixture
def repo_plan(make_kube_plan: Any) -> Any:
    return repo_plan_for(make_kube_plan, "minimal")


def _work(ws: Path) -> None:
    """A clean commit on main and a branch holding a token."""
    git(ws, "checkout", "-q", "main")
    (ws / "src.txt").write_text("one\nagent\n")
    git(ws, "commit", "-q", "-am", "agent work")
    git(ws, "checkout", "-q", "-b", "leak")
    (ws / "creds.txt").write_text(f"token = {TOKEN}\n")
    git(ws, "add", "creds.txt")
    git(ws, "commit", "-q", "-m", "oops")
    git(ws, "checkout", "-q", "main")


def _refs(repo: Path) -> list[str]:
    return git(repo, "for-each-ref", "--format=%(refname)").split()


def _no_token_on_host(repo: Path) -> None:
    found = subprocess.run(
        ["grep", "-rl", TOKEN, str(repo / ".git")], capture_output=True, text=True
    )
    assert found.stdout == ""
    for line in git(repo, "cat-file", "--batch-all-objects", "--batch-check").splitlines():
        sha, kind, _size = line.split()
        if kind == "blob":
            assert TOKEN not in git(repo, "cat-file", "-p", sha)


def test_stop_brings_the_commits_back_before_it_deletes_the_agent_pod(
    kube_env: Any, shell: PodShell, repo_plan: Any
) -> None:
    stopped: list[str] = []
    pod_at_bring_back: list[bool] = []

    def agent(ws: Path) -> None:
        _work(ws)
        backend = KubernetesBackend(progress=stopped.append)
        original = shell.__call__

        def watch(session: Any) -> int:
            # The bring-back's read of the agent pod's .git (not the queue mirror's).
            if session.pod.endswith("-agent") and "tar -c" in " ".join(session.argv):
                pod = kube_env.get("Pod", NAMESPACE, f"bb-{repo_plan.slug}-agent")
                pod_at_bring_back.append(pod is not None)
            return original(session)

        kube_env.exec_handler = watch
        assert backend.stop(repo_plan.slug)
        kube_env.exec_handler = shell
        assert kube_env.get("Pod", NAMESPACE, f"bb-{repo_plan.slug}-agent") is None

    scene = run_bottle(repo_plan, shell, agent)
    assert pod_at_bring_back == [True]
    ref = f"bot-bottle/{repo_plan.slug}/main"
    assert git(repo_plan.cwd, "log", "-1", "--format=%s", ref).strip() == "agent work"
    assert any(f"refs/heads/{ref} ->" in line for line in stopped), stopped
    # The token branch was scanned and refused, and said so; none of it landed.
    refused = [line for line in stopped if "refused" in line and "leak" in line]
    assert refused and "DLP: " in refused[0], stopped
    assert f"refs/heads/bot-bottle/{repo_plan.slug}/leak" not in _refs(repo_plan.cwd)
    _no_token_on_host(repo_plan.cwd)
    # The launcher's teardown knows it was done, and leaves no state behind.
    assert any("brought back" in line and "by stop" in line for line in scene.said), scene.said
    # ...and repeats what stop said (the console's stop has no terminal).
    assert any(f"refs/heads/{ref} ->" in line for line in scene.said), scene.said
    assert any("refused" in line and "leak" in line for line in scene.said), scene.said
    assert TOKEN not in "\n".join(scene.said)
    assert not any("not brought back" in line for line in scene.said), scene.said
    state = StateDir.for_slug(repo_plan.slug).path
    assert not (state / RECORD).exists() and not (state / PENDING).exists()
    assert bottle_objects(kube_env) == []


def test_a_second_stop_racing_the_first_leaves_the_report_for_the_launcher(
    kube_env: Any, shell: PodShell, repo_plan: Any
) -> None:
    """Two stops (the console's button pressed twice): the second passed its
    unlocked check while the first was bringing back, and gets the lock once
    the first is done. It must not remove the record: the launcher's teardown
    repeats from it what came back and what was refused (the console's stop
    has no terminal), the operator's only word of a refused branch."""
    from bot_bottle_kubernetes import pending_back

    def agent(ws: Path) -> None:
        _work(ws)
        backend = KubernetesBackend(progress=lambda _m: None)
        assert backend.stop(repo_plan.slug)
        # The second stop, past before_removal's check, now under the lock.
        record = WorkspaceRecord.load(pending_back.state_path(repo_plan.slug))
        assert record is not None and record.done_by == "stop"
        assert pending_back.bring_back_once(
            repo_plan.slug,
            None,
            pending_back.installed_scanner(record),
            lambda _m: None,
            by="stop",
            pod_exists=lambda: True,
        )

    scene = run_bottle(repo_plan, shell, agent)
    assert any("brought back" in line and "by stop" in line for line in scene.said), scene.said
    assert any("refused" in line and "leak" in line for line in scene.said), scene.said
    state = StateDir.for_slug(repo_plan.slug).path
    assert not (state / RECORD).exists() and not (state / PENDING).exists()


SECRETFUL = """\
---
agent_provider:
  template: shell
env:
  API_KEY: ${BOTTLE_SECRET}
egress:
  routes:
    - host: api.example.test
      auth: {scheme: Bearer, token_ref: ROUTE_TOKEN}
---
"""


def _secretful_plan(make_kube_plan: Any, home: Path) -> Any:
    (home / "bottles").mkdir(exist_ok=True)
    (home / "bottles/secretful.md").write_text(SECRETFUL)
    return repo_plan_for(make_kube_plan, "secretful")


def test_the_record_in_the_state_dir_holds_no_secret(
    kube_env: Any, shell: PodShell, make_kube_plan: Any, bot_bottle_home: Path
) -> None:
    from conftest import BOTTLE_SECRET, ROUTE_TOKEN

    plan = _secretful_plan(make_kube_plan, bot_bottle_home)
    # The plan does carry both values (so the check below can fail).
    assert BOTTLE_SECRET in repr([v.reveal() for v in plan.gitgate_secrets.values()]) or any(
        v.reveal() == BOTTLE_SECRET for v in plan.agent_env.values()
    )
    seen: list[str] = []

    def agent(_ws: Path) -> None:
        state = StateDir.for_slug(plan.slug).path
        seen.append("".join(p.read_text() for p in sorted(state.iterdir()) if p.is_file()))
        assert "not yet brought back" in (state / PENDING).read_text()

    run_bottle(plan, shell, agent)
    (text,) = seen
    assert BOTTLE_SECRET not in text and ROUTE_TOKEN not in text
    assert str(plan.cwd) in text


def _killed_launcher(repo_plan: Any, shell: PodShell, tmp_path: Path) -> None:
    """A real launcher process, SIGKILLed while the agent worked (:func:`_work`)."""
    ready = tmp_path / "ready"
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from k8s_cluster_kit import mini_plan
        from bot_bottle.state import StateDir
        from bot_bottle_kubernetes.backend import KubernetesBackend
        slug = {repo_plan.slug!r}
        # As core's launcher does: the state dir names its live process.
        StateDir.for_slug(slug).create({{"slug": slug, "backend": "kubernetes",
                                         "pid": os.getpid()}})
        b = KubernetesBackend(progress=lambda m: None)
        plan = mini_plan(slug=slug, cwd=Path({str(repo_plan.cwd)!r}))
        with b.launch(b.prepare(plan)):
            open({str(ready)!r}, "w").close()
            time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ))
    try:
        for _ in range(300):
            if ready.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert ready.exists(), "the launcher never got its bottle"
        _work(shell.root / f"bb-{repo_plan.slug}-agent" / "workspace")
        os.kill(proc.pid, signal.SIGKILL)
        # The bundle logged after the launcher's mirror last ran.
        logs = shell.root / f"bb-{repo_plan.slug}-sidecars" / LOG_DIR.lstrip("/")
        logs.mkdir(parents=True, exist_ok=True)
        (logs / "egress.jsonl").write_text(LAST_LINE + "\n")
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cleanup_after_a_sigkilled_launcher_brings_the_commits_back_then_removes(
    kube_env: Any,
    shell: PodShell,
    repo_plan: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A real launcher process, killed with SIGKILL while the agent worked:
    no teardown ran. ``cleanup`` (expired Lease) reads the commits out of
    the still-running agent pod, scans them with the installed detectors,
    lands the clean branch, refuses the token, keeps the bundle's last
    logs, then removes the bottle and the record."""
    _killed_launcher(repo_plan, shell, tmp_path)
    said: list[str] = []
    backend = KubernetesBackend(progress=said.append)
    lease = kube_env.get("Lease", NAMESPACE, f"bb-{repo_plan.slug}")
    assert lease is not None
    lease["spec"]["renewTime"] = "2026-01-01T00:00:00.000000Z"  # nobody renews it
    items = backend.find_orphans()
    assert sorted(i.kind for i in items) == ["bottle", "workspace"]
    (ws_item,) = [i for i in items if i.kind == "workspace"]
    assert "not yet brought back" in ws_item.name
    assert backend.cleanup(items) == items
    ref = f"bot-bottle/{repo_plan.slug}/main"
    assert git(repo_plan.cwd, "log", "-1", "--format=%s", ref).strip() == "agent work"
    assert f"refs/heads/bot-bottle/{repo_plan.slug}/leak" not in _refs(repo_plan.cwd)
    assert any("refused" in line and "leak" in line for line in said), said
    _no_token_on_host(repo_plan.cwd)
    assert bottle_objects(kube_env) == []
    state = StateDir.for_slug(repo_plan.slug).path
    assert not (state / RECORD).exists() and not (state / PENDING).exists()
    assert backend.find_orphans() == []
    # Its last logs were kept from the bundle pod before it went, and the
    # history says the bottle ended: `bot-bottle logs` shows them.
    history = BottleHistory.for_slug(repo_plan.slug)
    assert history.ended
    capsys.readouterr()
    assert main(["logs", repo_plan.slug, "--json"]) == 0
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert any(r.get("event") == "refused" and r.get("host") == "late.example" for r in shown)


def test_a_failed_bring_back_is_listed_by_cleanup_and_settled_once_confirmed(
    kube_env: Any, shell: PodShell, repo_plan: Any
) -> None:
    """The pod was gone before the commits were read (deleted by hand): the
    launch warned; ``cleanup`` lists the ``--cwd`` with the reason and, once
    confirmed, removes the record (there is nothing left to retry)."""
    from bot_bottle_kubernetes.cluster import KubeTarget, connect

    def agent(ws: Path) -> None:
        _work(ws)
        kube = connect(KubeTarget.from_env(NAMESPACE))
        kube.delete("Pod", f"bb-{repo_plan.slug}-agent", propagation="Background")

    run_bottle(repo_plan, shell, agent)
    said: list[str] = []
    backend = KubernetesBackend(progress=said.append)
    (item,) = backend.find_orphans()
    assert item.kind == "workspace" and "pod was gone" in item.name
    assert backend.cleanup([item]) == [item]
    assert any("not brought back" in line for line in said), said
    state = StateDir.for_slug(repo_plan.slug).path
    assert WorkspaceRecord.load(state) is None and not (state / PENDING).exists()
    assert "bot-bottle/" not in " ".join(_refs(repo_plan.cwd))


def test_cleanup_brings_back_from_a_dead_launchers_pod_before_its_lease_expires(
    kube_env: Any, shell: PodShell, repo_plan: Any, tmp_path: Path
) -> None:
    """Right after the SIGKILL the Lease is still fresh, so the bottle is no
    orphan yet; ``cleanup`` already lists its ``--cwd`` and brings the
    commits back from the pod that still runs (the bottle itself goes once
    its Lease expired)."""
    _killed_launcher(repo_plan, shell, tmp_path)
    said: list[str] = []
    backend = KubernetesBackend(progress=said.append)
    (item,) = backend.find_orphans()
    assert item.kind == "workspace" and "not yet brought back" in item.name
    assert backend.cleanup([item]) == [item]
    ref = f"bot-bottle/{repo_plan.slug}/main"
    assert git(repo_plan.cwd, "log", "-1", "--format=%s", ref).strip() == "agent work"
    assert f"refs/heads/bot-bottle/{repo_plan.slug}/leak" not in _refs(repo_plan.cwd)
    _no_token_on_host(repo_plan.cwd)
    state = StateDir.for_slug(repo_plan.slug).path
    assert WorkspaceRecord.load(state) is None and not (state / PENDING).exists()
    assert kube_env.get("Pod", NAMESPACE, f"bb-{repo_plan.slug}-agent") is not None
    lease = kube_env.get("Lease", NAMESPACE, f"bb-{repo_plan.slug}")
    assert lease is not None
    lease["spec"]["renewTime"] = "2026-01-01T00:00:00.000000Z"
    items = backend.find_orphans()
    assert [i.kind for i in items] == ["bottle"]
    assert backend.cleanup(items) == items
    assert bottle_objects(kube_env) == []


def test_stop_scans_with_the_bottles_own_secret_values_read_from_the_cluster(
    kube_env: Any, shell: PodShell, make_kube_plan: Any, bot_bottle_home: Path
) -> None:
    """The launcher is not the one bringing back, so the values come from the
    bundle's Secret: a branch holding the bottle's secret value (no token
    format any detector knows) is refused at ``stop``, a clean one lands."""
    from conftest import BOTTLE_SECRET

    plan = _secretful_plan(make_kube_plan, bot_bottle_home)
    stopped: list[str] = []

    def agent(ws: Path) -> None:
        git(ws, "checkout", "-q", "main")
        (ws / "src.txt").write_text("one\nagent\n")
        git(ws, "commit", "-q", "-am", "agent work")
        git(ws, "checkout", "-q", "-b", "own-secret")
        (ws / "notes.txt").write_text(f"remember {BOTTLE_SECRET} for later\n")
        git(ws, "add", "notes.txt")
        git(ws, "commit", "-q", "-m", "notes")
        git(ws, "checkout", "-q", "main")
        assert KubernetesBackend(progress=stopped.append).stop(plan.slug)

    run_bottle(plan, shell, agent)
    assert git(plan.cwd, "log", "-1", "--format=%s", f"bot-bottle/{plan.slug}/main").strip() == (
        "agent work"
    )
    refused = [line for line in stopped if "refused" in line and "own-secret" in line]
    assert refused, stopped
    assert f"refs/heads/bot-bottle/{plan.slug}/own-secret" not in _refs(plan.cwd)
    assert not any("installed detectors only" in line for line in stopped), stopped
    assert BOTTLE_SECRET not in "\n".join(stopped)
    for line in git(plan.cwd, "cat-file", "--batch-all-objects", "--batch-check").splitlines():
        sha, kind, _size = line.split()
        if kind == "blob":
            assert BOTTLE_SECRET not in git(plan.cwd, "cat-file", "-p", sha)
