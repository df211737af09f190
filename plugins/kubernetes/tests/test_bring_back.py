"""The agent's commits come back from the pod as git objects, scanned; never as files.

Driven through ``KubernetesBackend.launch`` with the real ``kubernetes``
client against the fake API server (Kubernetes 1.33 schemas), real git on
both sides: the operator's ``--cwd`` is a real repository, seeded into the
scripted pod's directory by tar over exec; the "agent" commits there with
real git; at teardown the pod's ``.git`` comes out as a tar over exec and
the engine-neutral bring-back (the one the Docker backend runs) lands what
git-gate's scan passes.
"""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from k8s_cluster_kit import PodShell, bottle_objects

from bot_bottle_kubernetes.backend import KubernetesBackend

#: A GitHub-format token (not a live one), as the Docker escape test uses.
TOKEN = "ghp_" + "cLq0tI1jkszp88r7fYkDc96kVncLVP41QdEW"


def git(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.invalid",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.invalid",
    )
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout


@dataclasses.dataclass
class Scene:
    repo: Path
    slug: str
    said: list[str]
    pod_ws: Path


def repo_plan_for(make_kube_plan: Any, bottle: str) -> Any:
    """``bottle``'s plan with a ``--cwd`` repository holding one operator
    commit, and registry-pinned images (no push needed)."""
    plan = make_kube_plan(bottle, cwd=True)
    assert plan.cwd is not None
    git(plan.cwd, "init", "-q", "-b", "main")
    (plan.cwd / "src.txt").write_text("one\n")
    git(plan.cwd, "add", "src.txt")
    git(plan.cwd, "commit", "-q", "-m", "operator start")
    return dataclasses.replace(
        plan,
        agent_image="reg.test/a@sha256:" + "a" * 64,
        bundle_image="reg.test/b@sha256:" + "b" * 64,
    )


@pytest.fixture
def repo_plan(make_kube_plan: Any) -> Any:
    return repo_plan_for(make_kube_plan, "minimal")


def run_bottle(plan: Any, shell: PodShell, agent: Any) -> Scene:
    said: list[str] = []
    backend = KubernetesBackend(progress=said.append)
    pod_ws = shell.root / f"bb-{plan.slug}-agent" / "workspace"
    with backend.launch(backend.prepare(plan)):
        agent(pod_ws)
    return Scene(repo=plan.cwd, slug=plan.slug, said=said, pod_ws=pod_ws)


@pytest.fixture
def scene(kube_env: Any, shell: PodShell, repo_plan: Any, tmp_path: Path) -> Iterator[Scene]:
    sentinel = tmp_path / "hostile-ran"

    def agent(ws: Path) -> None:
        git(ws, "checkout", "-q", "main")
        (ws / "src.txt").write_text("one\nagent\n")
        git(ws, "commit", "-q", "-am", "agent work")
        git(ws, "checkout", "-q", "-b", "leak")
        (ws / "creds.txt").write_text(f"token = {TOKEN}\n")
        git(ws, "add", "creds.txt")
        git(ws, "commit", "-q", "-m", "oops")
        git(ws, "checkout", "-q", "main")
        # Uncommitted work and a hostile git dir: none of it may reach or run on the host.
        (ws / "src.txt").write_text("uncommitted\n")
        (ws / "new-file.txt").write_text("never on the host\n")
        git(ws, "config", "core.fsmonitor", f"touch {sentinel}")
        git(ws, "config", "uploadpack.packObjectsHook", f"touch {sentinel}")
        hook = ws / ".git" / "hooks" / "post-checkout"
        hook.write_text(f"#!/bin/sh\ntouch {sentinel}\n")
        hook.chmod(0o755)
        (ws / ".git" / "objects" / "info" / "alternates").write_text("/etc\n")

    result = run_bottle(repo_plan, shell, agent)
    assert not sentinel.exists()
    assert bottle_objects(kube_env) == []
    yield result


def test_a_clean_commit_comes_back_as_a_namespaced_branch(scene: Scene) -> None:
    ref = f"bot-bottle/{scene.slug}/main"
    assert git(scene.repo, "log", "-1", "--format=%s", ref).strip() == "agent work"
    assert git(scene.repo, "show", f"{ref}:src.txt") == "one\nagent\n"
    assert any(f"refs/heads/{ref} ->" in line for line in scene.said), scene.said
    # The operator's branch and working tree are as they were: no file came back.
    assert git(scene.repo, "log", "-1", "--format=%s", "main").strip() == "operator start"
    assert (scene.repo / "src.txt").read_text() == "one\n"
    assert not (scene.repo / "new-file.txt").exists()
    assert not (scene.repo / "creds.txt").exists()


def test_a_commit_holding_a_token_is_refused_and_no_object_of_it_lands(scene: Scene) -> None:
    refs = git(scene.repo, "for-each-ref", "--format=%(refname)")
    assert f"bot-bottle/{scene.slug}/leak" not in refs
    refused = [line for line in scene.said if "refused" in line and "leak" in line]
    assert refused and "DLP: " in refused[0], scene.said
    assert TOKEN not in "\n".join(scene.said)
    found = subprocess.run(
        ["grep", "-rl", TOKEN, str(scene.repo / ".git")], capture_output=True, text=True
    )
    assert found.stdout == ""
    objects = git(scene.repo, "cat-file", "--batch-all-objects", "--batch-check")
    for line in objects.splitlines():
        sha, kind, _size = line.split()
        if kind == "blob":
            assert TOKEN not in git(scene.repo, "cat-file", "-p", sha)
    # The agent's own config did not stop its clean branch, nor was it read.
    assert f"bot-bottle/{scene.slug}/main" in refs


def _tar(*members: tuple[str, str, str]) -> bytes:
    """(name, kind, link target) members; kind is "file", "dir" or "sym"."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, target in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
            else:
                data = b"planted\n"
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


HOSTILE = {
    "dotdot": _tar((".git", "dir", ""), (".git/../../escaped", "file", "")),
    "absolute": _tar((".git", "dir", ""), ("/tmp/bb-k8s-absolute-escaped", "file", "")),
    "symlink-out": _tar((".git", "dir", ""), (".git/refs", "sym", "/etc")),
    "symlink-up": _tar((".git", "dir", ""), (".git/objects", "sym", "../../../..")),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_archive_from_the_pod_is_refused(
    kind: str, kube_env: Any, shell: PodShell, repo_plan: Any, tmp_path: Path
) -> None:
    shell.archives["/workspace/.git"] = HOSTILE[kind]
    before = git(repo_plan.cwd, "for-each-ref")
    scene = run_bottle(repo_plan, shell, lambda _ws: None)
    warned = [line for line in scene.said if "not brought back" in line]
    assert warned and "refusing the archive from the pod" in warned[0], scene.said
    assert git(repo_plan.cwd, "for-each-ref") == before
    assert not Path("/tmp/bb-k8s-absolute-escaped").exists()
    assert not list(tmp_path.rglob("escaped"))
    assert bottle_objects(kube_env) == []


def test_an_archive_over_the_cap_is_refused_whole(
    kube_env: Any,
    shell: PodShell,
    repo_plan: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BOT_BOTTLE_BRING_BACK_MAX_MB", "1")

    def agent(ws: Path) -> None:
        (ws / "big.bin").write_bytes(os.urandom(3 * 2**20))
        git(ws, "add", "big.bin")
        git(ws, "commit", "-q", "-m", "big")

    scene = run_bottle(repo_plan, shell, agent)
    warned = [line for line in scene.said if "not brought back" in line]
    assert warned and "larger than" in warned[0], scene.said
    refs = git(repo_plan.cwd, "for-each-ref", "--format=%(refname)")
    assert "bot-bottle/" not in refs
    # The bound is applied in the pod: the exec was asked for at most this much.
    [call] = [c for c in shell.calls if c[:2] == ["sh", "-c"] and "tar -c" in c[2]]
    assert int(call[3]) <= 2 * 2**20 + 1 + sum(
        p.stat().st_size for p in (repo_plan.cwd / ".git").rglob("*") if p.is_file()
    )


def test_a_bottle_without_a_repository_brings_nothing_back(
    kube_env: Any, shell: PodShell, make_kube_plan: Any
) -> None:
    plan = dataclasses.replace(
        make_kube_plan("minimal", cwd=True),
        agent_image="reg.test/a@sha256:" + "a" * 64,
        bundle_image="reg.test/b@sha256:" + "b" * 64,
    )
    scene = run_bottle(plan, shell, lambda ws: (ws / "x").write_text("x"))
    assert not any("brought" in line for line in scene.said), scene.said
    assert not (plan.cwd / "x").exists()
    assert not any(c[:2] == ["sh", "-c"] and "tar -c" in c[2] for c in shell.calls)


def test_a_bottle_whose_agent_pod_is_gone_says_its_commits_were_not_brought_back(
    kube_env: Any, shell: PodShell, repo_plan: Any
) -> None:
    """The agent pod deleted behind bot-bottle's back (not by ``stop``):
    nothing is left to fetch from, and the launch says so instead of
    claiming nothing was done; the state keeps the reason for ``cleanup``."""
    from bot_bottle.state import PENDING, StateDir
    from bot_bottle_kubernetes.cluster import KubeTarget, connect
    from bot_bottle_kubernetes.pending_back import WorkspaceRecord

    def agent(ws: Path) -> None:
        (ws / "src.txt").write_text("lost\n")
        git(ws, "commit", "-q", "-am", "work")
        kube = connect(KubeTarget.from_env("bot-bottle"))
        assert kube.delete("Pod", f"bb-{repo_plan.slug}-agent", propagation="Background")

    scene = run_bottle(repo_plan, shell, agent)
    warned = [line for line in scene.said if "not brought back" in line]
    assert warned and "pod was gone" in warned[0], scene.said
    assert "bot-bottle/" not in git(repo_plan.cwd, "for-each-ref", "--format=%(refname)")
    assert bottle_objects(kube_env) == []
    state = StateDir.for_slug(repo_plan.slug).path
    record = WorkspaceRecord.load(state)
    assert record is not None and "pod was gone" in record.failed
    assert "not brought back" in (state / PENDING).read_text()
