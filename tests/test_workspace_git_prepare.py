"""The bottle's own git dir, as prepared on the host before any container
(plugins/docker/README.md, "The workspace's git"). Real git, real files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bot_bottle.errors import BotBottleError
from bot_bottle_docker import workspace_git as wg

ENV = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    git("init", "-q", "-b", "main", cwd=r)
    git("config", "user.name", "Op", cwd=r)
    git("config", "user.email", "op@host.test", cwd=r)
    git("config", "core.fsmonitor", "echo never-copied", cwd=r)
    git("config", "alias.st", "!echo never-copied", cwd=r)
    (r / "a.txt").write_text("a\n")
    git("add", "a.txt", cwd=r)
    git("-c", "core.fsmonitor=false", "commit", "-qm", "one", cwd=r)
    git("branch", "feature", cwd=r)
    return r


def test_the_bottle_git_dir_starts_from_the_hosts_refs_head_and_index(
    repo: Path, tmp_path: Path
) -> None:
    ws = wg.prepare(repo, tmp_path / "state", "s-1")
    d = ws.git_dir
    assert ws.host_git == repo / ".git"
    assert (d / "objects" / "info" / "alternates").read_text() == f"{wg.HOST_OBJECTS}\n"
    assert (d / "index").read_bytes() == (repo / ".git" / "index").read_bytes()
    assert (d / "HEAD").read_text() == "ref: refs/heads/main\n"
    head = git("rev-parse", "main", cwd=repo).strip()
    assert ws.launch_tips == {"refs/heads/main": head, "refs/heads/feature": head}
    # Only identity and working-tree keys: nothing that names a program.
    config = (d / "config").read_text()
    assert "never-copied" not in config and "fsmonitor" not in config
    assert "name = Op" in config and "bare = false" in config
    assert ws.volumes()[str(repo / ".git" / "objects")] == {"bind": wg.HOST_OBJECTS, "mode": "ro"}
    assert ws.volumes()[str(d)] == {"bind": "/workspace/.git", "mode": "rw"}


def test_a_gitfile_or_linked_git_dir_is_refused(repo: Path, tmp_path: Path) -> None:
    wt = tmp_path / "wt"
    git("worktree", "add", "-q", str(wt), "feature", cwd=repo)
    with pytest.raises(BotBottleError, match="file or a link"):
        wg.prepare(wt, tmp_path / "state", "s-2")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / ".git").symlink_to(repo / ".git")
    with pytest.raises(BotBottleError, match="file or a link"):
        wg.prepare(linked, tmp_path / "state", "s-3")


def test_submodule_paths_are_guarded_and_links_out_refused(repo: Path, tmp_path: Path) -> None:
    head = git("rev-parse", "HEAD", cwd=repo).strip()
    for path in ("empty", "full"):
        git("update-index", "--add", "--cacheinfo", f"160000,{head},{path}", cwd=repo)
    (repo / "deep" / "er").mkdir(parents=True)
    git("update-index", "--add", "--cacheinfo", f"160000,{head},deep/er/sub", cwd=repo)
    (repo / "deep" / "er" / "sub").mkdir()
    (repo / "empty").mkdir()
    (repo / "full").mkdir()
    (repo / "full" / ".git").write_text("gitdir: ../.git/modules/full\n")
    ws = wg.prepare(repo, tmp_path / "state", "s-4")
    # Guards read-only; every directory above one (and a populated
    # submodule's own) pinned as a mountpoint so it cannot be moved aside.
    assert sorted(ws.mounts) == sorted([
        (repo / "empty", "/workspace/empty", "ro"),
        (repo / "full" / ".git", "/workspace/full/.git", "ro"),
        (repo / "full", "/workspace/full", "rw"),
        (repo / "deep", "/workspace/deep", "rw"),
        (repo / "deep" / "er", "/workspace/deep/er", "rw"),
        (repo / "deep" / "er" / "sub", "/workspace/deep/er/sub", "ro"),
    ])  # fmt: skip
    git("update-index", "--add", "--cacheinfo", f"160000,{head},out", cwd=repo)
    (repo / "out").symlink_to(tmp_path)
    with pytest.raises(BotBottleError, match="link out of the workspace"):
        wg.prepare(repo, tmp_path / "state", "s-5")


def test_no_repository_gets_a_fresh_git_dir_and_its_mountpoint_goes_again(
    tmp_path: Path,
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    ws = wg.prepare(plain, tmp_path / "state", "s-6")
    assert ws.host_git is None and ws.created_mountpoint
    (plain / ".git").mkdir()  # what the engine creates for the mount
    ws.remove_mountpoint()
    assert not (plain / ".git").exists()


def test_working_tree_paths_the_operators_config_runs_are_guarded(
    repo: Path, tmp_path: Path
) -> None:
    """husky's hooksPath, an include of a tracked .gitconfig, shell aliases
    and drivers that are scripts of the repository: read-only in the bottle
    (with the directories above them pinned); a path that is only an
    argument of a git alias is not."""
    (repo / "scripts").mkdir()
    (repo / "scripts" / "lint.sh").write_text("echo lint\n")
    (repo / "tools").mkdir()
    (repo / "tools" / "clean.sh").write_text("cat\n")
    (repo / ".gitconfig").write_text("[core]\n\tautocrlf = false\n")
    (repo / "src").mkdir()
    for key, value in (
        ("core.hooksPath", ".githooks"),
        ("include.path", "../.gitconfig"),
        ("alias.lint", "!./scripts/lint.sh --fix"),
        ("alias.lg", "log -- src/"),
        ("filter.x.clean", "tools/clean.sh %f"),
        ("diff.y.textconv", "cat"),
    ):
        git("config", key, value, cwd=repo)
    ws = wg.prepare(repo, tmp_path / "state", "s-7")
    assert sorted(ws.config_guarded) == [".gitconfig", ".githooks", "scripts/lint.sh",
                                         "tools/clean.sh"]  # fmt: skip
    assert (repo / ".githooks").is_dir()  # created, so the agent cannot create it
    assert sorted(ws.mounts) == sorted([
        (repo / ".gitconfig", "/workspace/.gitconfig", "ro"),
        (repo / ".githooks", "/workspace/.githooks", "ro"),
        (repo / "scripts", "/workspace/scripts", "rw"),
        (repo / "scripts" / "lint.sh", "/workspace/scripts/lint.sh", "ro"),
        (repo / "tools", "/workspace/tools", "rw"),
        (repo / "tools" / "clean.sh", "/workspace/tools/clean.sh", "ro"),
    ])  # fmt: skip


def test_a_repository_without_commits(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    git("init", "-q", "-b", "trunk", cwd=fresh)
    ws = wg.prepare(fresh, tmp_path / "state", "s-8")
    assert ws.launch_tips == {}
    assert (ws.git_dir / "HEAD").read_text() == "ref: refs/heads/trunk\n"
