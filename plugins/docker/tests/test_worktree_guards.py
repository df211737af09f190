"""worktree_guards on real repositories: which working-tree paths the host's
git config makes git read or run, and the launches it must refuse."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from bot_bottle_sidecars.launch.bring_back import Owner

from bot_bottle.errors import BotBottleError
from bot_bottle_docker.worktree_guards import guards


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    return repo


def _git(repo: Path, *args: str) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def _no_system_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine's /etc/gitconfig (a CI image's ``safe.directory = *``)
    stays out of the owner's config these tests write."""
    import bot_bottle_docker.worktree_guards as wg

    real = wg._owner_env
    monkeypatch.setattr(
        wg, "_owner_env", lambda cwd, owner: {**real(cwd, owner), "GIT_CONFIG_SYSTEM": "/dev/null"}
    )


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
    # husky 9: the wrappers in .husky/_ run the scripts in .husky.
    (repo / ".husky" / "_").mkdir()
    _git(repo, "config", "core.hooksPath", ".husky/_")
    husky = [g for g in _guards(repo) if g[0].startswith("/workspace/.husky")]
    assert husky == [("/workspace/.husky", "ro"), ("/workspace/.husky/_", "ro")]


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


def _commit_tree(repo: Path, files: dict[str, str], parent: str) -> str:
    """A commit with ``files`` on top of ``parent``, reachable from no ref."""
    env = {"PATH": os.environ["PATH"], "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_INDEX_FILE": str(repo / ".git" / "tmp-index"), "GIT_AUTHOR_NAME": "a",
           "GIT_AUTHOR_EMAIL": "a@x", "GIT_COMMITTER_NAME": "a",
           "GIT_COMMITTER_EMAIL": "a@x"}  # fmt: skip

    def git(*args: str, stdin: str | None = None) -> str:
        return subprocess.run(["git", *args], cwd=repo, env=env, input=stdin, text=True,
                              check=True, capture_output=True).stdout.strip()  # fmt: skip

    git("read-tree", parent)
    for path, content in files.items():
        blob = git("hash-object", "-w", "--stdin", stdin=content)
        git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}")
    tree = git("write-tree")
    return git("commit-tree", tree, "-p", parent, "-m", "agent", stdin="")


def test_branch_problems_name_guarded_paths_and_new_git_dir_layouts(tmp_path: Path) -> None:
    from bot_bottle_docker.worktree_guards import branch_problems

    repo = _repo(tmp_path)
    (repo / "fixtures" / "repo" / "refs").mkdir(parents=True)
    (repo / "fixtures" / "repo" / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / "fixtures" / "repo" / "refs" / "x").write_text("")
    (repo / "a.txt").write_text("a\n")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=o", "-c", "user.email=o@x", "commit", "-qm", "base")
    git_dir = repo / ".git"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    clean = _commit_tree(repo, {"a.txt": "b\n", "fixtures/repo/README": ""}, head)
    assert branch_problems(git_dir, clean, [".husky"]) == []
    hook = _commit_tree(repo, {".husky/post-checkout": "#!/bin/sh\n"}, head)
    assert branch_problems(git_dir, hook, [".husky"]) == [
        "it changes .husky/post-checkout, which the repository's git config runs or reads"
    ]
    layout = _commit_tree(repo, {"d/HEAD": "ref: refs/heads/x\n", "d/objects/k": ""}, head)
    assert branch_problems(git_dir, layout, []) == ["d is laid out as a git directory"]


def test_a_script_in_the_tree_named_by_a_config_command_is_read_only(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "tools").mkdir()
    (repo / "tools" / "clean.sh").write_text("#!/bin/sh\ncat\n")
    (repo / "scripts").mkdir()
    (repo / "scripts" / "st").write_text("#!/bin/sh\n")
    _git(repo, "config", "filter.x.clean", "sh ./tools/clean.sh --strip")
    _git(repo, "config", "alias.x", "!scripts/st")
    _git(repo, "config", "user.name", "tools")  # a directory, not a file: nothing
    assert _guards(repo) == [
        ("/workspace/scripts", "rw"),
        ("/workspace/scripts/st", "ro"),
        ("/workspace/tools", "rw"),
        ("/workspace/tools/clean.sh", "ro"),
    ]


def test_active_hooks_are_the_executable_non_samples(tmp_path: Path) -> None:
    from bot_bottle_docker.worktree_guards import active_hooks

    repo = _repo(tmp_path)
    owner = Owner.of(repo / ".git")
    assert active_hooks(repo, repo / ".git", owner) == []  # only samples
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\npre-commit run\n")
    assert active_hooks(repo, repo / ".git", owner) == []  # not executable
    hook.chmod(0o755)
    assert active_hooks(repo, repo / ".git", owner) == ["pre-commit"]


def test_the_owners_global_config_naming_tree_files_guards_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner's ``~/.gitconfig`` (and what it includes) reads and runs
    tree files too: an include relative to the global file, an alias script
    and a ``core.hooksPath`` inside the tree are read-only like the local
    config's; a missing include there is refused; values of other keys are
    not paths."""
    import bot_bottle_docker.worktree_guards as wg

    repo = _repo(tmp_path)
    home = tmp_path / "owner-home"
    home.mkdir()
    monkeypatch.setattr(wg, "_owner_home", lambda owner: str(home))
    _no_system_config(monkeypatch)
    (repo / "tools").mkdir()
    (repo / "tools" / "x.sh").write_text("#!/bin/sh\n")
    (repo / "shared.cfg").write_text("[alias]\n\ty = !./tools/x.sh\n")
    (repo / "main").mkdir()  # init.defaultBranch = main names no file
    (repo / ".hooks").mkdir()
    (home / ".gitconfig").write_text(
        f"[include]\n\tpath = {os.path.relpath(repo / 'shared.cfg', home)}\n"
        "[init]\n\tdefaultBranch = main\n"
        "[core]\n\thooksPath = .hooks\n"
    )
    got = _guards(repo)
    assert ("/workspace/shared.cfg", "ro") in got
    assert ("/workspace/tools/x.sh", "ro") in got
    assert ("/workspace/.hooks", "ro") in got
    assert not [d for d, _m in got if d.startswith("/workspace/main")]
    with (home / ".gitconfig").open("a") as fh:
        fh.write(f'[includeIf "gitdir:/nowhere/"]\n\tpath = {repo}/missing.cfg\n')
    with pytest.raises(BotBottleError, match=r"missing\.cfg"):
        _guards(repo)


def test_safe_directory_values_that_turn_the_ownership_check_off_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot_bottle_docker.worktree_guards as wg
    from bot_bottle_docker.worktree_guards import trusted_everywhere

    repo = _repo(tmp_path)
    home = tmp_path / "owner-home"
    home.mkdir()
    monkeypatch.setattr(wg, "_owner_home", lambda owner: str(home))
    _no_system_config(monkeypatch)
    owner = Owner.of(repo / ".git")
    assert trusted_everywhere(repo, repo / ".git", owner) == []
    (home / ".gitconfig").write_text(
        f"[safe]\n\tdirectory = /elsewhere\n\tdirectory = {repo}/src\n"
        f"\tdirectory = {tmp_path}/*\n\tdirectory = *\n"
    )
    assert trusted_everywhere(repo, repo / ".git", owner) == [
        f"{repo}/src", f"{tmp_path}/*", "*",
    ]  # fmt: skip
    assert trusted_everywhere(repo, None, owner) == [f"{repo}/src", f"{tmp_path}/*", "*"]
