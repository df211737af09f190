"""worktree_guards on real repositories: which working-tree paths the host's
git config makes git read or run, and the launches it must refuse."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bot_bottle.errors import BotBottleError
from bot_bottle_docker.workspace_git import Owner
from bot_bottle_docker.worktree_guards import guards


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    return repo


def _git(repo: Path, *args: str) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def _guards(repo: Path) -> list[tuple[str, str]]:
    out = guards(repo, repo / ".git", Owner.of(repo / ".git"))
    return [(dest, mode) for _src, dest, mode in out]


def test_a_plain_repository_needs_no_guard(tmp_path: Path) -> None:
    assert _guards(_repo(tmp_path)) == []


def test_hooks_path_include_and_linked_hooks_are_read_only_parents_pinned(
    tmp_path: Path,
) -> None:
    repo = _repo(tmp_path)
    (repo / "ci" / "git").mkdir(parents=True)
    (repo / "ci" / "git" / "shared.cfg").write_text("[alias]\n\tx = status\n")
    (repo / "githooks").mkdir()
    (repo / "githooks" / "pre-push").write_text("#!/bin/sh\n")
    (repo / ".git" / "hooks" / "pre-push").symlink_to("../../githooks/pre-push")
    _git(repo, "config", "include.path", "../ci/git/shared.cfg")
    assert _guards(repo) == [
        ("/workspace/ci", "rw"),
        ("/workspace/ci/git", "rw"),
        ("/workspace/ci/git/shared.cfg", "ro"),
        ("/workspace/githooks", "rw"),
        ("/workspace/githooks/pre-push", "ro"),
    ]
    (repo / ".husky").mkdir()
    _git(repo, "config", "core.hooksPath", ".husky")
    assert ("/workspace/.husky", "ro") in _guards(repo)


def test_a_link_in_the_working_tree_on_the_way_is_refused(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "real-hooks").mkdir()
    (repo / ".husky").symlink_to("real-hooks")
    _git(repo, "config", "core.hooksPath", ".husky")
    with pytest.raises(BotBottleError, match="re-point"):
        guards(repo, repo / ".git", Owner.of(repo / ".git"))


def test_a_missing_file_the_config_names_is_refused(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    _git(repo, "config", "include.path", "../shared.cfg")
    with pytest.raises(BotBottleError, match="does not exist"):
        guards(repo, repo / ".git", Owner.of(repo / ".git"))
